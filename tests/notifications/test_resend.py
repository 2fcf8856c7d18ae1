"""POST /api/v1/notifications/{id}/resend/: a failed delivery is sent again as a new one."""

import uuid

import pytest

from notifications.models import Delivery
from notifications.services import InvalidTransition, delivery_resend
from tests.factories import make_template
from tests.notifications.factories import SEND_URL, make_delivery, sms_request

pytestmark = pytest.mark.django_db


def resend_url(delivery_id) -> str:
    return f"/api/v1/notifications/{delivery_id}/resend/"


@pytest.fixture
def failed(alice, alice_api, twilio, settings, django_capture_on_commit_callbacks):
    """An SMS that failed after its only attempt (Twilio answered 503)."""
    settings.BEACON_MAX_ATTEMPTS = 1
    make_template(alice)
    twilio.script = [(503, {}, {"code": 20500, "message": "down", "status": 503})]
    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post(SEND_URL, sms_request(), format="json")
    delivery = Delivery.objects.get()
    assert delivery.status == "failed"
    assert twilio.sent_count() == 1
    return delivery


def test_a_failed_delivery_is_resent_as_a_new_delivery(failed, alice_api, twilio, django_capture_on_commit_callbacks):
    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(resend_url(failed.pk))
    # then
    assert response.status_code == 202, response.json()
    copy = Delivery.objects.get(resent_from=failed)
    assert response.json() == {
        "id": str(copy.pk),
        "channel": "sms",
        "to": "+14155550123",
        "status": "queued",
        "encoding": "GSM-7",
        "segments": 1,
    }
    assert Delivery.objects.count() == 2
    copy.refresh_from_db()
    assert copy.status == "sent"
    assert (copy.notification_id, copy.body) == (failed.notification_id, failed.body)
    assert copy.attempt_count == 1
    assert twilio.sent_count() == 2
    assert [r["Body"] for r in twilio.requests] == ["Reminder: Haircut at 10:00"] * 2
    assert list(copy.events.values_list("status", "source", "detail")[:1]) == [
        ("queued", "api", f"resend of {failed.pk}")
    ]
    # The failed one keeps its history.
    failed.refresh_from_db()
    assert failed.status == "failed"
    assert failed.attempts.count() == 1
    # The log shows the link.
    row = alice_api.get(f"/api/v1/notifications/logs/{copy.pk}/").json()
    assert row["resent_from"] == str(failed.pk)


def test_a_sent_delivery_cannot_be_resent(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    # given
    make_template(alice)
    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post(SEND_URL, sms_request(), format="json")
    sent = Delivery.objects.get()
    assert sent.status == "sent"
    # when
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = alice_api.post(resend_url(sent.pk))
    # then
    assert response.status_code == 409
    assert response.json() == {
        "message": "Only a delivery that is expired, failed, undelivered can be resent; this one is sent.",
        "errors": {},
    }
    assert callbacks == []
    assert Delivery.objects.count() == 1
    assert twilio.sent_count() == 1


@pytest.mark.parametrize("status", ["queued", "sending", "delivered", "cancelled", "bounced"])
def test_only_failed_undelivered_or_expired_can_be_resent(alice, status):
    delivery = make_delivery(alice, status=status)
    with pytest.raises(InvalidTransition):
        delivery_resend(delivery=delivery)
    assert Delivery.objects.count() == 1


@pytest.mark.parametrize("status", ["failed", "undelivered", "expired"])
def test_resendable_statuses(alice, status, django_capture_on_commit_callbacks):
    delivery = make_delivery(alice, status=status)
    with django_capture_on_commit_callbacks() as callbacks:
        copy = delivery_resend(delivery=delivery)
    assert (copy.status, copy.resent_from_id) == ("queued", delivery.pk)
    assert len(callbacks) == 1


def test_another_accounts_delivery_is_404_on_resend(bob, alice_api, twilio, django_capture_on_commit_callbacks):
    bobs = make_delivery(bob, status="failed")
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(resend_url(bobs.pk))
    assert response.status_code == 404
    assert response.json() == {"message": "Not found.", "errors": {}}
    assert Delivery.objects.count() == 1
    assert twilio.sent_count() == 0


def test_an_unknown_delivery_is_404_on_resend(alice_api, twilio):
    assert alice_api.post(resend_url(uuid.uuid4())).status_code == 404
    assert Delivery.objects.count() == 0
