"""The send path in-process: API -> accept -> dispatch task (eager) -> real client -> double."""

import pytest

from notifications.models import Delivery, DeliveryAttempt, Notification
from tests.factories import make_template
from tests.notifications.factories import sms_request

SEND_URL = "/api/v1/notifications/send/"


@pytest.mark.django_db
def test_templated_sms_goes_through_twilio_client_to_the_double(
    alice, alice_api, twilio, django_capture_on_commit_callbacks
):
    # given
    make_template(alice)
    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(SEND_URL, sms_request(), format="json")
    # then
    assert response.status_code == 202, response.json()
    delivery = Delivery.objects.get()
    assert response.json()["deliveries"] == [
        {
            "id": str(delivery.pk),
            "channel": "sms",
            "to": "+14155550123",
            "status": "queued",
            "encoding": "GSM-7",
            "segments": 1,
        }
    ]
    assert twilio.requests == [
        {
            "To": "+14155550123",
            "From": "+15005550006",
            "Body": "Reminder: Haircut at 10:00",
            "StatusCallback": f"http://127.0.0.1:8000/api/v1/notifications/sms-status-callback/?delivery={delivery.pk}",
        }
    ]
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    assert delivery.provider == "twilio"
    assert delivery.provider_message_id.startswith("SM")
    attempt = DeliveryAttempt.objects.get()
    assert (attempt.number, attempt.outcome, attempt.response_code) == (1, "success", 201)
    assert list(delivery.events.values_list("status", flat=True)) == ["queued", "sending", "sent"]


@pytest.mark.django_db
def test_templated_email_reaches_a_real_smtp_server(alice, alice_api, smtp, django_capture_on_commit_callbacks):
    make_template(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            SEND_URL,
            {
                "channel": "email",
                "recipient": {"email": "ana@example.com"},
                "template": "reminder",
                "context": {"event_name": "<Cut & Style>", "invitee_name": "Ana"},
            },
            format="json",
        )
    assert response.status_code == 202, response.json()
    assert len(smtp.messages) == 1
    received = smtp.messages[0]
    assert received["rcpt_tos"] == ["ana@example.com"]
    message = received["message"]
    assert message["Subject"] == "Reminder: <Cut & Style>"
    assert message.get_body(("plain",)).get_content().strip() == "Hi Ana, <Cut & Style> is soon."
    # HTML is autoescaped: the context cannot inject markup.
    assert "<b>&lt;Cut &amp; Style&gt;</b>" in message.get_body(("html",)).get_content()
    delivery = Delivery.objects.get()
    assert delivery.status == "sent"
    assert delivery.provider_message_id == message["Message-ID"]


@pytest.mark.django_db
def test_invalid_number_fails_at_once_without_retry(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    make_template(alice)
    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post(SEND_URL, sms_request(recipient={"phone": "+15005550001"}), format="json")
    delivery = Delivery.objects.get()
    assert delivery.status == "failed"
    assert delivery.error_code == "21211"
    assert twilio.sent_count() == 1
    assert list(delivery.attempts.values_list("outcome", "response_code")) == [("permanent", 400)]


@pytest.mark.django_db
def test_429_and_503_are_retried_until_sent(
    alice, alice_api, twilio, django_capture_on_commit_callbacks, settings, monkeypatch
):
    settings.BEACON_MAX_ATTEMPTS = 4
    # Eager tasks ignore countdowns: the retry runs at once, inside the pause the 429 sets
    # for every worker (tests/notifications/test_failover.py covers the pause).
    monkeypatch.setattr("notifications.services.dispatch.provider_pause", lambda *args, **kwargs: None)
    make_template(alice)
    twilio.script = [
        (503, {}, {"code": 20500, "message": "Internal error", "status": 503}),
        (429, {"Retry-After": "7"}, {"code": 20429, "message": "Too many requests", "status": 429}),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post(SEND_URL, sms_request(), format="json")
    delivery = Delivery.objects.get()
    assert delivery.status == "sent"
    assert twilio.sent_count() == 3
    attempts = list(delivery.attempts.values_list("outcome", "response_code", "retry_after_seconds"))
    assert attempts == [("retryable", 503, None), ("retryable", 429, 7.0), ("success", 201, None)]
    retry_events = list(delivery.events.filter(status="queued", from_status="sending").values_list("detail", flat=True))
    assert len(retry_events) == 2
    # Retry-After is honoured: the second retry waits at least 7 seconds.
    assert float(retry_events[1].split("retry in ")[1].split("s:")[0]) >= 7.0


@pytest.mark.django_db
def test_gives_up_after_max_attempts(alice, alice_api, twilio, django_capture_on_commit_callbacks, settings):
    settings.BEACON_MAX_ATTEMPTS = 3
    make_template(alice)
    twilio.script = [(503, {}, {"code": 20500, "message": "down", "status": 503})] * 5
    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post(SEND_URL, sms_request(), format="json")
    delivery = Delivery.objects.get()
    assert delivery.status == "failed"
    assert delivery.attempt_count == 3
    assert twilio.sent_count() == 3
    assert delivery.events.last().detail.startswith("gave up after retries")


@pytest.mark.django_db
def test_bad_input_writes_nothing_and_sends_nothing(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    make_template(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(SEND_URL, sms_request(recipient={"phone": "4155550123"}), format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"recipient": {"phone": ["Enter the number in E.164 form, e.g. +14155550123."]}}
    assert Notification.objects.count() == 0
    assert twilio.sent_count() == 0
