"""Chat incoming webhooks: Slack, Microsoft Teams and Discord.

The delivery's address (`to`) is the recipient's webhook URL, and that URL is the only
credential: it is never logged or written into an error whole, only its host. Each URL
passes the outbound URL guard before every send, and the kept-open session refuses a
connection that reaches a non-public address (providers.urlguard).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from .base import (
    OutboundMessage,
    Provider,
    ProviderError,
    ProviderUnavailable,
    RecipientRejected,
    SendResult,
    parse_retry_after,
)
from .urlguard import UnsafeTarget, check_url, guarded_session

logger = logging.getLogger("beacon.chat")

# Slack's plain-text header block holds at most 150 characters; Discord's embed title 256.
SLACK_HEADER_MAX = 150
DISCORD_TITLE_MAX = 256


def host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ChatWebhookProvider(Provider):
    """The flow every chat webhook shares: guard the URL, POST JSON over one kept-open
    guarded session (no redirects followed), turn the answer into a result or a
    classified error. A concrete adapter gives the payload and reads the answer."""

    recipient_endpoints = True
    label = ""

    def __init__(self, *, timeout: float, config: Mapping | None = None):
        super().__init__(timeout=timeout, config=config)
        self._session = guarded_session()

    def check_configuration(self) -> list[str]:
        return []  # the recipient's URL is the whole configuration

    def build_request(self, message: OutboundMessage) -> dict:
        check_url(message.to)
        return {"url": self.url_for(message.to), "json": self.payload(message)}

    def post_request(self, request: dict) -> requests.Response:
        response = self._session.post(request["url"], json=request["json"], timeout=self.timeout)
        logger.info("%s webhook at %s answered HTTP %s", self.kind, host_of(request["url"]), response.status_code)
        return response

    def parse_response(self, response: requests.Response, message: OutboundMessage) -> SendResult:
        if 200 <= response.status_code < 300:
            return self.result(response)
        raise self.refusal(response)

    def classify_error(self, exc: Exception) -> ProviderError:
        # requests' messages carry the URL, which is a secret: only the class is kept.
        if isinstance(exc, UnsafeTarget):
            return RecipientRejected(f"{self.label} webhook URL refused: {exc.message}", code="unsafe_target")
        if isinstance(exc, requests.Timeout):
            return ProviderUnavailable(f"{self.label} did not answer in time.")
        if isinstance(exc, requests.RequestException):
            return ProviderUnavailable(f"{self.label} could not be reached: {exc.__class__.__name__}")
        return super().classify_error(exc)

    # --- hooks ---------------------------------------------------------------------

    def url_for(self, webhook_url: str) -> str:
        return webhook_url

    def payload(self, message: OutboundMessage) -> dict:  # pragma: no cover - every adapter says
        raise NotImplementedError

    def result(self, response: requests.Response) -> SendResult:
        return SendResult(provider_message_id="", status="sent", response_code=response.status_code)

    def refusal(self, response: requests.Response) -> ProviderError:
        """The error for a non-2xx answer: 429 and 5xx retry (after Retry-After), the
        other answers are the webhook's refusal: permanent."""
        status = response.status_code
        message = f"{self.label} answered HTTP {status}"
        code, detail = self.error_detail(response)
        if detail:
            message += f": {detail}"
        if 300 <= status < 400:
            return RecipientRejected(
                f"{message}: a redirect, which is not followed", status_code=status, code="redirect"
            )
        if status == 429 or status >= 500:
            return ProviderUnavailable(
                message, status_code=status, retry_after=self.retry_after(response), code=code[:64]
            )
        return RecipientRejected(message, status_code=status, code=code[:64])

    def error_detail(self, response: requests.Response) -> tuple[str, str]:
        """The answer's error code and its words, where the provider gives them."""
        return "", ""

    def retry_after(self, response: requests.Response) -> float | None:
        return parse_retry_after(response.headers.get("Retry-After"))


def _slack_escape(text: str) -> str:
    # Slack reads <...> as links and mentions (<!channel>): the text is shown as written.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackWebhookProvider(ChatWebhookProvider):
    """Slack incoming webhooks: Block Kit (a header from the subject, a mrkdwn section with
    the body) plus the plain text for notifications. Slack answers 200 "ok", or a
    plain-text error code such as invalid_token or channel_not_found."""

    kind = "slack"
    label = "Slack"
    channels = ("slack",)

    def payload(self, message: OutboundMessage) -> dict:
        body = _slack_escape(message.body)
        blocks = []
        if message.subject:
            header = _shorten(message.subject, SLACK_HEADER_MAX)
            blocks.append({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}})
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body}})
        text = f"{_slack_escape(message.subject)}\n{body}" if message.subject else body
        return {"text": text, "blocks": blocks}

    def error_detail(self, response: requests.Response) -> tuple[str, str]:
        code = response.text.strip()[:200]  # invalid_token, channel_not_found, ...
        return code, code


class TeamsWebhookProvider(ChatWebhookProvider):
    """Microsoft Teams incoming webhooks (connectors and Workflows): a message with one
    Adaptive Card, the subject as its title and the body as wrapped text."""

    kind = "teams"
    label = "Microsoft Teams"
    channels = ("teams",)

    def payload(self, message: OutboundMessage) -> dict:
        body = []
        if message.subject:
            body.append(
                {"type": "TextBlock", "text": message.subject, "weight": "Bolder", "size": "Large", "wrap": True}
            )
        body.append({"type": "TextBlock", "text": message.body, "wrap": True})
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": body,
        }
        return {
            "type": "message",
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
        }

    def parse_response(self, response: requests.Response, message: OutboundMessage) -> SendResult:
        # Teams' connectors have answered their own throttling as a 200 whose text says so.
        if response.status_code == 200 and "HTTP error 429" in response.text:
            raise ProviderUnavailable(
                "Microsoft Teams answered HTTP 429", status_code=429, retry_after=self.retry_after(response)
            )
        return super().parse_response(response, message)

    def error_detail(self, response: requests.Response) -> tuple[str, str]:
        return "", response.text.strip()[:200]


class DiscordWebhookProvider(ChatWebhookProvider):
    """Discord webhooks: one embed (the subject as title, the body as description), sent
    with ?wait=true so that Discord answers the message, whose id is kept."""

    kind = "discord"
    label = "Discord"
    channels = ("discord",)

    def url_for(self, webhook_url: str) -> str:
        parts = urlsplit(webhook_url)
        query = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True) if name != "wait"]
        return urlunsplit(parts._replace(query=urlencode([*query, ("wait", "true")])))

    def payload(self, message: OutboundMessage) -> dict:
        embed = {"description": message.body}
        if message.subject:
            embed = {"title": _shorten(message.subject, DISCORD_TITLE_MAX), **embed}
        # No @everyone or role pings from a message's text.
        return {"embeds": [embed], "allowed_mentions": {"parse": []}}

    def result(self, response: requests.Response) -> SendResult:
        answer = self._json(response)
        return SendResult(
            provider_message_id=str(answer.get("id") or ""), status="sent", response_code=response.status_code
        )

    def error_detail(self, response: requests.Response) -> tuple[str, str]:
        answer = self._json(response)  # {"message": "Unknown Webhook", "code": 10015}
        code, words = str(answer.get("code") or ""), str(answer.get("message") or "")[:200]
        return code, f"{words} ({code})" if code and words else words or code

    def retry_after(self, response: requests.Response) -> float | None:
        # Discord says it in the body (seconds, fractional) and in Retry-After: the longer.
        waits = [parse_retry_after(response.headers.get("Retry-After")), None]
        body_wait = self._json(response).get("retry_after")
        if isinstance(body_wait, int | float) and not isinstance(body_wait, bool):
            waits[1] = max(0.0, float(body_wait))
        known = [wait for wait in waits if wait is not None]
        return max(known) if known else None

    @staticmethod
    def _json(response: requests.Response) -> dict:
        try:
            answer = response.json()
        except ValueError:
            return {}
        return answer if isinstance(answer, dict) else {}
