"""End to end on the real parts: API -> PostgreSQL -> Redis -> a Celery worker process ->
the real twilio client / Django's SMTP backend -> local doubles -> signed status callback
-> live API."""

import os
import signal
import threading
from datetime import timedelta

import pytest
import requests
from django.utils import timezone
from twilio.request_validator import RequestValidator

from notifications.models import Delivery, DeliveryStatus
from notifications.services import deliveries_sweep
from tests.conftest import TWILIO_TOKEN, client_for
from tests.factories import UserFactory, make_template
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SEND_URL = "/api/v1/notifications/send/"


def status_of(delivery_id) -> str:
    return Delivery.objects.values_list("status", flat=True).get(pk=delivery_id)


@pytest.fixture
def alice_setup(real_worker):
    alice = UserFactory(username="alice")
    make_template(alice)
    return alice, client_for(alice)


def test_sms_reaches_delivered_through_signed_twilio_callbacks(alice_setup, real_worker, twilio_server):
    # given: the double posts "sent" then "delivered", signed, to the live API
    _, api = alice_setup
    twilio_server.callback_statuses = ["sent", "delivered"]
    # when
    response = api.post(
        SEND_URL,
        {
            "channel": "sms",
            "recipient": {"phone": "+14155550123"},
            "template": "reminder",
            "context": {"event_name": "Haircut", "start_time": "at 10:00"},
        },
        format="json",
    )
    # then
    assert response.status_code == 202, response.json()
    delivery_id = response.json()["deliveries"][0]["id"]
    wait_for(lambda: status_of(delivery_id) == DeliveryStatus.DELIVERED, message="delivered")
    twilio_server.wait_for_callbacks()
    assert [c["code"] for c in twilio_server.callbacks] == [204, 204]
    assert twilio_server.sent_count() == 1
    assert twilio_server.requests[0]["Body"] == "Reminder: Haircut at 10:00"
    delivery = Delivery.objects.get(pk=delivery_id)
    assert list(delivery.events.values_list("status", flat=True)) == ["queued", "sending", "sent", "delivered"]
    assert delivery.delivered_at is not None
    attempt = delivery.attempts.get()
    assert (attempt.outcome, attempt.response_code) == ("success", 201)
    assert attempt.duration_ms is not None


def test_email_reaches_the_smtp_server(alice_setup, real_worker, smtp_server_session):
    _, api = alice_setup
    response = api.post(
        SEND_URL,
        {
            "channel": "email",
            "recipient": {"email": "ana@example.com"},
            "template": "reminder",
            "context": {"event_name": "Haircut", "invitee_name": "Ana"},
        },
        format="json",
    )
    assert response.status_code == 202
    delivery_id = response.json()["deliveries"][0]["id"]
    wait_for(lambda: status_of(delivery_id) == DeliveryStatus.SENT, message="sent")
    assert len(smtp_server_session.messages) == 1
    message = smtp_server_session.messages[0]["message"]
    assert message["Subject"] == "Reminder: Haircut"
    assert Delivery.objects.get(pk=delivery_id).provider_message_id == message["Message-ID"]


def test_forged_callback_is_refused_by_the_live_api(alice_setup, real_worker, twilio_server, live_server):
    _, api = alice_setup
    response = api.post(
        SEND_URL, {"channel": "sms", "recipient": {"phone": "+14155550123"}, "message": "Hi"}, format="json"
    )
    delivery_id = response.json()["deliveries"][0]["id"]
    wait_for(lambda: status_of(delivery_id) == DeliveryStatus.SENT, message="sent")
    sid = Delivery.objects.get(pk=delivery_id).provider_message_id
    url = f"{live_server.url}/api/v1/notifications/sms-status-callback/?delivery={delivery_id}"
    params = {"MessageSid": sid, "MessageStatus": "delivered"}
    forged = RequestValidator("not-the-auth-token").compute_signature(url, params)

    refused = requests.post(url, data=params, headers={"X-Twilio-Signature": forged}, timeout=10)
    unsigned = requests.post(url, data=params, timeout=10)

    assert (refused.status_code, unsigned.status_code) == (403, 403)
    assert status_of(delivery_id) == DeliveryStatus.SENT
    assert not Delivery.objects.get(pk=delivery_id).events.filter(status="delivered").exists()
    # and the genuine signature is accepted
    genuine = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    accepted = requests.post(url, data=params, headers={"X-Twilio-Signature": genuine}, timeout=10)
    assert accepted.status_code == 204
    assert status_of(delivery_id) == DeliveryStatus.DELIVERED


def test_retryable_errors_are_retried_by_the_worker(alice_setup, real_worker, twilio_server):
    _, api = alice_setup
    twilio_server.script = [
        (503, {}, {"code": 20500, "message": "down", "status": 503}),
        (429, {"Retry-After": "1"}, {"code": 20429, "message": "slow down", "status": 429}),
    ]
    response = api.post(
        SEND_URL, {"channel": "sms", "recipient": {"phone": "+14155550123"}, "message": "Hi"}, format="json"
    )
    delivery_id = response.json()["deliveries"][0]["id"]
    wait_for(lambda: status_of(delivery_id) == DeliveryStatus.SENT, message="sent after retries")
    attempts = list(Delivery.objects.get(pk=delivery_id).attempts.order_by("number"))
    assert [(a.outcome, a.response_code) for a in attempts] == [
        ("retryable", 503),
        ("retryable", 429),
        ("success", 201),
    ]
    # Retry-After: 1 was honoured between the second and third attempt.
    assert (attempts[2].started_at - attempts[1].finished_at).total_seconds() >= 0.95
    assert twilio_server.sent_count() == 3


def test_invalid_number_fails_once_in_the_worker(alice_setup, real_worker, twilio_server):
    _, api = alice_setup
    response = api.post(
        SEND_URL, {"channel": "sms", "recipient": {"phone": "+15005550001"}, "message": "Hi"}, format="json"
    )
    delivery_id = response.json()["deliveries"][0]["id"]
    wait_for(lambda: status_of(delivery_id) == DeliveryStatus.FAILED, message="failed")
    assert twilio_server.sent_count() == 1
    assert Delivery.objects.get(pk=delivery_id).error_code == "21211"


def test_idempotency_key_sends_once(alice_setup, real_worker, twilio_server):
    _, api = alice_setup
    body = {"channel": "sms", "recipient": {"phone": "+14155550123"}, "message": "Once"}
    first = api.post(SEND_URL, body, format="json", HTTP_IDEMPOTENCY_KEY="booking-42-confirm")
    second = api.post(SEND_URL, body, format="json", HTTP_IDEMPOTENCY_KEY="booking-42-confirm")
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json() == second.json()
    delivery_id = first.json()["deliveries"][0]["id"]
    wait_for(lambda: status_of(delivery_id) == DeliveryStatus.SENT, message="sent")
    assert Delivery.objects.count() == 1
    assert twilio_server.sent_count() == 1


def test_scheduled_delivery_is_sent_when_due_and_two_sweepers_take_it_once(alice_setup, real_worker, twilio_server):
    _, api = alice_setup
    due_at = timezone.now() + timedelta(seconds=2)
    ids = []
    for n in range(20):
        response = api.post(
            SEND_URL,
            {
                "channel": "sms",
                "recipient": {"phone": f"+1415555{n:04d}"},
                "message": f"Later {n}",
                "scheduled_for": due_at.isoformat(),
            },
            format="json",
        )
        assert response.json()["status"] == "scheduled"
        ids.append(response.json()["deliveries"][0]["id"])
    assert deliveries_sweep()["due"] == 0
    assert twilio_server.sent_count() == 0

    # when: two sweepers run at once after the due time (SELECT ... FOR UPDATE SKIP LOCKED)
    wait_for(lambda: timezone.now() > due_at, message="due time")
    results = []
    barrier = threading.Barrier(2)

    def sweep():
        from django.db import connection

        barrier.wait()
        try:
            results.append(deliveries_sweep()["due"])
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # then: every delivery was taken by exactly one sweeper and sent once
    assert sum(results) == 20
    wait_for(lambda: Delivery.objects.filter(pk__in=ids, status="sent").count() == 20, message="all sent")
    assert twilio_server.sent_count() == 20
    assert sorted(r["To"] for r in twilio_server.requests) == sorted(f"+1415555{n:04d}" for n in range(20))


def test_killed_worker_does_not_send_twice(alice_setup, real_worker, twilio_server, settings):
    # given: the provider stalls, so the worker is mid-send when it is killed
    _, api = alice_setup
    twilio_server.delay = 3.0
    response = api.post(
        SEND_URL, {"channel": "sms", "recipient": {"phone": "+14155550123"}, "message": "Once"}, format="json"
    )
    delivery_id = response.json()["deliveries"][0]["id"]
    assert twilio_server.request_received.wait(30)
    not_claimed_before = real_worker.log_text().count("'not-claimed'")
    # when: the pool process running the task is killed
    for pid in real_worker.pool_pids():
        os.kill(pid, signal.SIGKILL)
    # then: the message is redelivered (acks_late + reject_on_worker_lost) and the claim
    # stops the second run from sending
    real_worker.wait_for_log("'not-claimed'", timeout=30, count=not_claimed_before + 1)
    twilio_server.delay = 0.0
    assert twilio_server.sent_count() == 1
    assert status_of(delivery_id) == DeliveryStatus.SENDING
    # and the sweep settles it once its lease is over, without sending again
    settings.BEACON_SENDING_LEASE_SECONDS = 1
    wait_for(lambda: deliveries_sweep()["abandoned"] == 1, timeout=10, message="abandoned delivery settled")
    delivery = Delivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.error_code) == ("failed", "worker_lost")
    assert twilio_server.sent_count() == 1
    assert settings.CELERY_TASK_ACKS_LATE and settings.CELERY_TASK_REJECT_ON_WORKER_LOST
