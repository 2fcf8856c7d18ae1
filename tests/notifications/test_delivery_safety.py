"""Nothing sent twice, nothing lost: stale task messages, broker outages, double resends,
and a provider callback that overtakes the dispatch write."""

from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.utils import timezone

from notifications import services
from notifications.models import Delivery, DeliveryStatus
from notifications.services import delivery_dispatch, delivery_track
from providers.registry import provider_for_channel
from tests.factories import make_template
from tests.notifications.factories import SEND_URL, make_delivery, sms_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(alice, alice_api):
    make_template(alice)
    alice_api.post(SEND_URL, sms_request(), format="json")
    return Delivery.objects.get()


def test_a_stale_duplicate_message_cannot_jump_a_retry_backoff(queued, twilio, settings):
    # given: the first attempt hit a 429 asking for ten minutes' patience
    settings.BEACON_MAX_ATTEMPTS = 4
    twilio.script = [(429, {"Retry-After": "600"}, {"code": 20429, "message": "slow down", "status": 429})]
    with mock.patch("notifications.services.dispatch.enqueue_dispatch") as enqueued:
        assert delivery_dispatch(delivery_id=queued.pk, attempts_before=0) == DeliveryStatus.QUEUED
    # a ten-minute wait is kept in the database for the sweep, not in a task countdown
    assert enqueued.call_count == 0
    queued.refresh_from_db()
    assert (queued.attempt_count, queued.enqueued_at) == (1, None)
    assert (queued.next_attempt_at - timezone.now()).total_seconds() > 590
    # when: a duplicate of the original message (the sweep re-enqueued it) arrives now
    outcome = delivery_dispatch(delivery_id=queued.pk, attempts_before=0)
    # then: it does nothing; only the retry's own message may claim the delivery
    assert outcome == "not-claimed"
    assert twilio.sent_count() == 1
    # the retry's own message, after Retry-After (when the provider's pause is over)
    with time_machine.travel(queued.next_attempt_at + timedelta(seconds=1)):
        assert delivery_dispatch(delivery_id=queued.pk, attempts_before=1) == DeliveryStatus.SENT
    assert twilio.sent_count() == 2


def test_a_broker_outage_after_commit_still_answers_202_and_the_sweep_recovers(
    alice, alice_api, twilio, settings, django_capture_on_commit_callbacks
):
    make_template(alice)
    # given: publishing to the broker fails
    with (
        mock.patch("notifications.tasks.deliveries_dispatch.apply_async", side_effect=ConnectionError("broker down")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = alice_api.post(SEND_URL, sms_request(), format="json")
    # then: the committed request is answered as accepted, and nothing was sent yet
    assert response.status_code == 202
    delivery = Delivery.objects.get()
    assert (delivery.status, twilio.sent_count()) == ("queued", 0)
    # when: the sweep finds it overdue
    settings.BEACON_REQUEUE_GRACE_SECONDS = 1
    later = delivery.next_attempt_at + timedelta(seconds=5)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.deliveries_sweep(now=later)["requeued"] == 1
    # then: it is sent, once
    delivery.refresh_from_db()
    assert (delivery.status, twilio.sent_count()) == ("sent", 1)


def test_resending_twice_queues_one_copy(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    failed = make_delivery(alice, status="failed")
    with django_capture_on_commit_callbacks(execute=True):
        first = alice_api.post(f"/api/v1/notifications/{failed.pk}/resend/")
        second = alice_api.post(f"/api/v1/notifications/{failed.pk}/resend/")
    assert (first.status_code, second.status_code) == (202, 409)
    assert "already resent" in second.json()["message"]
    assert failed.resends.count() == 1
    assert twilio.sent_count() == 1


def test_a_failed_resend_can_be_resent_again(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    failed = make_delivery(alice, status="failed")
    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post(f"/api/v1/notifications/{failed.pk}/resend/")
    Delivery.objects.filter(resent_from=failed).update(status="failed")
    with django_capture_on_commit_callbacks(execute=True):
        again = alice_api.post(f"/api/v1/notifications/{failed.pk}/resend/")
    assert again.status_code == 202
    assert failed.resends.count() == 2


def test_a_callback_that_overtakes_the_dispatch_keeps_its_status_and_error(queued, twilio):
    # given: while the provider call is in flight, an "undelivered" callback lands first
    real_send = provider_for_channel("sms").send

    def send_and_be_overtaken(message):
        result = real_send(message)
        delivery_track(
            delivery=queued,
            status="undelivered",
            source="twilio",
            error_code="30003",
            error_message="Twilio error 30003",
        )
        return result

    with mock.patch.object(provider_for_channel("sms"), "send", side_effect=send_and_be_overtaken):
        outcome = delivery_dispatch(delivery_id=queued.pk)
    # then: the dispatch adds the message id but neither the status nor the error moves back
    queued.refresh_from_db()
    assert outcome == "undelivered"
    assert (queued.status, queued.error_code, queued.error_message) == ("undelivered", "30003", "Twilio error 30003")
    assert queued.provider_message_id.startswith("SM")
    assert queued.sent_at is not None
