"""The booking lifecycle: events keep a booking, send its notices and keep its reminders
in step; the due scan sends reminders rendered from the booking as it stands then."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command

from notifications.models import Booking, Delivery, NotificationSchedule
from notifications.services.schedules import schedules_process
from preferences.services import account_preference

pytestmark = pytest.mark.django_db

EVENTS_URL = "/api/v1/notifications/events/"
SCHEDULED_URL = "/api/v1/notifications/scheduled/"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


@pytest.fixture(autouse=True)
def _templates(db):
    call_command("load_default_templates", verbosity=0)


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def booking(start: datetime, **overrides) -> dict:
    data = {
        "id": "bk-1",
        "start_time": start.isoformat(),
        "end_time": (start + timedelta(minutes=45)).isoformat(),
        "event_name": "Haircut",
        "location": "Studio 6",
        "organizer": {"name": "Studio 6", "email": "owner@studio6.example", "timezone": "Europe/Madrid"},
        "invitee": {"name": "Ana", "email": "ana@example.com", "phone": "+34600000001", "timezone": "America/New_York"},
    }
    data.update(overrides)
    return data


def event(kind: str, start: datetime, event_id: str | None = None, **extra) -> dict:
    body = {"type": kind, "booking": booking(start), **extra}
    if event_id:
        body["id"] = event_id
    return body


def reminders(status="scheduled"):
    return list(
        NotificationSchedule.objects.filter(schedule_type="reminder", status=status)
        .order_by("scheduled_for")
        .values_list("scheduled_for", "minutes_before", "channel")
    )


def test_created_sends_the_confirmation_and_schedules_each_reminder(alice_api, clock):
    start = NOW + timedelta(days=3)
    response = alice_api.post(EVENTS_URL, event("booking.created", start, "e1"), format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert (body["status"], body["type"], len(body["sent"]), body["scheduled"]) == (
        "processed",
        "booking.created",
        1,
        2,
    )
    confirmation = Delivery.objects.get()
    assert (confirmation.channel, confirmation.to, confirmation.status) == ("email", "ana@example.com", "queued")
    # the time is the reader's: 10:00 UTC on 5 March is 05:00 in New York
    assert "Thu 05 Mar 2026, 04:00 EST" in confirmation.subject
    assert reminders() == [
        (start - timedelta(minutes=1440), 1440, "email"),
        (start - timedelta(minutes=120), 120, "email"),
    ]
    listed = alice_api.get(SCHEDULED_URL, {"booking": "bk-1", "status": "scheduled"}).json()
    assert [item["minutes_before"] for item in listed["results"]] == [1440, 120]
    assert listed["results"][0]["booking"] == "bk-1"


def test_reminders_already_past_are_not_scheduled(alice_api, clock):
    start = NOW + timedelta(hours=5)  # 1440 minutes before is past; 120 is not
    alice_api.post(EVENTS_URL, event("booking.created", start, "e1"), format="json")
    assert reminders() == [(start - timedelta(minutes=120), 120, "email")]


def test_the_same_event_twice_changes_nothing(alice_api, clock):
    start = NOW + timedelta(days=3)
    first = alice_api.post(EVENTS_URL, event("booking.created", start, "e1"), format="json")
    again = alice_api.post(EVENTS_URL, event("booking.created", start, "e1"), format="json")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["status"] == "duplicate"
    assert again.json()["sent"] == first.json()["sent"]
    assert Delivery.objects.count() == 1
    assert NotificationSchedule.objects.count() == 2


def test_without_an_id_the_same_type_booking_and_start_is_the_same_event(alice_api, clock):
    start = NOW + timedelta(days=3)
    alice_api.post(EVENTS_URL, event("booking.created", start), format="json")
    again = alice_api.post(EVENTS_URL, event("booking.created", start), format="json")
    assert again.status_code == 200
    assert Delivery.objects.count() == 1


def test_rescheduled_moves_pending_reminders_and_sends_the_notice(alice_api, clock):
    start = NOW + timedelta(days=3)
    alice_api.post(EVENTS_URL, event("booking.created", start, "e1"), format="json")
    clock.shift(timedelta(minutes=5))
    later = start + timedelta(days=1, hours=2)
    response = alice_api.post(EVENTS_URL, event("booking.rescheduled", later, "e2"), format="json")
    assert response.status_code == 202, response.json()
    assert (response.json()["moved"], response.json()["scheduled"]) == (2, 0)
    assert reminders() == [
        (later - timedelta(minutes=1440), 1440, "email"),
        (later - timedelta(minutes=120), 120, "email"),
    ]
    notice = Delivery.objects.get(subject__startswith="Rescheduled")
    assert notice.subject.startswith("Rescheduled: Haircut")
    assert "moved from Thu 05 Mar 2026, 04:00 EST" in notice.body


def test_rescheduled_closer_skips_a_reminder_whose_time_has_passed(alice_api, clock):
    alice_api.post(EVENTS_URL, event("booking.created", NOW + timedelta(days=3), "e1"), format="json")
    soon = NOW + timedelta(hours=6)
    body = alice_api.post(EVENTS_URL, event("booking.rescheduled", soon, "e2"), format="json").json()
    assert (body["moved"], body["cancelled"]) == (1, 1)
    assert reminders() == [(soon - timedelta(minutes=120), 120, "email")]
    assert reminders("skipped") == [(NOW + timedelta(days=2), 1440, "email")]


def test_cancelled_sends_the_cancellation_and_cancels_pending_reminders(alice_api, clock):
    start = NOW + timedelta(days=3)
    alice_api.post(EVENTS_URL, event("booking.created", start, "e1"), format="json")
    response = alice_api.post(
        EVENTS_URL,
        event("booking.cancelled", start, "e2", booking={**booking(start), "cancellation_reason": "Ill"}),
        format="json",
    )
    assert response.status_code == 202
    assert response.json()["cancelled"] == 2
    assert reminders() == []
    assert len(reminders("cancelled")) == 2
    assert Booking.objects.get().status == "cancelled"
    assert "Reason: Ill" in Delivery.objects.get(subject__startswith="Cancelled").body
    # and a booking that is cancelled takes no more events
    late = alice_api.post(EVENTS_URL, event("booking.rescheduled", start, "e3"), format="json")
    assert late.status_code == 409


def test_an_event_older_than_the_last_one_is_refused(alice_api, clock):
    start = NOW + timedelta(days=3)
    alice_api.post(EVENTS_URL, event("booking.created", start, "e1", occurred_at=NOW.isoformat()), format="json")
    alice_api.post(
        EVENTS_URL,
        event(
            "booking.rescheduled",
            start + timedelta(hours=1),
            "e3",
            occurred_at=(NOW + timedelta(minutes=2)).isoformat(),
        ),
        format="json",
    )
    late = alice_api.post(
        EVENTS_URL,
        event(
            "booking.rescheduled",
            start + timedelta(hours=5),
            "e2",
            occurred_at=(NOW + timedelta(minutes=1)).isoformat(),
        ),
        format="json",
    )
    assert late.status_code == 409
    assert "older than the booking's last one" in late.json()["message"]
    assert Booking.objects.get().start_time == start + timedelta(hours=1)


def test_an_event_for_an_unknown_booking_is_a_404(alice_api, bob_api, clock):
    alice_api.post(EVENTS_URL, event("booking.created", NOW + timedelta(days=3), "e1"), format="json")
    response = bob_api.post(EVENTS_URL, event("booking.cancelled", NOW + timedelta(days=3), "e2"), format="json")
    assert response.status_code == 404


def test_completed_schedules_the_follow_up(alice_api, clock):
    start = NOW + timedelta(hours=1)
    alice_api.post(EVENTS_URL, event("booking.created", start, "e1"), format="json")
    clock.move_to(start + timedelta(hours=1))
    body = alice_api.post(EVENTS_URL, event("booking.completed", start, "e2"), format="json").json()
    assert body["scheduled"] == 1
    follow_up = NotificationSchedule.objects.get(schedule_type="follow_up")
    assert follow_up.scheduled_for == start + timedelta(minutes=45 + 60)


def test_due_reminders_are_rendered_from_the_booking_as_it_stands(alice_api, clock):
    start = NOW + timedelta(days=3)
    alice_api.post(EVENTS_URL, event("booking.created", start, "e1"), format="json")
    Booking.objects.update(event_name="Colour and cut")  # changed after the reminders were made
    clock.move_to(start - timedelta(minutes=1440) + timedelta(seconds=1))
    counts = schedules_process()
    assert (counts["claimed"], counts["sent"]) == (1, 1)
    reminder = NotificationSchedule.objects.get(minutes_before=1440)
    assert reminder.status == "sent"
    delivery = Delivery.objects.get(pk=reminder.delivery_id)
    assert delivery.subject.startswith("Reminder: Colour and cut")
    assert delivery.notification.booking.external_id == "bk-1"
    # and nothing is due a second time
    assert schedules_process()["claimed"] == 0


def test_sms_reminders_follow_the_account_toggle(alice, alice_api, clock):
    prefs = account_preference(account=alice)
    prefs.preferred_notification_method = "both"
    prefs.save()
    start = NOW + timedelta(days=3)
    alice_api.post(EVENTS_URL, event("booking.created", start, "e1"), format="json")
    assert {c for _, _, c in reminders()} == {"email", "sms"}
    clock.move_to(start - timedelta(minutes=120))
    schedules_process()
    sms = NotificationSchedule.objects.get(minutes_before=120, channel="sms")
    assert sms.status == "skipped"
    assert "switched off" in sms.error_message


def test_scheduled_sends_show_in_the_list_and_cancel_with_their_delivery(alice, alice_api, clock):
    from tests.factories import make_template
    from tests.notifications.factories import SEND_URL, sms_request

    make_template(alice)
    at = NOW + timedelta(hours=2)
    sent = alice_api.post(SEND_URL, sms_request(scheduled_for=at.isoformat()), format="json").json()
    listed = alice_api.get(SCHEDULED_URL).json()["results"]
    assert [(i["schedule_type"], i["status"], i["delivery"]) for i in listed] == [
        ("send", "scheduled", sent["deliveries"][0]["id"])
    ]
    response = alice_api.post(f"{SCHEDULED_URL}{listed[0]['id']}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert Delivery.objects.get().status == "cancelled"
    assert alice_api.post(f"{SCHEDULED_URL}{listed[0]['id']}/cancel/").status_code == 409


def test_another_accounts_schedule_is_not_found(alice_api, bob_api, clock):
    alice_api.post(EVENTS_URL, event("booking.created", NOW + timedelta(days=3), "e1"), format="json")
    schedule = NotificationSchedule.objects.first()
    assert bob_api.get(SCHEDULED_URL).json()["results"] == []
    assert bob_api.post(f"{SCHEDULED_URL}{schedule.pk}/cancel/").status_code == 404
