"""Upkeep: the cleanup of logs older than the retention period, and the failure-rate
watch whose alerts /health/ shows."""

import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from config.celery import app as celery_app
from notifications import tasks
from notifications.models import (
    Booking,
    BookingEvent,
    Delivery,
    DeliveryAttempt,
    DeliveryEvent,
    FailureAlert,
    Heartbeat,
    IdempotencyKey,
    Notification,
    NotificationSchedule,
    Recipient,
)
from notifications.services.upkeep import failure_rates_watch, notifications_cleanup
from preferences.models import DailyCount
from tests.notifications.factories import make_delivery, make_recipient

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=91)
RECENT = NOW - timedelta(days=89)
HEALTH_URL = "/api/v1/notifications/health/"


def logged(account, *, status: str = "delivered", at: datetime = OLD, extra_status: str | None = None) -> Delivery:
    """A delivery (and its notification) created at `at`, with an attempt, events and an
    idempotency key, as a send leaves them; `extra_status` adds a second delivery."""
    with time_machine.travel(at, tick=False):
        delivery = make_delivery(account, status=status)
        DeliveryAttempt.objects.create(delivery=delivery, number=1, provider="twilio", outcome="success", started_at=at)
        for step in ("queued", "sent"):
            DeliveryEvent.objects.create(delivery=delivery, status=step, source="test", occurred_at=at)
        IdempotencyKey.objects.create(
            account=account,
            key=str(uuid.uuid4()),
            request_hash="x",
            notification=delivery.notification,
            response_status=202,
            response_body={},
        )
        if extra_status:
            Delivery.objects.create(
                account=account,
                notification=delivery.notification,
                channel="email",
                to="a@example.com",
                body="Hi",
                status=extra_status,
            )
    return delivery


def schedule(account, recipient, *, status: str, due: datetime) -> NotificationSchedule:
    return NotificationSchedule.objects.create(
        account=account, schedule_type="reminder", channel="sms", recipient=recipient, scheduled_for=due, status=status
    )


def booking_event(account, *, at: datetime) -> BookingEvent:
    with time_machine.travel(at, tick=False):
        booking = Booking.objects.create(
            account=account,
            external_id=f"bk-{uuid.uuid4()}",
            start_time=at,
            end_time=at,
            last_event_at=at,
        )
        return BookingEvent.objects.create(
            account=account, booking=booking, key=f"id:{uuid.uuid4()}", type="booking.created", occurred_at=at
        )


@pytest.fixture
def history(alice, bob):
    """Old and recent logs of two accounts, some still on their way."""
    gone = [logged(alice), logged(bob, status="failed"), logged(alice, status="cancelled")]
    kept = [
        logged(alice, at=RECENT),
        logged(alice, status="scheduled"),
        logged(alice, status="delivered", extra_status="queued"),
        logged(bob, status="sending"),
    ]
    recipient = make_recipient(alice)
    schedules = {
        "gone": [schedule(alice, recipient, status=s, due=OLD) for s in ("sent", "failed", "skipped", "cancelled")],
        "kept": [
            schedule(alice, recipient, status="scheduled", due=OLD),
            schedule(alice, recipient, status="sent", due=RECENT),
        ],
    }
    events = {"gone": booking_event(alice, at=OLD), "kept": booking_event(alice, at=RECENT)}
    counts = {
        "gone": DailyCount.objects.create(recipient=recipient, day=(NOW - timedelta(days=4)).date(), count=2),
        "kept": DailyCount.objects.create(recipient=recipient, day=(NOW - timedelta(days=1)).date(), count=1),
    }
    return {"gone": gone, "kept": kept, "schedules": schedules, "booking_events": events, "daily_counts": counts}


EXPECTED = {
    "notifications": 3,
    "deliveries": 3,
    "attempts": 3,
    "events": 6,
    "idempotency_keys": 3,
    "schedules": 4,
    "booking_events": 1,
    "daily_counts": 1,
}


def test_cleanup_deletes_only_old_finished_logs(history):
    recipients_before = Recipient.objects.count()
    # when
    counts = notifications_cleanup(now=NOW)
    # then
    assert counts == EXPECTED
    gone_ids = [d.notification_id for d in history["gone"]]
    assert Notification.objects.filter(pk__in=gone_ids).count() == 0
    assert Delivery.objects.filter(notification_id__in=gone_ids).count() == 0
    kept_ids = [d.notification_id for d in history["kept"]]
    assert Notification.objects.filter(pk__in=kept_ids).count() == 4
    assert Delivery.objects.count() == 5
    assert DeliveryAttempt.objects.count() == 4
    assert DeliveryEvent.objects.count() == 8
    assert IdempotencyKey.objects.count() == 4
    assert set(NotificationSchedule.objects.all()) == set(history["schedules"]["kept"])
    assert list(BookingEvent.objects.all()) == [history["booking_events"]["kept"]]
    assert list(DailyCount.objects.all()) == [history["daily_counts"]["kept"]]
    # recipients stay, and so do bookings
    assert Recipient.objects.count() == recipients_before
    assert Booking.objects.count() == 2


def test_a_dry_run_counts_the_same_and_deletes_nothing(history):
    before = {model: model.objects.count() for model in (Notification, Delivery, DeliveryEvent, NotificationSchedule)}
    # when
    counts = notifications_cleanup(now=NOW, dry_run=True)
    # then
    assert counts == EXPECTED
    assert {model: model.objects.count() for model in before} == before
    assert DailyCount.objects.count() == 2


def test_cleanup_goes_in_batches_and_reports_each(alice, settings):
    settings.BEACON_CLEANUP_BATCH_SIZE = 2
    for _ in range(5):
        logged(alice)
    logged(alice, status="queued")  # never deleted, whichever batch it falls in
    seen = []
    # when
    with CaptureQueriesContext(connection) as queries:
        counts = notifications_cleanup(now=NOW, progress=seen.append)
    # then
    assert counts["notifications"] == 5
    assert seen == [2, 2, 1]
    assert Notification.objects.count() == 1
    notification_deletes = [q for q in queries if q["sql"].startswith('DELETE FROM "notifications_notification"')]
    assert len(notification_deletes) == 3


def test_the_retention_comes_from_the_setting_or_the_argument(alice, settings):
    logged(alice, at=NOW - timedelta(days=20))
    settings.BEACON_LOG_RETENTION_DAYS = 30
    assert notifications_cleanup(now=NOW)["notifications"] == 0
    assert notifications_cleanup(now=NOW, days=10)["notifications"] == 1


def test_the_cleanup_task_runs_the_service(alice):
    logged(alice, at=timezone.now() - timedelta(days=100))
    assert tasks.notifications_cleanup.delay().get()["notifications"] == 1
    assert Notification.objects.count() == 0


# --- Failure watch --------------------------------------------------------------------


def ended(account, channel: str, *, sent: int = 0, failed: int = 0, at: datetime, failed_as: str = "failed"):
    """Deliveries that finished at `at`: `sent` delivered, `failed` failed."""
    recipient = make_recipient(account)
    notification = Notification.objects.create(account=account, recipient=recipient, channels=[channel])
    rows = [
        Delivery(
            account=account,
            notification=notification,
            channel=channel,
            to="x",
            body="Hi",
            status="delivered",
            sent_at=at,
            delivered_at=at,
        )
        for _ in range(sent)
    ] + [
        Delivery(
            account=account,
            notification=notification,
            channel=channel,
            to="x",
            body="Hi",
            status=failed_as,
            failed_at=at,
        )
        for _ in range(failed)
    ]
    Delivery.objects.bulk_create(rows)


@pytest.fixture
def traffic(alice, bob):
    now = NOW
    recent = now - timedelta(minutes=10)
    ended(alice, "sms", sent=14, failed=4, at=recent)
    ended(alice, "sms", failed=2, at=recent, failed_as="undelivered")  # 6 of 20: 30%
    ended(alice, "sms", failed=30, at=now - timedelta(minutes=61))  # before the window
    ended(alice, "email", failed=19, at=recent)  # all failed, but too few to tell
    ended(bob, "sms", sent=18, failed=2, at=recent, failed_as="bounced")  # 10%
    # not finished, or finished without a provider's word: not counted
    make_delivery(alice, channel="sms", status="queued")
    make_delivery(alice, channel="sms", status="suppressed")
    return now


def test_the_watch_stores_an_alert_per_account_and_channel_over_the_threshold(alice, traffic, caplog):
    # when
    with caplog.at_level(logging.WARNING, logger="beacon.upkeep"):
        result = failure_rates_watch(now=traffic)
    # then
    assert result == {"watched": 2, "alerts": 1}
    assert list(FailureAlert.objects.values_list("account_id", "channel", "failed", "total", "rate")) == [
        (alice.pk, "sms", 6, 20, 0.3)
    ]
    alert = FailureAlert.objects.get()
    assert (alert.window_minutes, alert.detected_at) == (60, traffic)
    assert [r.getMessage() for r in caplog.records] == [
        f"failure rate 30% on sms for account {alice.pk}: 6 of 20 deliveries failed in the last 60 minutes"
    ]


def test_the_watch_reads_the_deliveries_in_one_aggregate_query(traffic):
    with CaptureQueriesContext(connection) as queries:
        failure_rates_watch(now=traffic)
    reads = [q["sql"] for q in queries if 'FROM "notifications_delivery"' in q["sql"]]
    assert len(reads) == 1
    assert "GROUP BY" in reads[0]


def test_each_watch_replaces_the_alerts(traffic, settings):
    failure_rates_watch(now=traffic)
    # a lower bar: bob's 10% counts too
    settings.BEACON_FAILURE_RATE_THRESHOLD = 0.1
    assert failure_rates_watch(now=traffic)["alerts"] == 2
    assert FailureAlert.objects.count() == 2
    # an hour later the failures are out of the window: no alert is left
    assert failure_rates_watch(now=traffic + timedelta(hours=1)) == {"watched": 0, "alerts": 0}
    assert FailureAlert.objects.count() == 0
    assert Heartbeat.objects.get(name="failure-watch").at == traffic + timedelta(hours=1)


@pytest.fixture
def live_service(monkeypatch):
    """A worker that answers and a sweep that just ran: /health/ is otherwise ok."""
    monkeypatch.setattr(celery_app.control, "ping", lambda timeout: [{"celery@test": {"ok": "pong"}}])
    Heartbeat.objects.update_or_create(name="sweep", defaults={"at": timezone.now()})


def test_health_shows_alerts_per_channel_without_account_ids_and_stays_ok(alice, bob, anon_api, live_service, settings):
    # given: two accounts over the threshold on SMS
    now = timezone.now()
    ended(alice, "sms", sent=10, failed=10, at=now - timedelta(minutes=5))
    ended(bob, "sms", sent=15, failed=5, at=now - timedelta(minutes=5))
    failure_rates_watch(now=now)
    # when
    response = anon_api.get(HEALTH_URL)
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["failure_rates"] == {
        "alerting": True,
        "last_run": now.isoformat(),
        "window_minutes": 60,
        "threshold": 0.25,
        "alerts": [{"channel": "sms", "accounts": 2, "failed": 15, "total": 40, "rate": 0.375}],
    }
    content = response.content.decode()
    assert "alice" not in content and "bob" not in content
    assert "account_id" not in content


def test_the_watch_task_runs_the_service(alice):
    ended(alice, "sms", failed=20, at=timezone.now() - timedelta(minutes=1))
    assert tasks.failure_rates_watch.delay().get() == {"watched": 1, "alerts": 1}
    # the names beat's entries use
    assert {"notifications.tasks.failure_rates_watch", "notifications.tasks.notifications_cleanup"} <= set(
        celery_app.tasks
    )
