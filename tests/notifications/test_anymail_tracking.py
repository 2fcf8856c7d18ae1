"""ESP tracking through django-anymail: SendGrid's event webhook, basic-auth protected,
updates the email delivery whose provider_message_id matches."""

import base64
import json
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.test import override_settings

from notifications.models import Delivery, DeliveryEvent
from tests.notifications.factories import SEND_URL, email_request, make_delivery

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

TRACKING_URL = "/anymail/sendgrid/tracking/"
WEBHOOK_SECRET = "hookuser:hook-secret"
TIMESTAMP = 1_700_000_000
OCCURRED = datetime.fromtimestamp(TIMESTAMP, tz=UTC)


@contextmanager
def webhook_secret():
    """Basic auth for anymail's webhooks, on top of whatever ANYMAIL the send used."""
    with override_settings(ANYMAIL={**settings.ANYMAIL, "WEBHOOK_SECRET": WEBHOOK_SECRET}):
        yield


@pytest.fixture
def secured():
    with webhook_secret():
        yield


def basic_auth(credentials: str) -> dict:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(credentials.encode()).decode()}


def post_events(client, events, *, credentials: str | None = WEBHOOK_SECRET):
    headers = basic_auth(credentials) if credentials is not None else {}
    return client.post(TRACKING_URL, data=json.dumps(events), content_type="application/json", **headers)


def sendgrid_event(event: str, *, smtp_id: str = "", anymail_id: str = "", **extra) -> dict:
    payload = {
        "email": "ana@example.com",
        "timestamp": TIMESTAMP,
        "event": event,
        "sg_event_id": f"evt-{event}",
        "sg_message_id": "sg-message-1",
        **extra,
    }
    if smtp_id:
        payload["smtp-id"] = smtp_id
    if anymail_id:
        payload["anymail_id"] = anymail_id
    return payload


@pytest.fixture
def smtp_email(alice, alice_api, smtp, django_capture_on_commit_callbacks):
    """An email sent over SMTP: its provider_message_id is the Message-ID header."""
    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post(SEND_URL, email_request(), format="json")
    delivery = Delivery.objects.get()
    assert delivery.status == "sent"
    assert delivery.provider_message_id.startswith("<")
    with webhook_secret():
        yield delivery


@pytest.fixture
def sendgrid_email(alice, alice_api, sendgrid, django_capture_on_commit_callbacks):
    """An email sent through anymail's SendGrid backend: its provider_message_id is the anymail_id."""
    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post(SEND_URL, email_request(), format="json")
    delivery = Delivery.objects.get()
    assert delivery.status == "sent"
    assert sendgrid.sent_count() == 1
    assert (
        delivery.provider_message_id == sendgrid.requests[0]["json"]["personalizations"][0]["custom_args"]["anymail_id"]
    )
    with webhook_secret():
        yield delivery


def test_a_delivered_event_by_anymail_id_marks_the_delivery_delivered(sendgrid_email, anon_api):
    # when
    response = post_events(
        anon_api, [sendgrid_event("delivered", anymail_id=sendgrid_email.provider_message_id, response="250 OK")]
    )
    # then
    assert response.status_code == 200
    sendgrid_email.refresh_from_db()
    assert sendgrid_email.status == "delivered"
    assert sendgrid_email.delivered_at == OCCURRED
    event = sendgrid_email.events.last()
    assert (event.from_status, event.status, event.source, event.occurred_at) == (
        "sent",
        "delivered",
        "anymail:sendgrid",
        OCCURRED,
    )
    assert event.payload == {"event_type": "delivered", "event_id": "evt-delivered", "reject_reason": ""}


def test_a_delivered_event_by_smtp_id_marks_the_delivery_delivered(smtp_email, anon_api):
    response = post_events(anon_api, [sendgrid_event("delivered", smtp_id=smtp_email.provider_message_id)])
    assert response.status_code == 200
    smtp_email.refresh_from_db()
    assert smtp_email.status == "delivered"


def test_a_bounce_marks_the_delivery_bounced_with_the_reason(sendgrid_email, anon_api):
    response = post_events(
        anon_api,
        [
            sendgrid_event(
                "bounce",
                anymail_id=sendgrid_email.provider_message_id,
                reason="550 5.1.1 The email account that you tried to reach does not exist",
                status="5.1.1",
                type="bounce",
            )
        ],
    )
    assert response.status_code == 200
    sendgrid_email.refresh_from_db()
    assert sendgrid_email.status == "bounced"
    assert sendgrid_email.failed_at == OCCURRED
    assert sendgrid_email.error_message == "550 5.1.1 The email account that you tried to reach does not exist"
    event = sendgrid_email.events.last()
    assert (event.from_status, event.status) == ("sent", "bounced")
    assert event.detail == "550 5.1.1 The email account that you tried to reach does not exist"


def test_a_dropped_message_is_failed_with_the_reject_reason(sendgrid_email, anon_api):
    post_events(
        anon_api,
        [sendgrid_event("dropped", anymail_id=sendgrid_email.provider_message_id, reason="Bounced Address")],
    )
    sendgrid_email.refresh_from_db()
    assert sendgrid_email.status == "failed"
    assert sendgrid_email.error_message == "bounced"


def test_a_batch_is_applied_in_order_and_only_forward(sendgrid_email, anon_api):
    message_id = sendgrid_email.provider_message_id
    events = [
        sendgrid_event("processed", anymail_id=message_id),
        sendgrid_event("delivered", anymail_id=message_id),
        sendgrid_event("open", anymail_id=message_id),
        sendgrid_event("delivered", anymail_id=message_id),
        sendgrid_event("click", anymail_id=message_id, url="https://example.com"),
        sendgrid_event("open", anymail_id=message_id),
    ]
    assert post_events(anon_api, events).status_code == 200
    sendgrid_email.refresh_from_db()
    assert sendgrid_email.status == "clicked"
    assert (sendgrid_email.delivered_at, sendgrid_email.opened_at, sendgrid_email.clicked_at) == (
        OCCURRED,
        OCCURRED,
        OCCURRED,
    )
    assert list(sendgrid_email.events.filter(source="anymail:sendgrid").values_list("status", flat=True)) == [
        "delivered",
        "opened",
        "clicked",
    ]


def test_only_the_matching_delivery_changes(alice, sendgrid_email, anon_api):
    other = make_delivery(alice, channel="email", status="sent", provider_message_id="other-message-id")
    post_events(anon_api, [sendgrid_event("delivered", anymail_id=sendgrid_email.provider_message_id)])
    other.refresh_from_db()
    assert other.status == "sent"
    assert other.events.count() == 0


def test_an_sms_with_the_same_message_id_is_not_touched(alice, anon_api, secured):
    sms = make_delivery(alice, channel="sms", status="sent", provider_message_id="shared-id")
    post_events(anon_api, [sendgrid_event("delivered", anymail_id="shared-id")])
    sms.refresh_from_db()
    assert sms.status == "sent"


def test_an_unknown_message_changes_nothing(sendgrid_email, anon_api):
    events_before = DeliveryEvent.objects.count()
    response = post_events(anon_api, [sendgrid_event("delivered", anymail_id="unknown-id")])
    assert response.status_code == 200
    sendgrid_email.refresh_from_db()
    assert sendgrid_email.status == "sent"
    assert DeliveryEvent.objects.count() == events_before


@pytest.mark.parametrize("credentials", ["hookuser:wrong", "someone:hook-secret", None], ids=["wrong", "user", "none"])
def test_wrong_basic_auth_is_refused_and_changes_nothing(sendgrid_email, anon_api, credentials):
    events_before = DeliveryEvent.objects.count()
    response = post_events(
        anon_api,
        [sendgrid_event("delivered", anymail_id=sendgrid_email.provider_message_id)],
        credentials=credentials,
    )
    assert response.status_code == 403
    assert response.json() == {"message": "Invalid webhook credentials or signature.", "errors": {}}
    sendgrid_email.refresh_from_db()
    assert sendgrid_email.status == "sent"
    assert sendgrid_email.delivered_at is None
    assert DeliveryEvent.objects.count() == events_before


def test_without_a_webhook_secret_esp_events_are_refused(alice, anon_api):
    # given: an email delivery and no ANYMAIL_WEBHOOK_SECRET configured
    delivery = make_delivery(alice, channel="email", provider_message_id="msg-1")
    # when: someone posts a bounce for it, with or without credentials
    with override_settings(ANYMAIL={}):
        open_door = post_events(anon_api, [sendgrid_event("bounce", anymail_id="msg-1")], credentials=None)
        guessed = post_events(anon_api, [sendgrid_event("bounce", anymail_id="msg-1")])
    # then
    assert (open_door.status_code, guessed.status_code) == (403, 403)
    assert "ANYMAIL_WEBHOOK_SECRET" in open_door.json()["message"]
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    assert not DeliveryEvent.objects.filter(delivery=delivery).exists()


def test_an_event_is_matched_by_the_delivery_id_sent_as_metadata(alice, anon_api, secured):
    # given: the ESP's event arrives before the dispatch wrote the provider message id
    delivery = make_delivery(alice, channel="email", status="sending")
    # when
    response = post_events(
        anon_api, [sendgrid_event("delivered", anymail_id="esp-id-1", beacon_delivery=str(delivery.pk))]
    )
    # then
    assert response.status_code == 200
    delivery.refresh_from_db()
    assert delivery.status == "delivered"


def test_metadata_naming_a_delivery_with_another_message_id_is_not_trusted(alice, anon_api, secured):
    delivery = make_delivery(alice, channel="email", provider_message_id="real-id")
    post_events(anon_api, [sendgrid_event("bounce", anymail_id="other-id", beacon_delivery=str(delivery.pk))])
    delivery.refresh_from_db()
    assert delivery.status == "sent"
