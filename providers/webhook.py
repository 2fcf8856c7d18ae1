"""Outbound webhooks, signed per Standard Webhooks (standardwebhooks.com): one POST of a
JSON body with `webhook-id` (stable across retries), `webhook-timestamp` (this attempt's,
in seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
one per secret in force, space-separated, so a receiver rotating its secret accepts
either). Redirects are not followed; the URL passes the outbound URL guard before every
POST and at connect time.

`post_signed` is the one way Beacon posts to a customer's URL: the status-change events
(notifications.services.webhooks) and the `webhook` channel's adapter below both use it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets as random_secrets
import time

import requests
from django.conf import settings

from .base import (
    OutboundMessage,
    Provider,
    ProviderUnavailable,
    RecipientRejected,
    SendResult,
    parse_retry_after,
)
from .chat import host_of
from .urlguard import UnsafeTarget, check_url, guarded_session

SECRET_PREFIX = "whsec_"
USER_AGENT = "Beacon-Webhooks/1"
# How much of a receiver's answer is read (an attempt keeps its first 1000 characters).


def secret_generate() -> str:
    """A new signing secret in the Standard Webhooks form: whsec_ + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(raw + "==")


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()


def signed_headers(secrets: list[str], msg_id: str, body: bytes, timestamp: int | None = None) -> dict:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(secret, msg_id, timestamp, body) for secret in secrets),
    }


def encode(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


_SESSION = None


def session() -> requests.Session:
    """One guarded session per process (connections kept open, only to public addresses,
    redirects never followed, bodies read up to MAX_RESPONSE_BYTES)."""
    global _SESSION
    if _SESSION is None:
        _SESSION = guarded_session()
    return _SESSION


def post_signed(url: str, *, msg_id: str, payload: dict, secrets: list[str], timeout: float) -> requests.Response:
    """POST the payload signed with each secret; the 2xx response, or a classified error:
    RecipientRejected for a refused URL, a redirect or a 4xx (gone=True for 410),
    ProviderUnavailable for a timeout, a connection failure, 429 or 5xx."""
    try:
        check_url(url)
        body = encode(payload)
        response = session().post(
            url,
            data=body,
            headers=signed_headers(secrets, msg_id, body),
            timeout=timeout,
        )
    except UnsafeTarget as exc:
        raise RecipientRejected(f"The webhook URL is refused: {exc.message}", code="unsafe_target") from None
    except requests.Timeout:
        raise ProviderUnavailable(f"{host_of(url)} did not answer within {timeout:g} s.", code="timeout") from None
    except requests.RequestException as exc:
        # requests' message holds the URL (a secret path, often): only the class is kept.
        raise ProviderUnavailable(f"{host_of(url)} could not be reached: {exc.__class__.__name__}") from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    words = f"{host_of(url)} answered HTTP {status}"
    if 300 <= status < 400:
        raise RecipientRejected(f"{words}: a redirect, which is not followed", status_code=status, code="redirect")
    if status == 429 or status >= 500:
        raise ProviderUnavailable(
            words, status_code=status, retry_after=parse_retry_after(response.headers.get("Retry-After"))
        )
    raise RecipientRejected(words, status_code=status, code=str(status), gone=status == 410)


class WebhookProvider(Provider):
    """The `webhook` channel: the rendered message posted to one of the account's webhook
    endpoints (the recipient's `webhook_url`), signed with its secrets, which dispatch
    reads with the claim (`message.target`)."""

    kind = "webhook"
    channels = ("webhook",)
    recipient_endpoints = True

    def build_request(self, message: OutboundMessage) -> dict:
        secrets = message.target.get("secrets") or []
        if not secrets:
            raise RecipientRejected("The webhook endpoint has no signing secret.", code="no_endpoint")
        payload = {
            "type": "notification.message",
            "timestamp": message.target.get("timestamp", ""),
            "data": {
                "delivery_id": message.reference,
                "subject": message.subject,
                "body": message.body,
                "locale": message.locale,
                "data": (message.options or {}).get("data") or {},
            },
        }
        return {
            "url": message.to,
            "msg_id": f"msg_{message.reference.replace('-', '')}",
            "payload": payload,
            "secrets": secrets,
        }

    def post_request(self, request: dict) -> requests.Response:
        return post_signed(
            request["url"],
            msg_id=request["msg_id"],
            payload=request["payload"],
            secrets=request["secrets"],
            timeout=settings.BEACON_WEBHOOK_TIMEOUT_SECONDS,  # a receiver's, as for the status events
        )

    def parse_response(self, response: requests.Response, message: OutboundMessage) -> SendResult:
        return SendResult(provider_message_id="", status="delivered", response_code=response.status_code)
