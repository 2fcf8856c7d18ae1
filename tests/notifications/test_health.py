"""GET /api/v1/notifications/health/: open to monitors, and never shows a secret."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from config.celery import app as celery_app
from notifications.models import Heartbeat
from tests.conftest import TWILIO_SID, TWILIO_TOKEN

HEALTH_URL = "/api/v1/notifications/health/"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def live_worker_and_beat(monkeypatch):
    """A worker answers the ping and beat had the sweep run just now (each test that wants
    otherwise says so)."""
    monkeypatch.setattr(celery_app.control, "ping", lambda timeout: [{"celery@test": {"ok": "pong"}}])
    at = timezone.now()
    Heartbeat.objects.update_or_create(name="sweep", defaults={"at": at})
    return at


# A provider's health before any traffic.
QUIET = {
    "status": "healthy",
    "breaker": "closed",
    "open_until": None,
    "paused_until": None,
    "consecutive_failures": 0,
    "window_seconds": 300,
    "attempts": 0,
    "failures": 0,
    "success_rate": None,
    "p95_latency_ms": None,
}


def test_health_is_ok_without_auth(anon_api, twilio, smtp, live_worker_and_beat):
    # when
    response = anon_api.get(HEALTH_URL)
    # then
    assert response.status_code == 200
    body = response.json()
    assert 0 <= body["sweep"].pop("age_seconds") < 5
    assert body == {
        "status": "ok",
        "database": {"ok": True, "vendor": connection.vendor},
        "broker": {"ok": True, "transport": settings.CELERY_BROKER_URL.split("://", 1)[0]},
        "worker": {"ok": True, "answered": 1},
        "sweep": {"ok": True, "last_run": live_worker_and_beat.isoformat()},
        "providers": {
            "email": {"provider": "django", "configured": True, "problems": []},
            "sms": {"provider": "twilio", "configured": True, "problems": []},
            "whatsapp": {"provider": "twilio", "configured": True, "problems": []},
            "voice": {"provider": "twilio", "configured": True, "problems": []},
            "push": {"provider": "console", "configured": True, "problems": []},
            "slack": {"provider": "slack", "configured": True, "problems": []},
            "teams": {"provider": "teams", "configured": True, "problems": []},
            "discord": {"provider": "discord", "configured": True, "problems": []},
            "in_app": {"provider": "inbox", "configured": True, "problems": []},
            "webhook": {"provider": "webhook", "configured": True, "problems": []},
        },
        "provider_health": {
            # the platform's providers, not the recipients' own endpoints (chat, webhooks)
            kind: QUIET
            for kind in ("console", "django", "inbox", "twilio")
        },
        "failure_rates": {
            "alerting": False,
            "last_run": None,
            "window_minutes": settings.BEACON_FAILURE_WATCH_MINUTES,
            "threshold": settings.BEACON_FAILURE_RATE_THRESHOLD,
            "alerts": [],
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


def test_health_is_503_when_no_worker_answers(anon_api, monkeypatch):
    monkeypatch.setattr(celery_app.control, "ping", lambda timeout: [])
    response = anon_api.get(HEALTH_URL)
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert response.json()["worker"] == {"ok": False, "answered": 0}


def test_health_is_503_when_the_sweep_is_overdue(anon_api, settings):
    settings.BEACON_SWEEP_INTERVAL_SECONDS = 10
    Heartbeat.objects.filter(name="sweep").update(at=timezone.now() - timedelta(seconds=61))
    response = anon_api.get(HEALTH_URL)
    assert response.status_code == 503
    sweep = response.json()["sweep"]
    assert (sweep["ok"], sweep["age_seconds"] >= 61) == (False, True)


def test_health_is_503_before_the_sweep_ever_ran(anon_api):
    Heartbeat.objects.all().delete()
    response = anon_api.get(HEALTH_URL)
    assert response.status_code == 503
    assert response.json()["sweep"] == {"ok": False, "last_run": None}


def test_the_sweep_records_when_it_ran(anon_api):
    from notifications.services import deliveries_sweep

    Heartbeat.objects.all().delete()
    before = timezone.now()
    deliveries_sweep()
    assert Heartbeat.objects.get(name="sweep").at >= before
    assert anon_api.get(HEALTH_URL).json()["sweep"]["ok"] is True
