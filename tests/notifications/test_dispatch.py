"""delivery_dispatch: the claim, the attempt record, and what an error leaves behind."""

import pytest
from django.utils import timezone

from notifications.models import FINAL_STATUSES, PROGRESS_RANK, Delivery, DeliveryStatus
from notifications.services import can_move, delivery_dispatch, delivery_track
from providers.base import OutboundMessage, Provider, SendResult
from providers.registry import provider_for_channel
from tests.factories import make_template
from tests.notifications.factories import SEND_URL, sms_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(alice, alice_api):
    """A delivery accepted and queued; its task has not run (on_commit is not executed)."""
    make_template(alice)
    alice_api.post(SEND_URL, sms_request(), format="json")
    delivery = Delivery.objects.get()
    assert delivery.status == "queued"
    return delivery


class ExplodingProvider(Provider):
    kind = "exploding"
    channels = ("sms",)

    def post_request(self, message: OutboundMessage) -> SendResult:
        raise RuntimeError("adapter bug")


def test_dispatching_twice_sends_once(queued, twilio):
    # when
    first = delivery_dispatch(delivery_id=queued.pk)
    second = delivery_dispatch(delivery_id=str(queued.pk))
    # then
    assert (first, second) == ("sent", "not-claimed")
    assert twilio.sent_count() == 1
    queued.refresh_from_db()
    assert queued.status == "sent"
    assert queued.attempt_count == 1
    assert queued.attempts.count() == 1
    assert queued.claimed_at is not None


def test_the_task_runs_the_same_claim(queued, twilio):
    from notifications.tasks import delivery_dispatch as task

    assert task.delay(str(queued.pk)).get() == "sent"
    assert task.delay(str(queued.pk)).get() == "not-claimed"
    assert twilio.sent_count() == 1


def test_an_unknown_delivery_is_not_claimed(db, twilio):
    import uuid

    assert delivery_dispatch(delivery_id=uuid.uuid4()) == "not-claimed"
    assert twilio.sent_count() == 0


@pytest.mark.parametrize("status", ["scheduled", "sending", "sent", "cancelled", "failed"])
def test_only_a_queued_delivery_is_claimed(queued, twilio, status):
    Delivery.objects.filter(pk=queued.pk).update(status=status)
    assert delivery_dispatch(delivery_id=queued.pk) == "not-claimed"
    queued.refresh_from_db()
    assert (queued.status, queued.attempt_count) == (status, 0)
    assert queued.attempts.count() == 0
    assert twilio.sent_count() == 0


def test_an_unexpected_provider_exception_is_a_retryable_attempt(
    queued, monkeypatch, django_capture_on_commit_callbacks
):
    # given
    monkeypatch.setattr("providers.registry.provider_build", lambda kind, config=None: ExplodingProvider(timeout=1))
    before = timezone.now()
    # when
    with django_capture_on_commit_callbacks() as callbacks:
        result = delivery_dispatch(delivery_id=queued.pk)
    # then
    assert result == "queued"
    queued.refresh_from_db()
    assert queued.status == "queued"
    assert queued.next_attempt_at > before
    assert queued.error_message == "Unexpected error: RuntimeError"
    attempt = queued.attempts.get()
    assert (attempt.number, attempt.provider, attempt.outcome) == (1, "exploding", "retryable")
    assert attempt.error == "Unexpected error: RuntimeError"
    assert attempt.finished_at is not None
    assert list(queued.events.values_list("from_status", "status")) == [
        ("", "queued"),
        ("queued", "sending"),
        ("sending", "queued"),
    ]
    # the retry is enqueued after commit
    assert len(callbacks) == 1


def test_an_unexpected_exception_on_the_last_attempt_fails_the_delivery(queued, monkeypatch):
    monkeypatch.setattr("providers.registry.provider_build", lambda kind, config=None: ExplodingProvider(timeout=1))
    Delivery.objects.filter(pk=queued.pk).update(max_attempts=1)
    assert delivery_dispatch(delivery_id=queued.pk) == "failed"
    queued.refresh_from_db()
    assert queued.status == "failed"
    assert queued.failed_at is not None
    assert queued.events.last().detail == "gave up after retries: Unexpected error: RuntimeError"


def test_a_misconfigured_channel_fails_at_once(queued, twilio, settings):
    # `settings` after `twilio`: its changes are undone before twilio's override is.
    settings.BEACON_SMS_PROVIDER = "no-such-provider"
    assert delivery_dispatch(delivery_id=queued.pk) == "failed"
    queued.refresh_from_db()
    assert queued.status == "failed"
    assert queued.error_message == "BEACON_SMS_PROVIDER='no-such-provider' is not a provider for sms."
    attempt = queued.attempts.get()
    assert (attempt.provider, attempt.outcome) == ("no-such-provider", "permanent")
    assert twilio.sent_count() == 0


def test_a_callback_that_overtakes_the_dispatch_keeps_its_status(queued, twilio, monkeypatch):
    # given: Twilio reports "delivered" while our worker is still inside the provider call
    real_send = provider_for_channel("sms").send

    def send_then_callback(message):
        result = real_send(message)
        delivery_track(delivery=Delivery(pk=queued.pk), status="delivered", source="twilio")
        return result

    provider = provider_for_channel("sms")
    monkeypatch.setattr(provider, "send", send_then_callback)
    # when
    result = delivery_dispatch(delivery_id=queued.pk)
    # then
    assert result == "delivered"
    queued.refresh_from_db()
    assert queued.status == "delivered"
    assert queued.provider == "twilio"
    assert queued.provider_message_id.startswith("SM")
    assert queued.sent_at is not None
    assert queued.attempts.get().outcome == "success"
    assert list(queued.events.values_list("status", flat=True)) == ["queued", "sending", "delivered"]


PROGRESS = list(PROGRESS_RANK)


@pytest.mark.parametrize("current", PROGRESS)
@pytest.mark.parametrize("new", [*PROGRESS, *sorted(FINAL_STATUSES)])
def test_can_move_from_a_progress_status(current, new):
    if new in FINAL_STATUSES:
        expected = True
    else:
        expected = PROGRESS_RANK[new] > PROGRESS_RANK[current]
    assert can_move(current, new) is expected


@pytest.mark.parametrize("current", sorted(FINAL_STATUSES))
@pytest.mark.parametrize("new", list(DeliveryStatus))
def test_a_final_status_never_changes(current, new):
    assert can_move(current, new) is False


def test_can_move_examples():
    assert can_move("sent", "delivered") is True
    assert can_move("delivered", "sent") is False
    assert can_move("delivered", "delivered") is False
    assert can_move("clicked", "opened") is False
    assert can_move("delivered", "failed") is True  # a final report still lands
    assert can_move("failed", "delivered") is False
