"""The periodic sweep: scheduled deliveries fall due, lost task messages are re-enqueued,
and deliveries abandoned mid-send are settled without sending twice."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from notifications.models import Delivery, DeliveryAttempt, DeliveryEvent
from notifications.services import deliveries_sweep
from tests.factories import make_template
from tests.notifications.factories import SEND_URL, sms_request

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _template(alice):
    make_template(alice)


def test_a_future_send_is_scheduled_and_nothing_is_sent(alice_api, twilio, django_capture_on_commit_callbacks):
    # given
    when = timezone.now() + timedelta(hours=2)
    # when
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = alice_api.post(SEND_URL, sms_request(scheduled_for=when.isoformat()), format="json")
    # then
    assert response.status_code == 202
    assert response.json()["status"] == "scheduled"
    assert response.json()["deliveries"][0]["status"] == "scheduled"
    delivery = Delivery.objects.get()
    assert delivery.status == "scheduled"
    assert delivery.next_attempt_at == when
    assert delivery.notification.scheduled_for == when
    assert callbacks == []
    assert twilio.sent_count() == 0


def test_the_sweep_leaves_what_is_not_due_yet(alice_api, twilio, django_capture_on_commit_callbacks):
    when = timezone.now() + timedelta(hours=2)
    alice_api.post(SEND_URL, sms_request(scheduled_for=when.isoformat()), format="json")
    with django_capture_on_commit_callbacks(execute=True):
        counts = deliveries_sweep(now=when - timedelta(seconds=1))
    assert counts == {"due": 0, "requeued": 0, "abandoned": 0}
    assert Delivery.objects.get().status == "scheduled"
    assert twilio.sent_count() == 0


def test_the_sweep_queues_and_sends_what_is_due(alice_api, twilio, django_capture_on_commit_callbacks):
    # given
    when = timezone.now() + timedelta(hours=2)
    alice_api.post(SEND_URL, sms_request(scheduled_for=when.isoformat()), format="json")
    # when
    with django_capture_on_commit_callbacks(execute=True):
        counts = deliveries_sweep(now=when + timedelta(seconds=5))
    # then
    assert counts == {"due": 1, "requeued": 0, "abandoned": 0}
    delivery = Delivery.objects.get()
    assert delivery.status == "sent"
    assert twilio.sent_count() == 1
    assert [r["Body"] for r in twilio.requests] == ["Reminder: Haircut at 10:00"]
    assert list(delivery.events.values_list("from_status", "status", "source")) == [
        ("", "scheduled", "api"),
        ("scheduled", "queued", "schedule"),
        ("queued", "sending", "dispatch"),
        ("sending", "sent", "dispatch"),
    ]
    # A second sweep finds nothing more to do.
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep(now=when + timedelta(seconds=10)) == {"due": 0, "requeued": 0, "abandoned": 0}
    assert twilio.sent_count() == 1


def test_a_queued_delivery_whose_task_was_lost_is_requeued(
    alice_api, twilio, settings, django_capture_on_commit_callbacks
):
    # given: accepted, but its task message never reached a worker (on_commit not run)
    alice_api.post(SEND_URL, sms_request(), format="json")
    delivery = Delivery.objects.get()
    assert delivery.status == "queued"
    grace = timedelta(seconds=settings.BEACON_REQUEUE_GRACE_SECONDS)
    # when: within the grace period nothing is touched
    with django_capture_on_commit_callbacks(execute=True):
        early = deliveries_sweep(now=delivery.next_attempt_at + grace - timedelta(seconds=1))
    assert early == {"due": 0, "requeued": 0, "abandoned": 0}
    assert twilio.sent_count() == 0
    # when: after it, the sweep enqueues it again
    with django_capture_on_commit_callbacks(execute=True):
        late = deliveries_sweep(now=delivery.next_attempt_at + grace + timedelta(seconds=1))
    # then
    assert late == {"due": 0, "requeued": 1, "abandoned": 0}
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    assert delivery.attempt_count == 1
    assert twilio.sent_count() == 1


def test_a_delivery_stuck_in_sending_past_its_lease_fails_and_is_not_resent(
    alice_api, twilio, settings, django_capture_on_commit_callbacks
):
    # given: a worker claimed the delivery, started the attempt, then died
    alice_api.post(SEND_URL, sms_request(), format="json")
    delivery = Delivery.objects.get()
    claimed_at = timezone.now() - timedelta(seconds=settings.BEACON_SENDING_LEASE_SECONDS + 1)
    Delivery.objects.filter(pk=delivery.pk).update(status="sending", claimed_at=claimed_at, attempt_count=1)
    DeliveryAttempt.objects.create(delivery=delivery, number=1, provider="twilio", started_at=claimed_at)
    # when
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        counts = deliveries_sweep()
    # then
    assert counts == {"due": 0, "requeued": 0, "abandoned": 1}
    assert callbacks == []
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert delivery.error_code == "worker_lost"
    assert delivery.failed_at is not None
    attempt = delivery.attempts.get()
    assert (attempt.outcome, attempt.error) == ("permanent", "worker lost; outcome unknown")
    event = delivery.events.last()
    assert (event.from_status, event.status, event.source) == ("sending", "failed", "sweep")
    assert twilio.sent_count() == 0
    # A later sweep leaves it alone.
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep() == {"due": 0, "requeued": 0, "abandoned": 0}
    assert twilio.sent_count() == 0


def test_a_delivery_sending_within_its_lease_is_left_alone(
    alice_api, twilio, settings, django_capture_on_commit_callbacks
):
    alice_api.post(SEND_URL, sms_request(), format="json")
    delivery = Delivery.objects.get()
    claimed_at = timezone.now() - timedelta(seconds=settings.BEACON_SENDING_LEASE_SECONDS - 5)
    Delivery.objects.filter(pk=delivery.pk).update(status="sending", claimed_at=claimed_at)
    events_before = DeliveryEvent.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep() == {"due": 0, "requeued": 0, "abandoned": 0}
    delivery.refresh_from_db()
    assert delivery.status == "sending"
    assert DeliveryEvent.objects.count() == events_before
    assert twilio.sent_count() == 0


def test_the_sweep_takes_at_most_a_batch(alice_api, twilio, settings, django_capture_on_commit_callbacks):
    settings.BEACON_SWEEP_BATCH_SIZE = 2
    when = timezone.now() + timedelta(hours=1)
    for _ in range(3):
        alice_api.post(SEND_URL, sms_request(scheduled_for=when.isoformat()), format="json")
    with django_capture_on_commit_callbacks(execute=True):
        first = deliveries_sweep(now=when + timedelta(seconds=1))
    assert first["due"] == 2
    assert twilio.sent_count() == 2
    with django_capture_on_commit_callbacks(execute=True):
        second = deliveries_sweep(now=when + timedelta(seconds=2))
    assert second["due"] == 1
    assert twilio.sent_count() == 3
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}


def test_sweep_deliveries_command_reports_counts(alice_api, twilio, django_capture_on_commit_callbacks):
    from io import StringIO

    when = timezone.now() - timedelta(seconds=1)
    alice_api.post(SEND_URL, sms_request(scheduled_for=(timezone.now() + timedelta(seconds=30)).isoformat()))
    Delivery.objects.update(next_attempt_at=when)
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("sweep_deliveries", stdout=out)
    assert out.getvalue().strip() == "due: 1, requeued: 0, abandoned: 0"
    assert twilio.sent_count() == 1
