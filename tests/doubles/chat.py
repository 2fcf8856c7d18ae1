"""A local double of Slack's, Microsoft Teams' and Discord's incoming webhooks.

One server on loopback takes all three, told apart by the path as the real URLs are:
/services/... (Slack), /webhookb2/... (Teams), /api/webhooks/... (Discord). It records
every request and answers as the service does (Slack "ok", Teams "1", Discord the created
message with ?wait=true), unless told to answer a path otherwise first: `answer_next`.
"""

from __future__ import annotations

import json
import threading
import uuid
from urllib.parse import parse_qsl, urlsplit

import pytest

from providers.registry import reset_providers
from tests.doubles.http import HttpDouble

SLACK_PATH = "/services/T0000001/B0000001/slacktoken0001"
TEAMS_PATH = "/webhookb2/0000-1111/IncomingWebhook/abc123/2222-3333"
DISCORD_PATH = "/api/webhooks/1200000000000000001/discordtoken0001"

# Slack's real refusals: plain-text codes.
SLACK_INVALID_TOKEN = (403, {}, "invalid_token")
SLACK_CHANNEL_NOT_FOUND = (404, {}, "channel_not_found")
SLACK_CHANNEL_IS_ARCHIVED = (410, {}, "channel_is_archived")
SLACK_NO_SERVICE = (404, {}, "no_service")
DISCORD_UNKNOWN_WEBHOOK = (404, {}, {"message": "Unknown Webhook", "code": 10015})


def slack_rate_limited(seconds: int) -> tuple[int, dict, str]:
    return 429, {"Retry-After": str(seconds)}, "rate_limited"


def teams_rate_limited(seconds: int) -> tuple[int, dict, str]:
    return 429, {"Retry-After": str(seconds)}, "Too many requests"


def discord_rate_limited(seconds: float, *, header: str | None = None) -> tuple[int, dict, dict]:
    headers = {"Retry-After": header} if header is not None else {}
    return 429, headers, {"message": "You are being rate limited.", "retry_after": seconds, "global": False}


class ChatDouble(HttpDouble):
    def __init__(self):
        super().__init__()
        self.answers: dict[str, list[tuple[int, dict, object]]] = {}
        self._local = threading.local()

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.answers.clear()

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    @property
    def slack_url(self) -> str:
        return self.url(SLACK_PATH)

    @property
    def teams_url(self) -> str:
        return self.url(TEAMS_PATH)

    @property
    def discord_url(self) -> str:
        return self.url(DISCORD_PATH)

    def answer_next(self, path: str, *answers: tuple[int, dict, object]) -> None:
        """Answer the next requests to `path` with these (status, headers, body), in order."""
        with self.lock:
            self.answers.setdefault(path, []).extend(answers)

    def received(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if path is None or r["path"] == path]

    # --- the HTTP side -----------------------------------------------------------

    def answer(self, path: str, headers, body: bytes):
        query = dict(parse_qsl(urlsplit(self._local.raw_path).query))
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            payload = None
        with self.lock:
            self.requests.append(
                {"path": path, "query": query, "json": payload, "content_type": headers.get("Content-Type", "")}
            )
            told = self.answers.get(path)
            scripted = told.pop(0) if told else None
        if scripted is not None:
            return scripted
        if path.startswith("/services/"):
            return 200, {}, "ok"
        if path.startswith("/webhookb2/"):
            return 200, {}, "1"
        if path.startswith("/api/webhooks/"):
            if query.get("wait") != "true":
                return 204, {}, None
            return 200, {}, self._discord_message(path, payload or {})
        return 404, {}, "not found"

    def _discord_message(self, path: str, payload: dict) -> dict:
        webhook_id = path.split("/")[3]
        return {
            "id": str(1300000000000000000 + uuid.uuid4().int % 10**17),
            "type": 0,
            "content": payload.get("content", ""),
            "channel_id": "1100000000000000001",
            "author": {"id": webhook_id, "username": "Beacon", "bot": True},
            "embeds": [{"type": "rich", **embed} for embed in payload.get("embeds", [])],
            "webhook_id": webhook_id,
        }

    def _handler(self):
        base = super()._handler()
        double = self

        class Handler(base):
            def do_POST(self):
                double._local.raw_path = self.path  # the base hands `answer` the path without its query
                super().do_POST()

        return Handler


@pytest.fixture(scope="session")
def chat_server():
    double = ChatDouble().start()
    yield double
    double.stop()


@pytest.fixture
def chat(chat_server, settings):
    """The chat double, emptied. It listens on 127.0.0.1, so private targets are allowed."""
    chat_server.reset()
    settings.BEACON_ALLOW_PRIVATE_TARGETS = True
    reset_providers()
    yield chat_server
    reset_providers()
