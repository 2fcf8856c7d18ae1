"""The operator console for bookings and schedules: a booking's page shows what was sent
about it and what is still due, schedules are cancelled through the service after a
confirmation, and staff scoped to an account see only its rows."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from notifications.models import Booking, BookingEvent, Delivery, FailureAlert, Notification, NotificationSchedule
from tests.notifications.factories import make_recipient
from tests.notifications.test_admin import change, changelist, messages_of

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)


def booking_of(account, external_id="bk-1"):
    """A booking with a sent confirmation, a reminder still due, one already sent, and its history."""
    invitee = make_recipient(account, email=f"ana@{account.username}.example", name="Ana")
    booking = Booking.objects.create(
        account=account,
        external_id=external_id,
        event_name="Haircut",
        start_time=START,
        end_time=START + timedelta(minutes=45),
        invitee=invitee,
        last_event_at=START - timedelta(days=2),
    )
    notification = Notification.objects.create(
        account=account, recipient=invitee, channels=["email"], booking=booking, category="transactional"
    )
    delivery = Delivery.objects.create(
        account=account,
        notification=notification,
        channel="email",
        to=invitee.email,
        subject="Booked",
        body="See you",
        status="delivered",
    )
    pending = NotificationSchedule.objects.create(
        account=account,
        schedule_type="reminder",
        channel="sms",
        recipient=invitee,
        booking=booking,
        minutes_before=120,
        scheduled_for=START - timedelta(hours=2),
    )
    sent = NotificationSchedule.objects.create(
        account=account,
        schedule_type="reminder",
        channel="email",
        recipient=invitee,
        booking=booking,
        minutes_before=1440,
        scheduled_for=START - timedelta(days=1),
        status="sent",
    )
    BookingEvent.objects.create(
        account=account,
        booking=booking,
        key=f"evt-{external_id}-created",
        type="booking.created",
        occurred_at=START - timedelta(days=2),
        result={"sent": ["confirmation"]},
    )
    alert = FailureAlert.objects.create(
        account=account, channel="sms", failed=6, total=10, rate=0.6, window_minutes=60, detected_at=START
    )
    return {
        "booking": booking,
        "notification": notification,
        "delivery": delivery,
        "pending": pending,
        "sent": sent,
        "alert": alert,
    }


@pytest.fixture
def alice_booking(alice):
    return booking_of(alice)


@pytest.fixture
def bob_booking(bob):
    return booking_of(bob, external_id="bk-bob")


@pytest.fixture
def alice_staff(alice):
    """Alice's own operator: staff with every permission on these apps, not a superuser."""
    alice.is_staff = True
    alice.save()
    alice.user_permissions.set(Permission.objects.filter(content_type__app_label__in=["preferences", "notifications"]))
    client = Client()
    client.force_login(alice)
    return client


def cancel(client, *schedules, confirmed: bool):
    data = {"action": "cancel_schedules", "_selected_action": [str(s.pk) for s in schedules]}
    if confirmed:
        data["post"] = "yes"
    return client.post(changelist("notifications_notificationschedule"), data)


@pytest.mark.parametrize(
    ("model", "key", "count"),
    [
        ("notifications_booking", "booking", 2),
        ("notifications_notificationschedule", "pending", 4),
        ("notifications_failurealert", "alert", 2),
    ],
)
def test_changelists_and_change_pages_load(admin_client, alice_booking, bob_booking, model, key, count):
    response = admin_client.get(changelist(model))
    assert response.status_code == 200
    assert response.context["cl"].result_count == count
    assert admin_client.get(change(model, alice_booking[key].pk)).status_code == 200


def test_schedule_filters_and_search(admin_client, alice_booking, bob_booking):
    schedules = changelist("notifications_notificationschedule")
    assert admin_client.get(schedules, {"status": "scheduled"}).context["cl"].result_count == 2
    assert admin_client.get(schedules, {"status": "scheduled", "channel": "email"}).context["cl"].result_count == 0
    assert admin_client.get(schedules, {"schedule_type": "follow_up"}).context["cl"].result_count == 0
    assert admin_client.get(schedules, {"q": "bk-bob"}).context["cl"].result_count == 2
    assert admin_client.get(schedules, {"q": "ana@alice.example"}).context["cl"].result_count == 2
    bookings = changelist("notifications_booking")
    assert admin_client.get(bookings, {"q": "bk-bob"}).context["cl"].result_count == 1
    assert admin_client.get(bookings, {"status": "cancelled"}).context["cl"].result_count == 0


def test_a_bookings_page_shows_its_notifications_reminders_and_history(admin_client, alice_booking):
    # when
    response = admin_client.get(change("notifications_booking", alice_booking["booking"].pk))
    # then
    assert response.status_code == 200
    inline_models = [formset.opts.model for formset in response.context["inline_admin_formsets"]]
    assert inline_models == [Notification, NotificationSchedule, BookingEvent]
    notifications, pending, history = (
        [form.original for form in formset] for formset in response.context["inline_admin_formsets"]
    )
    assert notifications == [alice_booking["notification"]]
    assert pending == [alice_booking["pending"]]  # the sent reminder is not pending
    assert [event.type for event in history] == ["booking.created"]
    content = response.content.decode()
    delivery_url = reverse("admin:notifications_delivery_change", args=[alice_booking["delivery"].pk])
    assert f'<a href="{delivery_url}">email: Delivered</a>' in content
    assert reverse("admin:notifications_notificationschedule_change", args=[alice_booking["pending"].pk]) in content
    assert reverse("admin:notifications_notificationschedule_change", args=[alice_booking["sent"].pk]) not in content
    assert "evt-bk-1-created" in content


def test_records_are_not_added_edited_or_deleted_by_hand(admin_client, alice_booking):
    for model, key in (
        ("notifications_booking", "booking"),
        ("notifications_notificationschedule", "pending"),
        ("notifications_failurealert", "alert"),
    ):
        obj = alice_booking[key]
        page = admin_client.get(change(model, obj.pk)).content.decode()
        assert 'name="_save"' not in page, model
        assert admin_client.post(change(model, obj.pk), {"status": "cancelled"}).status_code == 403, model
        assert admin_client.get(reverse(f"admin:{model}_delete", args=[obj.pk])).status_code == 403, model
        assert admin_client.get(reverse(f"admin:{model}_add")).status_code == 403, model
    alice_booking["booking"].refresh_from_db()
    alice_booking["pending"].refresh_from_db()
    assert (alice_booking["booking"].status, alice_booking["pending"].status) == ("confirmed", "scheduled")


def test_cancelling_asks_first_then_cancels_and_reports_what_it_could_not(admin_client, alice_booking):
    pending, sent = alice_booking["pending"], alice_booking["sent"]
    # when
    response = cancel(admin_client, pending, sent, confirmed=False)
    # then
    assert response.status_code == 200
    assert "Are you sure you want to cancel these schedules?" in response.content.decode()
    assert set(response.context["pks"]) == {pending.pk, sent.pk}
    pending.refresh_from_db()
    assert pending.status == "scheduled"
    # when
    response = cancel(admin_client, pending, sent, confirmed=True)
    # then
    assert response.status_code == 302
    assert sorted(messages_of(response)) == [
        ("success", "Cancelled 1 schedule."),
        ("warning", f"{str(sent.pk)[:8]}: Only a scheduled item can be cancelled; this one is sent."),
    ]
    pending.refresh_from_db()
    sent.refresh_from_db()
    assert (pending.status, pending.error_message) == ("cancelled", "Cancelled (admin).")
    assert sent.status == "sent"


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("notifications_booking", "booking"),
        ("notifications_notificationschedule", "pending"),
        ("notifications_failurealert", "alert"),
        ("notifications_notification", "notification"),
        ("notifications_delivery", "delivery"),
    ],
)
def test_scoped_staff_see_their_own_account_only(alice_staff, alice_booking, bob_booking, model, key):
    response = alice_staff.get(changelist(model))
    assert response.status_code == 200
    assert {obj.account_id for obj in response.context["cl"].result_list} == {alice_booking[key].account_id}
    assert alice_staff.get(change(model, alice_booking[key].pk)).status_code == 200
    # Another account's row is not found: the admin sends the operator back to its index.
    response = alice_staff.get(change(model, bob_booking[key].pk))
    assert (response.status_code, response.url) == (302, "/admin/")


def test_scoped_staff_cannot_cancel_another_accounts_schedule(alice_staff, alice_booking, bob_booking):
    theirs = bob_booking["pending"]
    response = cancel(alice_staff, theirs, confirmed=True)
    assert messages_of(response) == []
    theirs.refresh_from_db()
    assert theirs.status == "scheduled"
    # Their own is cancelled as for anyone.
    response = cancel(alice_staff, alice_booking["pending"], confirmed=True)
    assert messages_of(response) == [("success", "Cancelled 1 schedule.")]


def test_staff_without_the_change_permission_get_no_cancel_action(alice, alice_booking):
    alice.is_staff = True
    alice.save()
    alice.user_permissions.set(Permission.objects.filter(codename="view_notificationschedule"))
    client = Client()
    client.force_login(alice)
    response = client.get(changelist("notifications_notificationschedule"))
    assert response.status_code == 200
    assert response.context["action_form"] is None
    cancel(client, alice_booking["pending"], confirmed=True)
    alice_booking["pending"].refresh_from_db()
    assert alice_booking["pending"].status == "scheduled"
