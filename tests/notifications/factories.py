"""Rows for notification tests, written directly (no render, no send)."""

from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from twilio.request_validator import RequestValidator

from notifications.models import Delivery, Notification, Recipient
from tests.conftest import TWILIO_TOKEN

SEND_URL = "/api/v1/notifications/send/"
LOGS_URL = "/api/v1/notifications/logs/"
CALLBACK_PATH = "/api/v1/notifications/sms-status-callback/"


def make_recipient(account, **fields) -> Recipient:
    fields.setdefault("email", "ana@example.com")
    fields.setdefault("phone", "+14155550123")
    return Recipient.objects.create(account=account, **fields)


def make_delivery(
    account,
    *,
    channel: str = "sms",
    status: str = "sent",
    recipient: Recipient | None = None,
    template=None,
    to: str = "",
    created_at: datetime | None = None,
    **fields,
) -> Delivery:
    recipient = recipient or make_recipient(account)
    notification = Notification.objects.create(
        account=account,
        recipient=recipient,
        template=template,
        template_version=template.current_version if template else None,
        channels=[channel],
    )
    delivery = Delivery.objects.create(
        account=account,
        notification=notification,
        channel=channel,
        to=to or (recipient.phone if channel == "sms" else recipient.email),
        subject="Hello" if channel == "email" else "",
        body="Hello there",
        status=status,
        **fields,
    )
    if created_at is not None:
        Delivery.objects.filter(pk=delivery.pk).update(created_at=created_at)
        delivery.refresh_from_db()
    return delivery


def sms_request(**overrides) -> dict:
    body = {
        "channel": "sms",
        "recipient": {"phone": "+14155550123", "name": "Ana"},
        "template": "reminder",
        "context": {"event_name": "Haircut", "start_time": "at 10:00"},
    }
    body.update(overrides)
    return body


def email_request(**overrides) -> dict:
    body = {
        "channel": "email",
        "recipient": {"email": "ana@example.com", "name": "Ana"},
        "subject": "Your booking",
        "message": "See you at 10:00.",
    }
    body.update(overrides)
    return body


def twilio_signature(path: str, params: dict, *, base_url: str | None = None, token: str = TWILIO_TOKEN) -> str:
    return RequestValidator(token).compute_signature((base_url or settings.PUBLIC_BASE_URL) + path, params)


def post_status_callback(client, params: dict, *, query: str = "", signature: str | None = None):
    """POST a Twilio status callback, signed correctly unless a signature is given."""
    path = CALLBACK_PATH + (f"?{query}" if query else "")
    if signature is None:
        signature = twilio_signature(path, params)
    headers = {"HTTP_X_TWILIO_SIGNATURE": signature} if signature else {}
    return client.post(path, data=urlencode(params), content_type="application/x-www-form-urlencoded", **headers)
