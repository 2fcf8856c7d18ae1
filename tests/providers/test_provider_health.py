"""A provider's health where operators look: the providers API, the admin and /health/."""

import pytest
from django.urls import reverse

from providers.health import Outcomes, provider_pause, provider_record
from providers.services import provider_config_create
from tests.conftest import TWILIO_FROM, TWILIO_SID, TWILIO_TOKEN

pytestmark = pytest.mark.django_db

PROVIDERS = "/api/v1/providers/"


def twilio_record(account, name="Twilio main"):
    return provider_config_create(
        account,
        name=name,
        channel="sms",
        kind="twilio",
        credentials={"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN},
        settings={"from_number": TWILIO_FROM},
    )


def test_the_api_shows_each_provider_s_health(alice, alice_api, settings):
    # given: one record failing (its breaker open), one healthy with traffic
    settings.BEACON_BREAKER_THRESHOLD = 2
    down, fine = twilio_record(alice, "down"), twilio_record(alice, "fine")
    provider_record(f"record:{down.pk}", Outcomes([False, False], [40, 60], "Twilio answered HTTP 503"))
    provider_record(f"record:{fine.pk}", Outcomes([True] * 4, [10, 20, 30, 40]))
    # when
    listed = {r["name"]: r["health"] for r in alice_api.get(PROVIDERS).json()["results"]}
    one = alice_api.get(f"{PROVIDERS}{down.pk}/").json()["health"]
    # then
    assert listed["down"] == one
    assert (one["status"], one["breaker"], one["consecutive_failures"]) == ("down", "open", 2)
    assert one["open_until"] is not None
    assert (one["attempts"], one["failures"], one["success_rate"]) == (2, 2, 0.0)
    assert one["last_error"] == "Twilio answered HTTP 503"
    assert listed["fine"]["status"] == "healthy"
    assert (listed["fine"]["success_rate"], listed["fine"]["p95_latency_ms"]) == (1.0, 40)


def test_a_page_of_providers_reads_their_health_in_one_round_trip(alice, alice_api, monkeypatch):
    for n in range(5):
        twilio_record(alice, f"p{n}")
    calls = []
    import providers.api

    real = providers.api.providers_health
    monkeypatch.setattr(providers.api, "providers_health", lambda keys: calls.append(keys) or real(keys))
    assert len(alice_api.get(PROVIDERS).json()["results"]) == 5
    assert [len(keys) for keys in calls] == [5]


def test_the_admin_shows_health(admin_client, alice):
    record = twilio_record(alice)
    provider_pause(f"record:{record.pk}", 60, "throttled: Twilio answered HTTP 429")
    listing = admin_client.get(reverse("admin:providers_providerconfig_changelist")).content.decode()
    assert "degraded" in listing
    page = admin_client.get(reverse("admin:providers_providerconfig_change", args=[record.pk])).content.decode()
    assert "degraded (breaker closed)" in page
    assert "paused until" in page
    assert "throttled: Twilio answered HTTP 429" in page


def test_health_endpoint_reports_the_platform_providers_health(client, settings):
    settings.BEACON_BREAKER_THRESHOLD = 1
    kind = client.get("/api/v1/notifications/health/").json()["providers"]["sms"]["provider"]
    provider_record(f"platform:{kind}", Outcomes([False], [5], "boom"))
    health = client.get("/api/v1/notifications/health/").json()["provider_health"]
    assert (health[kind]["status"], health[kind]["consecutive_failures"]) == ("down", 1)
    assert all(report["status"] == "healthy" for other, report in health.items() if other != kind)
    # public: no error text (it may name a customer's host), no recipient-owned endpoints
    assert "last_error" not in health[kind]
    assert not {"webhook", "slack", "teams", "discord", "webpush"} & set(health)


def test_recipient_owned_endpoints_have_no_shared_breaker():
    from providers.registry import Link, provider_build

    assert not Link(provider_build("webhook"), kind="webhook").shared
    assert not Link(provider_build("slack"), kind="slack").shared
    assert not Link(None, 1, kind="twilio").shared
    assert Link(provider_build("console"), kind="console").shared
