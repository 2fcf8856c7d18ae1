"""A local double of a customer's webhook receiver: one server on 127.0.0.1 that records
every POST (its path, its headers with lower-cased names, its raw body bytes) and answers
200 "ok", unless told otherwise first: `answer_next((status, headers, body), ...)` scripts
the next answers in order (a 410, a 500, a 302 with a Location), and `slow` makes it wait
that many seconds before each answer (a receiver that times out)."""

from __future__ import annotations

import time

import pytest

from providers.registry import reset_providers
from tests.doubles.http import HttpDouble

HOOK_PATH = "/hooks/beacon"


class ReceiverDouble(HttpDouble):
    def __init__(self):
        super().__init__()
        self.slow = 0.0

    def reset(self) -> None:
        super().reset()
        self.slow = 0.0

    def url(self, path: str = HOOK_PATH) -> str:
        return f"{self.base_url}{path}"

    def answer_next(self, *answers: tuple[int, dict, object]) -> None:
        """Answer the next requests with these (status, headers, body), in order."""
        with self.lock:
            self.script.extend(answers)

    def received(self, path: str | None = None) -> list[dict]:
        """Each request: {"path", "headers" (lower-cased names), "body" (bytes)}."""
        with self.lock:
            return [dict(r) for r in self.requests if path is None or r["path"] == path]

    def answer(self, path: str, headers, body: bytes):
        with self.lock:
            self.requests.append({"path": path, "headers": {k.lower(): v for k, v in headers.items()}, "body": body})
            scripted = self.next_scripted()
            slow = self.slow
        if slow:
            time.sleep(slow)
        return scripted if scripted is not None else (200, {}, "ok")


@pytest.fixture(scope="session")
def receiver_server():
    double = ReceiverDouble().start()
    yield double
    double.stop()


@pytest.fixture
def receiver(receiver_server, settings):
    """The receiver double, emptied. It listens on 127.0.0.1, so private targets are allowed."""
    receiver_server.reset()
    settings.BEACON_ALLOW_PRIVATE_TARGETS = True
    reset_providers()
    yield receiver_server
    receiver_server.slow = 0.0
    reset_providers()
