"""GET /api/v1/notifications/stats/: the account's delivery counts, rates and cost over a
window, in total, per channel and per provider."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications.models import DeliveryAttempt, DeliveryStatus
from notifications.services import delivery_track
from notifications.services.stats import delivery_stats
from providers.models import ProviderConfig
from tests.conftest import client_for
from tests.notifications.factories import make_delivery, make_recipient

pytestmark = pytest.mark.django_db

STATS_URL = "/api/v1/notifications/stats/"
# A fixed week in the past: 2026-03-02 .. 2026-03-08 inclusive, as dates.
DAY = datetime(2026, 3, 2, tzinfo=UTC)
WEEK = {"from": "2026-03-02", "to": "2026-03-08"}
NO_STATUSES = dict.fromkeys(DeliveryStatus.values, 0)
SUCCESS, RETRYABLE, PERMANENT = (
    DeliveryAttempt.Outcome.SUCCESS,
    DeliveryAttempt.Outcome.RETRYABLE,
    DeliveryAttempt.Outcome.PERMANENT,
)


def stats(api, **params) -> dict:
    response = api.get(STATS_URL, params or WEEK)
    assert response.status_code == 200, response.json()
    return response.json()


def delivery(account, status: str, *, at: datetime = DAY, channel: str = "sms", **fields):
    """A delivery created at `at`, its timestamps set as its status implies."""
    if status in ("sent", "delivered", "opened", "clicked", "undelivered", "bounced"):
        fields.setdefault("sent_at", at)
    if status in ("delivered", "opened", "clicked"):
        fields.setdefault("delivered_at", at)
    if status in ("failed", "undelivered", "bounced"):
        fields.setdefault("failed_at", at)
    recipient = fields.pop("recipient", None) or make_recipient(account)
    return make_delivery(account, channel=channel, status=status, recipient=recipient, created_at=at, **fields)


def attempt(delivery, number=1, *, outcome=SUCCESS, provider="twilio", record=None, cost=None, currency=""):
    return DeliveryAttempt.objects.create(
        delivery=delivery,
        number=number,
        provider=provider,
        provider_config=record,
        outcome=outcome,
        started_at=delivery.created_at,
        cost=Decimal(cost) if cost is not None else None,
        currency=currency,
    )


def record(account, name="our twilio", *, kind="twilio", channel="sms"):
    return ProviderConfig.objects.create(account=account, name=name, kind=kind, channel=channel)


def counts(total=0, sent=0, delivered=0, failed=0, delivery_rate=None, failure_rate=None, cost=(), statuses=None):
    """An expected slice; `statuses` the nonzero counts by status."""
    return {
        "total": total,
        "sent": sent,
        "delivered": delivered,
        "failed": failed,
        "delivery_rate": delivery_rate,
        "failure_rate": failure_rate,
        "by_status": {**NO_STATUSES, **(statuses or {})},
        "cost": [{"currency": currency, "amount": amount} for currency, amount in cost],
    }


# --- Counts -------------------------------------------------------------------------------


def test_counts_and_rates_in_total_and_per_channel(alice, alice_api):
    # given: in the week, sms sent, delivered, clicked, undelivered, refused (failed
    # before any provider took it) and queued; email opened and bounced.
    for status in ("sent", "delivered", "clicked", "undelivered", "failed", "queued"):
        delivery(alice, status)
    delivery(alice, "opened", channel="email")
    delivery(alice, "bounced", channel="email", delivered_at=DAY)
    # when
    body = stats(alice_api)
    # then
    assert (body["from"], body["to"]) == ("2026-03-02T00:00:00Z", "2026-03-09T00:00:00Z")
    # sent: everything but the refused and the queued (6); delivered: delivered, clicked,
    # opened (the bounced one no longer); failed: undelivered, refused, bounced; sent or
    # failed: 7.
    sms_statuses = {"sent": 1, "delivered": 1, "clicked": 1, "undelivered": 1, "failed": 1, "queued": 1}
    email_statuses = {"opened": 1, "bounced": 1}
    assert body["totals"] == counts(
        total=8,
        sent=6,
        delivered=3,
        failed=3,
        delivery_rate=0.5,
        failure_rate=0.4286,
        statuses=sms_statuses | email_statuses,
    )
    assert body["by_channel"] == [
        {
            "channel": "email",
            **counts(
                total=2, sent=2, delivered=1, failed=1, delivery_rate=0.5, failure_rate=0.5, statuses=email_statuses
            ),
        },
        {
            # sent or failed: 5 (the queued one is neither)
            "channel": "sms",
            **counts(
                total=6, sent=4, delivered=2, failed=2, delivery_rate=0.5, failure_rate=0.4, statuses=sms_statuses
            ),
        },
    ]


def test_an_empty_window_has_zero_counts_and_no_rates(alice, alice_api):
    body = stats(alice_api)
    assert body["totals"] == counts()
    assert (body["by_channel"], body["by_provider"]) == ([], [])


def test_another_accounts_deliveries_and_costs_are_left_out(alice, bob, alice_api, bob_api):
    # given
    attempt(delivery(alice, "delivered"), cost="0.010000", currency="USD")
    attempt(delivery(bob, "sent"), cost="0.020000", currency="USD")
    attempt(delivery(bob, "failed"), outcome=PERMANENT)
    # when
    alices, bobs = stats(alice_api), stats(bob_api)
    # then
    assert alices["totals"] == counts(
        total=1,
        sent=1,
        delivered=1,
        delivery_rate=1.0,
        failure_rate=0.0,
        cost=[("USD", "0.010000")],
        statuses={"delivered": 1},
    )
    assert (bobs["totals"]["total"], bobs["totals"]["sent"], bobs["totals"]["failed"]) == (2, 1, 1)
    assert bobs["totals"]["cost"] == [{"currency": "USD", "amount": "0.020000"}]


def test_test_sends_are_counted(alice, alice_api):
    sent = delivery(alice, "sent")
    sent.notification.is_test = True
    sent.notification.save(update_fields=["is_test"])
    assert stats(alice_api)["totals"]["sent"] == 1


def test_a_delivery_that_bounces_after_delivery_moves_from_delivered_to_failed(alice, alice_api):
    # given: delivered, as the provider's callback reports it
    moved = delivery(alice, "sent")
    assert delivery_track(delivery=moved, status="delivered", source="test", occurred_at=DAY + timedelta(hours=1))
    before = stats(alice_api)["totals"]
    # when: it bounces later
    assert delivery_track(delivery=moved, status="bounced", source="test", occurred_at=DAY + timedelta(hours=2))
    after = stats(alice_api)["totals"]
    # then
    assert (before["sent"], before["delivered"], before["failed"]) == (1, 1, 0)
    assert (before["delivery_rate"], before["failure_rate"]) == (1.0, 0.0)
    assert (after["sent"], after["delivered"], after["failed"]) == (1, 0, 1)
    assert (after["delivery_rate"], after["failure_rate"]) == (0.0, 1.0)
    assert (after["by_status"]["delivered"], after["by_status"]["bounced"]) == (0, 1)


# --- The window ---------------------------------------------------------------------------


def test_the_window_keeps_from_and_drops_to_for_date_times(alice, alice_api):
    start = DAY + timedelta(hours=9)
    end = DAY + timedelta(hours=10)
    for at in (start - timedelta(microseconds=1), start, end - timedelta(microseconds=1), end):
        delivery(alice, "sent", at=at)
    body = stats(alice_api, **{"from": start.isoformat(), "to": end.isoformat()})
    assert body["totals"]["total"] == 2
    assert (body["from"], body["to"]) == ("2026-03-02T09:00:00Z", "2026-03-02T10:00:00Z")


def test_a_date_to_means_the_end_of_that_day(alice, alice_api):
    delivery(alice, "sent", at=datetime(2026, 3, 8, 23, 59, 59, 999999, tzinfo=UTC))
    delivery(alice, "sent", at=datetime(2026, 3, 9, tzinfo=UTC))
    delivery(alice, "sent", at=DAY - timedelta(microseconds=1))
    assert stats(alice_api)["totals"]["total"] == 1
    assert stats(alice_api, **{"from": "2026-03-08", "to": "2026-03-08"})["totals"]["total"] == 1


def test_offsets_are_honoured(alice, alice_api):
    delivery(alice, "sent", at=datetime(2026, 3, 2, 8, 30, tzinfo=UTC))
    # 09:00+01:00 is 08:00 UTC; 09:00-01:00 is 10:00 UTC
    assert (
        stats(alice_api, **{"from": "2026-03-02T09:00:00+01:00", "to": "2026-03-02T09:00:00-01:00"})["totals"]["total"]
        == 1
    )
    assert (
        stats(alice_api, **{"from": "2026-03-02T09:00:00+00:00", "to": "2026-03-02T12:00:00Z"})["totals"]["total"] == 0
    )


def test_by_default_the_window_is_the_last_seven_days(alice, alice_api):
    now = timezone.now()
    delivery(alice, "sent", at=now - timedelta(days=6, hours=23))
    delivery(alice, "sent", at=now - timedelta(days=7, minutes=1))
    body = stats(alice_api, page="ignored")
    assert body["totals"]["total"] == 1
    start, end = datetime.fromisoformat(body["from"]), datetime.fromisoformat(body["to"])
    assert end - start == timedelta(days=7)
    assert abs(end - now) < timedelta(minutes=1)


def test_with_only_from_the_window_runs_to_now(alice, alice_api):
    delivery(alice, "sent", at=timezone.now() - timedelta(days=10))
    body = stats(alice_api, **{"from": (timezone.now() - timedelta(days=30)).date().isoformat()})
    assert body["totals"]["total"] == 1


def test_a_window_of_366_days_is_allowed(alice, alice_api):
    assert stats(alice_api, **{"from": "2024-01-01", "to": "2024-12-31"})["totals"] == counts()


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"from": "2026-03-09", "to": "2026-03-02"}, "from", "Must not be after `to`."),
        ({"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T09:59:59Z"}, "from", "Must not be after `to`."),
        ({"from": "2024-01-01", "to": "2025-01-01"}, "to", "The window is at most 366 days."),
        ({"from": "2025-01-01T00:00:00Z", "to": "2026-01-02T00:00:01Z"}, "to", "The window is at most 366 days."),
        ({"from": "2000-01-01"}, "to", "The window is at most 366 days."),
        ({"from": "yesterday"}, "from", "Expected an ISO 8601 date"),
        ({"from": "2026-02-30"}, "from", "Expected an ISO 8601 date"),
        ({"to": "2026-03-02T25:00:00Z"}, "to", "Expected an ISO 8601 date"),
        ({"to": "2026-03-02T09:00:00+15:00"}, "to", "The UTC offset must be between"),
        ({"to": "9999-12-31"}, "to", "Out of the supported range"),
        ({"to": "0001-01-02"}, "to", "Out of the supported range"),
        ({"from": "0001-01-01T00:00:00+01:00"}, "from", "Out of the supported range"),
    ],
)
def test_a_bad_window_is_a_400_naming_the_field(alice_api, params, field, message):
    response = alice_api.get(STATS_URL, params)
    assert response.status_code == 400
    body = response.json()
    assert list(body["errors"]) == [field]
    assert body["errors"][field][0].startswith(message)
    assert body["message"].startswith(f"Invalid input: {field}: {message}")


def test_without_a_valid_token_it_is_401(anon_api):
    assert anon_api.get(STATS_URL).status_code == 401
    anon_api.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    response = anon_api.get(STATS_URL)
    assert response.status_code == 401
    assert response.json() == {"message": "Invalid or revoked token.", "errors": {}}


# --- Cost and providers -------------------------------------------------------------------


def test_cost_is_summed_per_currency_per_channel_and_per_provider(alice, alice_api):
    # given: alice's own Twilio record and the platform's Twilio (sms), SendGrid (email)
    ours = record(alice)
    # accepted by her record, 2 segments
    attempt(delivery(alice, "delivered"), record=ours, cost="0.015000", currency="USD")
    # refused by her record, then accepted by the platform's Twilio
    rerouted = delivery(alice, "sent", provider="twilio")
    attempt(rerouted, 1, outcome=RETRYABLE, record=ours, cost="0.007500", currency="USD")
    attempt(rerouted, 2, record=None, cost="0.007900", currency="USD")
    # refused for good by her record: counted (as failed) under it
    attempt(delivery(alice, "failed"), outcome=PERMANENT, record=ours)
    # email through the platform's SendGrid, priced in euros
    attempt(
        delivery(alice, "opened", channel="email", provider="sendgrid"),
        provider="sendgrid",
        cost="0.001",
        currency="EUR",
    )
    # an attempt of unknown cost adds nothing
    attempt(delivery(alice, "sent", provider="twilio"), cost=None)
    # never reached a provider
    delivery(alice, "suppressed")
    # when
    body = stats(alice_api)
    # then
    assert body["totals"]["cost"] == [
        {"currency": "EUR", "amount": "0.001000"},
        {"currency": "USD", "amount": "0.030400"},
    ]
    assert {row["channel"]: row["cost"] for row in body["by_channel"]} == {
        "email": [{"currency": "EUR", "amount": "0.001000"}],
        "sms": [{"currency": "USD", "amount": "0.030400"}],
    }
    assert body["by_provider"] == [
        {
            "provider": "sendgrid",
            "provider_id": None,
            "kind": "sendgrid",
            "channel": "email",
            **counts(
                total=1,
                sent=1,
                delivered=1,
                delivery_rate=1.0,
                failure_rate=0.0,
                cost=[("EUR", "0.001000")],
                statuses={"opened": 1},
            ),
        },
        {
            "provider": "our twilio",
            "provider_id": ours.pk,
            "kind": "twilio",
            "channel": "sms",
            **counts(
                total=2,
                sent=1,
                delivered=1,
                failed=1,
                delivery_rate=1.0,
                failure_rate=0.5,
                cost=[("USD", "0.022500")],
                statuses={"delivered": 1, "failed": 1},
            ),
        },
        {
            "provider": "twilio",
            "provider_id": None,
            "kind": "twilio",
            "channel": "sms",
            **counts(
                total=2, sent=2, delivery_rate=0.0, failure_rate=0.0, cost=[("USD", "0.007900")], statuses={"sent": 2}
            ),
        },
        {
            "provider": None,
            "provider_id": None,
            "kind": None,
            "channel": "sms",
            **counts(total=1, statuses={"suppressed": 1}),
        },
    ]
    # the provider rows add up to the totals
    assert sum(row["total"] for row in body["by_provider"]) == body["totals"]["total"] == 6


def test_a_record_of_another_channel_or_name_is_its_own_row(alice, alice_api):
    backup = record(alice, "backup twilio")
    ours = record(alice, "our twilio")
    attempt(delivery(alice, "sent"), record=ours, cost="0.01", currency="USD")
    attempt(delivery(alice, "sent"), record=backup, cost="0.02", currency="GBP")
    rows = stats(alice_api)["by_provider"]
    assert [(row["provider"], row["provider_id"], row["cost"]) for row in rows] == [
        ("backup twilio", backup.pk, [{"currency": "GBP", "amount": "0.020000"}]),
        ("our twilio", ours.pk, [{"currency": "USD", "amount": "0.010000"}]),
    ]


# --- Queries ------------------------------------------------------------------------------


def seed(account, n: int, records: list) -> None:
    recipient = make_recipient(account)
    for i in range(n):
        status = ("sent", "delivered", "failed", "bounced", "queued")[i % 5]
        made = delivery(account, status, channel=("sms", "email")[i % 2], recipient=recipient, provider="twilio")
        attempt(made, 1, outcome=RETRYABLE, record=records[i % len(records)], cost="0.001", currency="USD")
        attempt(made, 2, record=None, cost="0.002", currency=("USD", "EUR")[i % 2])


def test_the_query_count_does_not_grow_with_the_deliveries(alice):
    records = [record(alice, f"record {i}") for i in range(3)]
    seed(alice, 2, records)
    api = client_for(alice)
    stats(api)  # the token is read (and remembered) once, not counted
    with CaptureQueriesContext(connection) as few:
        assert api.get(STATS_URL, WEEK).status_code == 200
    seed(alice, 60, records)
    with CaptureQueriesContext(connection) as many:
        body = stats(api)
    assert body["totals"]["total"] == 62
    assert len(many) == len(few) == 3


def test_the_service_reads_in_three_queries_at_most(alice, django_assert_num_queries):
    seed(alice, 20, [record(alice)])
    with django_assert_num_queries(3):
        result = delivery_stats(account=alice, start=DAY, end=DAY + timedelta(days=1))
    assert result["totals"]["total"] == 20
    # No provider record among them: no names to read.
    with django_assert_num_queries(2):
        delivery_stats(account=alice, start=DAY + timedelta(days=1), end=DAY + timedelta(days=2))
