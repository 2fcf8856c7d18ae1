"""A local double of SendGrid's v3 mail/send API, spoken to by django-anymail's SendGrid backend.

It answers POST /v3/mail/send like SendGrid: 202 with an empty body and an X-Message-Id
header, 401 for a wrong API key, or a scripted answer (status, headers, JSON body).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from django.test import override_settings

from providers.registry import reset_providers
from tests.doubles.http import HttpDouble

SENDGRID_API_KEY = "SG.test-api-key"


class SendGridDouble(HttpDouble):
    def __init__(self, *, api_key: str = SENDGRID_API_KEY):
        super().__init__()
        self.api_key = api_key  # self.requests: {"path", "authorization", "json"} of each accepted call
        self.delay = 0.0

    def reset(self) -> None:
        super().reset()
        self.delay = 0.0

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v3/"

    def answer(self, path: str, headers, body: bytes) -> tuple[int, dict, dict | None]:
        authorization = headers.get("Authorization", "")
        if path != "/v3/mail/send":
            return 404, {}, {"errors": [{"message": "Not found", "field": None, "help": None}]}
        if authorization != f"Bearer {self.api_key}":
            return 401, {}, {"errors": [{"message": "The provided authorization grant is invalid.", "field": None}]}
        with self.lock:
            self.requests.append({"path": path, "authorization": authorization, "json": json.loads(body or b"{}")})
            scripted = self.next_scripted()
        if self.delay:
            time.sleep(self.delay)
        if scripted is not None:
            return scripted
        return 202, {"X-Message-Id": uuid.uuid4().hex[:22]}, None


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
