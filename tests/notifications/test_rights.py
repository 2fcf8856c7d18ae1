"""A recipient's data rights: GET /api/v1/recipients/{external_id}/export/ and
DELETE /api/v1/recipients/{external_id}/ (erasure that keeps anonymised logs and a
hashed suppression)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications.models import (
    Booking,
    BookingEvent,
    Delivery,
    DeliveryEvent,
    IdempotencyKey,
    Notification,
    NotificationSchedule,
    Recipient,
)
from notifications.services import delivery_track
from notifications.services.rights import recipient_erase
from preferences.models import ConsentRecord, DailyCount, RecipientPreference, Suppression, address_hash
from preferences.services import consent_record, suppression_add
from tests.factories import make_template
from tests.notifications.factories import SEND_URL, sms_request

pytestmark = pytest.mark.django_db

PHONE = "+14155550123"
EMAIL = "ana@example.com"
EXTERNAL_ID = "cust-42"
ANA = {"phone": PHONE, "email": EMAIL, "name": "Ana", "external_id": EXTERNAL_ID, "timezone": "Europe/Madrid"}


def export_url(external_id: str = EXTERNAL_ID) -> str:
    return f"/api/v1/recipients/{external_id}/export/"


def recipient_url(external_id: str = EXTERNAL_ID) -> str:
    return f"/api/v1/recipients/{external_id}/"


def send(api, capture, **overrides):
    with capture(execute=True):
        response = api.post(SEND_URL, sms_request(**{"recipient": dict(ANA), **overrides}), format="json")
    assert response.status_code == 202, response.json()
    return response


@pytest.fixture
def ana(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    """Ana as alice's recipient: one SMS sent (and delivered, with a provider payload), one
    scheduled for tomorrow, preferences, consent, a booking; then she said STOP."""
    make_template(alice)
    send(alice_api, django_capture_on_commit_callbacks)
    sent = Delivery.objects.get(status="sent")
    delivery_track(delivery=sent, status="delivered", source="twilio", payload={"MessageSid": "SM1", "To": PHONE})
    tomorrow = timezone.now() + timedelta(days=1)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            SEND_URL,
            sms_request(recipient=dict(ANA), scheduled_for=tomorrow.isoformat()),
            format="json",
            HTTP_IDEMPOTENCY_KEY="later-1",
        )
    assert response.status_code == 202
    recipient = Recipient.objects.get(account=alice, external_id=EXTERNAL_ID)
    RecipientPreference.objects.create(
        account=alice,
        recipient=recipient,
        preferred_channel="sms",
        opt_outs=[{"category": "marketing", "channel": "sms"}],
    )
    consent_record(account=alice, recipient=recipient, channel="email", category="marketing", granted=True)
    DailyCount.objects.create(recipient=recipient, day=tomorrow.date(), count=1)
    booking = Booking.objects.create(
        account=alice,
        external_id="bk-1",
        start_time=tomorrow,
        end_time=tomorrow + timedelta(hours=1),
        event_name="Haircut",
        details={"id": "bk-1", "event_name": "Haircut", "invitee": {"email": EMAIL, "name": "Ana"}},
        invitee=recipient,
        last_event_at=timezone.now(),
    )
    BookingEvent.objects.create(
        account=alice,
        booking=booking,
        key="id:ev-1",
        type="booking.created",
        occurred_at=timezone.now(),
        payload={"booking": {"invitee": {"email": EMAIL}}},
        result={"sent": []},
    )
    suppression_add(account=alice, channel="sms", address=PHONE, reason="stop_keyword", detail="STOP")
    return recipient


# --- Export ---------------------------------------------------------------------------


def test_the_export_holds_everything_on_the_recipient(ana, alice_api):
    # when
    response = alice_api.get(export_url())
    # then
    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) == {
        "exported_at",
        "recipient",
        "preferences",
        "opt_outs",
        "consent",
        "suppressions",
        "notifications",
        "schedules",
        "bookings",
        "devices",
    }
    recipient = body["recipient"]
    assert {k: recipient[k] for k in ("external_id", "name", "email", "phone", "timezone", "locale")} == {
        "external_id": EXTERNAL_ID,
        "name": "Ana",
        "email": EMAIL,
        "phone": PHONE,
        "timezone": "Europe/Madrid",
        "locale": "",
    }
    assert body["preferences"]["preferred_channel"] == "sms"
    assert body["opt_outs"] == [{"category": "marketing", "channel": "sms"}]
    assert [(c["channel"], c["category"], c["granted"]) for c in body["consent"]] == [("email", "marketing", True)]
    assert [(s["channel"], s["address"], s["reason"]) for s in body["suppressions"]] == [("sms", PHONE, "stop_keyword")]
    first, later = body["notifications"]
    assert first["template"] == "reminder"
    assert first["context"] == {"event_name": "Haircut", "start_time": "at 10:00"}
    (delivery,) = first["deliveries"]
    assert (delivery["channel"], delivery["to"], delivery["status"]) == ("sms", PHONE, "delivered")
    assert delivery["body"] == "Reminder: Haircut at 10:00"
    assert delivery["sent_at"] and delivery["delivered_at"]
    assert [e["status"] for e in delivery["events"]] == ["queued", "sending", "sent", "delivered"]
    assert delivery["events"][-1]["payload"] == {"MessageSid": "SM1", "To": PHONE}
    assert [d["status"] for d in later["deliveries"]] == ["scheduled"]
    assert [(s["schedule_type"], s["status"]) for s in body["schedules"]] == [("send", "scheduled")]
    assert [(b["external_id"], b["details"]["invitee"]["email"]) for b in body["bookings"]] == [("bk-1", EMAIL)]


def test_the_export_finds_suppressions_by_addresses_the_recipient_was_sent_to(ana, alice, alice_api):
    # given: she changed her number since; the old one was suppressed
    Recipient.objects.filter(pk=ana.pk).update(phone="+14155550999")
    # when
    body = alice_api.get(export_url()).json()
    # then
    assert [s["address"] for s in body["suppressions"]] == [PHONE]


# --- Erasure --------------------------------------------------------------------------


def test_erasure_keeps_anonymised_logs_and_removes_the_rest(ana, alice, alice_api):
    sent, scheduled = Delivery.objects.order_by("created_at")
    booking = Booking.objects.get()
    # when
    response = alice_api.delete(recipient_url())
    # then
    assert response.status_code == 204
    assert response.content == b""
    recipient = Recipient.objects.get(pk=ana.pk)
    assert (recipient.external_id, recipient.name, recipient.email, recipient.phone) == ("", "[erased]", "", "")
    assert (recipient.timezone, recipient.locale) == ("", "")
    # the logs stay, without a word of the message or the address
    assert Notification.objects.filter(recipient=recipient).count() == 2
    assert list(Notification.objects.values_list("context", flat=True)) == [{}, {}]
    sent.refresh_from_db()
    assert (sent.status, sent.to, sent.body, sent.subject, sent.html_body) == (
        "delivered",
        "[erased]",
        "[erased]",
        "",
        "",
    )
    assert sent.provider_message_id.startswith("SM")
    assert list(DeliveryEvent.objects.exclude(payload={}).values_list("payload", flat=True)) == []
    # what was still to go is cancelled, with its schedule row gone
    scheduled.refresh_from_db()
    assert (scheduled.status, scheduled.to, scheduled.next_attempt_at) == ("cancelled", "[erased]", None)
    assert scheduled.events.last().detail == "the recipient was erased"
    assert NotificationSchedule.objects.count() == 0
    # preferences, consent and counts are gone
    assert RecipientPreference.objects.count() == 0
    assert ConsentRecord.objects.count() == 0
    assert DailyCount.objects.count() == 0
    # the STOP stays, by hash only
    suppression = Suppression.objects.get()
    assert (suppression.address, suppression.address_hash, suppression.reason) == (
        "",
        address_hash("sms", PHONE),
        "stop_keyword",
    )
    # the stored receipt no longer names the address
    (receipt,) = IdempotencyKey.objects.values_list("response_body", flat=True)
    assert [d["to"] for d in receipt["deliveries"]] == ["[erased]"]
    # the booking stays the account's, without the invitee's details
    booking.refresh_from_db()
    assert booking.details == {"id": "bk-1", "event_name": "Haircut"}
    assert BookingEvent.objects.get().payload == {}
    # and the recipient is no longer there to export or erase
    assert alice_api.get(export_url()).status_code == 404
    assert alice_api.delete(recipient_url()).status_code == 404


def test_an_erased_address_that_said_stop_stays_unreachable(
    ana, alice, alice_api, twilio, django_capture_on_commit_callbacks
):
    # given
    assert alice_api.delete(recipient_url()).status_code == 204
    sent_before = twilio.sent_count()
    # when: a new send to the same number, under a new external id
    response = send(alice_api, django_capture_on_commit_callbacks, recipient={"phone": PHONE, "external_id": "new"})
    # then
    assert response.json()["deliveries"][0]["status"] == "suppressed"
    assert twilio.sent_count() == sent_before
    newcomer = Recipient.objects.get(account=alice, external_id="new")
    assert newcomer.pk != ana.pk


def test_an_opt_out_of_everything_on_a_channel_outlives_the_erasure(ana, alice, alice_api, smtp):
    # given: Ana had opted out of every category by email
    RecipientPreference.objects.filter(recipient=ana).update(opt_outs=[{"category": "*", "channel": "email"}])
    # when
    counts = recipient_erase(account=alice, external_id=EXTERNAL_ID)
    # then
    assert counts["suppressions_added"] == 1
    kept = Suppression.objects.get(channel="email")
    assert (kept.address, kept.address_hash, kept.reason) == ("", address_hash("email", EMAIL), "unsubscribed")
    response = alice_api.post(
        SEND_URL,
        {"channel": "email", "recipient": {"email": EMAIL}, "subject": "Hi", "message": "Hello"},
        format="json",
    )
    assert response.json()["deliveries"][0]["status"] == "suppressed"
    assert smtp.messages == []


def test_erasure_takes_the_same_statements_however_long_the_history(
    alice, alice_api, twilio, django_capture_on_commit_callbacks
):
    make_template(alice)

    def statements_to_erase(external_id: str, sends: int) -> int:
        for _ in range(sends):
            send(alice_api, django_capture_on_commit_callbacks, recipient={"phone": PHONE, "external_id": external_id})
        with CaptureQueriesContext(connection) as queries:
            recipient_erase(account=alice, external_id=external_id)
        return len(queries)

    assert statements_to_erase("short", 1) == statements_to_erase("long", 6)


# --- Isolation ------------------------------------------------------------------------


def test_another_accounts_recipient_is_a_404_and_nothing_changes(ana, bob_api):
    # when
    exported = bob_api.get(export_url())
    erased = bob_api.delete(recipient_url())
    # then
    for response in (exported, erased):
        assert response.status_code == 404
        assert response.json() == {"message": "The account has no recipient with this external id.", "errors": {}}
    ana.refresh_from_db()
    assert (ana.external_id, ana.phone) == (EXTERNAL_ID, PHONE)
    assert Suppression.objects.get().address == PHONE
    assert Delivery.objects.filter(to=PHONE).count() == 2


def test_an_unknown_recipient_is_a_404_and_no_token_is_a_401(alice_api, anon_api):
    assert alice_api.get(export_url("nobody")).status_code == 404
    assert alice_api.delete(recipient_url("nobody")).status_code == 404
    assert anon_api.get(export_url()).status_code == 401
    assert anon_api.delete(recipient_url()).status_code == 401


def test_the_schema_documents_both_operations(anon_api):
    paths = anon_api.get("/api/schema/", {"format": "json"}).json()["paths"]
    assert sorted(paths["/api/v1/recipients/{external_id}/"]["delete"]["responses"]) == ["204", "401", "404"]
    export = paths["/api/v1/recipients/{external_id}/export/"]["get"]["responses"]
    assert sorted(export) == ["200", "401", "404"]
    assert export["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RecipientExport"}


def test_a_failed_delivery_of_an_erased_recipient_cannot_be_resent(alice, alice_api, ana):
    # given: one of Ana's deliveries failed, then she was erased
    failed = Delivery.objects.filter(status="delivered").first()
    Delivery.objects.filter(pk=failed.pk).update(status="failed")
    assert alice_api.delete(recipient_url()).status_code == 204
    # when
    response = alice_api.post(f"/api/v1/notifications/{failed.pk}/resend/")
    # then
    assert response.status_code == 409
    assert "erased" in response.json()["message"]
    assert not Delivery.objects.filter(resent_from=failed).exists()
