"""GET /api/v1/notifications/health/: open to monitors, and never shows a secret."""

import pytest
from django.conf import settings
from django.db import connection

from config.celery import app as celery_app
from tests.conftest import TWILIO_SID, TWILIO_TOKEN

HEALTH_URL = "/api/v1/notifications/health/"

pytestmark = pytest.mark.django_db


def test_health_is_ok_without_auth(anon_api, twilio, smtp):
    # when
    response = anon_api.get(HEALTH_URL)
    # then
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": {"ok": True, "vendor": connection.vendor},
        "broker": {"ok": True, "transport": settings.CELERY_BROKER_URL.split("://", 1)[0]},
        "providers": {
            "email": {"provider": "django", "configured": True, "problems": []},
            "sms": {"provider": "twilio", "configured": True, "problems": []},
        },
    }
    assert TWILIO_TOKEN not in response.content.decode()
    assert TWILIO_SID not in response.content.decode()


def test_health_reports_a_misconfigured_provider_without_secrets(anon_api, twilio, settings):
    settings.TWILIO_ACCOUNT_SID = ""
    response = anon_api.get(HEALTH_URL)
    assert response.status_code == 200
    assert response.json()["providers"]["sms"] == {
        "provider": "twilio",
        "configured": False,
        "problems": ["TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set"],
    }
    assert TWILIO_TOKEN not in response.content.decode()


def test_health_is_503_when_the_broker_is_down(anon_api, monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("no broker")

    monkeypatch.setattr(celery_app, "connection_for_write", refuse)
    response = anon_api.get(HEALTH_URL)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["database"]["ok"] is True
    assert body["broker"] == {
        "ok": False,
        "transport": settings.CELERY_BROKER_URL.split("://", 1)[0],
        "error": "ConnectionRefusedError",
    }
