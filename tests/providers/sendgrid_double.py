"""A local double of SendGrid's v3 mail/send API, spoken to by django-anymail's SendGrid backend.

It answers POST /v3/mail/send like SendGrid: 202 with an empty body and an X-Message-Id
header, 401 for a wrong API key, or a scripted answer (status, headers, JSON body).
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import override_settings

from providers.registry import reset_providers

SENDGRID_API_KEY = "SG.test-api-key"


class SendGridDouble:
    def __init__(self, *, api_key: str = SENDGRID_API_KEY):
        self.api_key = api_key
        self.requests: list[dict] = []  # {"path", "authorization", "json"} of each accepted call
        self.script: list[tuple[int, dict, dict | None]] = []  # answers to give before the normal ones
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def api_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v3/"

    def start(self) -> SendGridDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.script.clear()

    def sent_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def _answer(self, path: str, authorization: str, body: bytes) -> tuple[int, dict, dict | None]:
        if path != "/v3/mail/send":
            return 404, {}, {"errors": [{"message": "Not found", "field": None, "help": None}]}
        if authorization != f"Bearer {self.api_key}":
            return 401, {}, {"errors": [{"message": "The provided authorization grant is invalid.", "field": None}]}
        with self._lock:
            self.requests.append({"path": path, "authorization": authorization, "json": json.loads(body or b"{}")})
            scripted = self.script.pop(0) if self.script else None
        if scripted is not None:
            return scripted
        return 202, {"X-Message-Id": uuid.uuid4().hex[:22]}, None

    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, headers, answer = double._answer(
                    self.path.split("?")[0], self.headers.get("Authorization", ""), body
                )
                payload = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                if answer is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        return Handler


def sendgrid_settings(double: SendGridDouble) -> dict:
    return {
        "EMAIL_BACKEND": "anymail.backends.sendgrid.EmailBackend",
        "ANYMAIL": {"SENDGRID_API_KEY": double.api_key, "SENDGRID_API_URL": double.api_url},
        "BEACON_EMAIL_PROVIDER": "django",
    }


@pytest.fixture(scope="session")
def sendgrid_server():
    double = SendGridDouble().start()
    yield double
    double.stop()


@pytest.fixture
def sendgrid(sendgrid_server):
    """The SendGrid double, emptied, with anymail's SendGrid backend pointed at it."""
    sendgrid_server.reset()
    with override_settings(**sendgrid_settings(sendgrid_server)):
        reset_providers()
        yield sendgrid_server
    reset_providers()
