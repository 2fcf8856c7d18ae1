"""The operator console: every page loads, and the actions go through the services."""

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from accounts.services import api_token_issue
from notifications.models import Delivery, DeliveryAttempt, DeliveryEvent, IdempotencyKey
from tests.notifications.factories import make_delivery

pytestmark = pytest.mark.django_db


@pytest.fixture
def delivery(alice):
    delivery = make_delivery(alice, status="failed", provider="twilio", error_message="Twilio answered HTTP 503")
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        provider="twilio",
        outcome="retryable",
        started_at=timezone.now(),
        response_code=503,
        error="Twilio answered HTTP 503",
    )
    DeliveryEvent.objects.create(
        delivery=delivery,
        from_status="sending",
        status="failed",
        source="dispatch",
        detail="gave up after retries",
        occurred_at=timezone.now(),
    )
    IdempotencyKey.objects.create(
        account=alice,
        key="booking-1",
        request_hash="0" * 64,
        notification=delivery.notification,
        response_status=202,
        response_body={"id": str(delivery.notification_id)},
    )
    api_token_issue(username="alice", name="frontend")
    return delivery


def changelist(model: str) -> str:
    return reverse(f"admin:{model}_changelist")


def change(model: str, pk) -> str:
    return reverse(f"admin:{model}_change", args=[pk])


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]


@pytest.mark.parametrize(
    "model",
    [
        "notifications_delivery",
        "notifications_notification",
        "notifications_recipient",
        "notifications_deliveryattempt",
        "notifications_deliveryevent",
        "notifications_idempotencykey",
        "accounts_apitoken",
    ],
)
def test_changelists_load(admin_client, delivery, model):
    response = admin_client.get(changelist(model))
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


def test_changelist_search_and_filters(admin_client, delivery):
    assert admin_client.get(changelist("notifications_delivery"), {"q": "+14155550123"}).context["cl"].result_count == 1
    assert admin_client.get(changelist("notifications_delivery"), {"status": "sent"}).context["cl"].result_count == 0
    assert admin_client.get(changelist("notifications_delivery"), {"status": "failed"}).context["cl"].result_count == 1


def test_delivery_change_page_shows_attempts_and_events(admin_client, delivery):
    response = admin_client.get(change("notifications_delivery", delivery.pk))
    assert response.status_code == 200
    inline_models = [formset.opts.model for formset in response.context["inline_admin_formsets"]]
    assert inline_models == [DeliveryAttempt, DeliveryEvent]
    content = response.content.decode()
    assert "Twilio answered HTTP 503" in content
    assert "gave up after retries" in content


def test_delivery_fields_are_read_only(admin_client, delivery):
    response = admin_client.post(
        change("notifications_delivery", delivery.pk), {"status": "delivered", "to": "+19999999999"}
    )
    assert response.status_code in (200, 302)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.to) == ("failed", "+14155550123")


@pytest.mark.parametrize(
    ("model", "obj"),
    [
        ("notifications_notification", lambda d: d.notification),
        ("notifications_recipient", lambda d: d.notification.recipient),
        ("notifications_deliveryattempt", lambda d: d.attempts.get()),
        ("notifications_deliveryevent", lambda d: d.events.get()),
        ("notifications_idempotencykey", lambda d: IdempotencyKey.objects.get()),
        ("accounts_apitoken", lambda d: d.account.api_tokens.get()),
    ],
)
def test_change_pages_load(admin_client, delivery, model, obj):
    response = admin_client.get(change(model, obj(delivery).pk))
    assert response.status_code == 200


def test_nothing_is_added_by_hand(admin_client, delivery):
    for model in (
        "notifications_delivery",
        "notifications_notification",
        "notifications_deliveryattempt",
        "notifications_deliveryevent",
        "notifications_idempotencykey",
        "accounts_apitoken",
    ):
        assert admin_client.get(reverse(f"admin:{model}_add")).status_code == 403, model


def test_the_resend_action_resends_a_failed_delivery(
    admin_client, delivery, twilio, django_capture_on_commit_callbacks
):
    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            changelist("notifications_delivery"), {"action": "resend", "_selected_action": [str(delivery.pk)]}
        )
    # then
    assert response.status_code == 302
    assert messages_of(response) == [("success", "Resent 1 delivery.")]
    copy = Delivery.objects.get(resent_from=delivery)
    assert copy.status == "sent"
    assert copy.events.first().source == "admin"
    assert twilio.sent_count() == 1


def test_the_resend_action_refuses_a_sent_delivery(admin_client, alice, twilio, django_capture_on_commit_callbacks):
    sent = make_delivery(alice, status="sent")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            changelist("notifications_delivery"), {"action": "resend", "_selected_action": [str(sent.pk)]}
        )
    assert messages_of(response) == [
        (
            "warning",
            f"{sent.pk}: Only a delivery that is expired, failed, undelivered can be resent; this one is sent.",
        )
    ]
    assert Delivery.objects.count() == 1
    assert twilio.sent_count() == 0


def test_the_cancel_action_cancels_a_queued_delivery(admin_client, alice, twilio, django_capture_on_commit_callbacks):
    # given
    queued = make_delivery(alice, status="queued", next_attempt_at=timezone.now())
    # when
    response = admin_client.post(
        changelist("notifications_delivery"), {"action": "cancel", "_selected_action": [str(queued.pk)]}
    )
    # then
    assert messages_of(response) == [("success", "Cancelled 1 delivery.")]
    queued.refresh_from_db()
    assert (queued.status, queued.next_attempt_at) == ("cancelled", None)
    event = queued.events.get()
    assert (event.from_status, event.status, event.source) == ("queued", "cancelled", "admin")
    # A cancelled delivery is never claimed afterwards.
    from notifications.services import delivery_dispatch

    assert delivery_dispatch(delivery_id=queued.pk) == "not-claimed"
    assert twilio.sent_count() == 0


def test_the_cancel_action_refuses_a_sent_delivery(admin_client, alice):
    sent = make_delivery(alice, status="sent")
    queued = make_delivery(alice, status="scheduled")
    response = admin_client.post(
        changelist("notifications_delivery"),
        {"action": "cancel", "_selected_action": [str(sent.pk), str(queued.pk)]},
    )
    assert sorted(messages_of(response)) == [
        ("success", "Cancelled 1 delivery."),
        ("warning", f"{sent.pk}: Only a scheduled or queued delivery can be cancelled; this one is sent."),
    ]
    sent.refresh_from_db()
    queued.refresh_from_db()
    assert (sent.status, queued.status) == ("sent", "cancelled")
    assert sent.events.count() == 0


def test_the_revoke_action_stops_a_token(admin_client, alice):
    from rest_framework.test import APIClient

    token, raw = api_token_issue(username="alice")
    response = admin_client.post(
        changelist("accounts_apitoken"), {"action": "revoke", "_selected_action": [str(token.pk)]}
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/v1/notifications/logs/").status_code == 401


def test_the_admin_needs_staff(client, alice):
    response = client.get(changelist("notifications_delivery"))
    assert response.status_code == 302
    assert response.url.startswith("/admin/login/")
