"""Daily agendas at each account's own time and zone, the periodic tasks beat runs, and
the commands that run the same work by hand."""

from datetime import UTC, datetime, time, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from notifications.models import Booking, Delivery, NotificationSchedule, Recipient
from notifications.periodic import periodic_tasks, periodic_tasks_install
from notifications.services.agenda import daily_agendas_send
from preferences.services import account_preference

pytestmark = pytest.mark.django_db

MONDAY_8_MADRID = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)  # 08:00 in Madrid (CET)


@pytest.fixture(autouse=True)
def _templates(db):
    call_command("load_default_templates", verbosity=0)


@pytest.fixture
def madrid(alice):
    prefs = account_preference(account=alice)
    prefs.timezone = "Europe/Madrid"
    prefs.daily_agenda_time = time(8, 0)
    prefs.save()
    return prefs


def book(account, external_id: str, start: datetime, organizer: str = "owner@studio6.example", **details):
    return Booking.objects.create(
        account=account,
        external_id=external_id,
        start_time=start,
        end_time=start + timedelta(minutes=30),
        event_name=f"Event {external_id}",
        details={"organizer": {"email": organizer, "name": "Studio 6"}, "invitee": {"name": f"Guest {external_id}"}},
        last_event_at=start - timedelta(days=5),
    )


def test_agendas_go_at_the_accounts_time_once_per_organizer_and_day(alice, madrid):
    book(alice, "a", datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    book(alice, "b", datetime(2026, 3, 2, 15, 0, tzinfo=UTC))
    book(alice, "c", datetime(2026, 3, 2, 10, 0, tzinfo=UTC), organizer="second@studio6.example")
    book(alice, "tomorrow", datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
    # a minute early in Madrid: nothing
    assert daily_agendas_send(now=MONDAY_8_MADRID - timedelta(minutes=1))["sent"] == 0
    # at 08:00 Madrid: one agenda per organizer, the day's bookings in local time
    assert daily_agendas_send(now=MONDAY_8_MADRID)["sent"] == 2
    owner = Delivery.objects.get(to="owner@studio6.example")
    assert owner.subject == "Your agenda for Mon 02 Mar 2026"
    assert "10:00  Event a with Guest a" in owner.body
    assert "16:00  Event b with Guest b" in owner.body
    assert "tomorrow" not in owner.body
    # and a later run the same day sends nothing new
    again = daily_agendas_send(now=MONDAY_8_MADRID + timedelta(minutes=5))
    assert (again["sent"], again["already_sent"]) == (0, 2)
    assert Delivery.objects.count() == 2


def test_weekend_agendas_follow_the_exclusion(alice, madrid):
    saturday = datetime(2026, 3, 7, 7, 0, tzinfo=UTC)
    book(alice, "sat", saturday + timedelta(hours=3))
    assert daily_agendas_send(now=saturday)["sent"] == 0
    madrid.exclude_weekends_agenda = False
    madrid.save()
    assert daily_agendas_send(now=saturday)["sent"] == 1


def test_an_account_with_agendas_off_gets_none(alice, madrid):
    madrid.daily_agenda_email = False
    madrid.save()
    book(alice, "a", datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    assert daily_agendas_send(now=MONDAY_8_MADRID)["sent"] == 0


def test_send_daily_agenda_command(alice, madrid):
    book(alice, "a", datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    out = StringIO()
    with time_machine.travel(MONDAY_8_MADRID, tick=False):
        call_command("send_daily_agenda", "--dry-run", stdout=out)
        assert out.getvalue().startswith("Would send 1 agenda(s) over 1 account(s)")
        assert Delivery.objects.count() == 0
        out = StringIO()
        call_command("send_daily_agenda", stdout=out)
    assert out.getvalue().startswith("Sent 1 agenda(s)")
    assert Delivery.objects.count() == 1


def test_the_periodic_tasks_are_registered_and_keep_an_operators_changes(db):
    names = {entry.name for entry in periodic_tasks()}
    registered = dict(PeriodicTask.objects.filter(name__in=names).values_list("name", "task"))
    assert registered == {entry.name: entry.task for entry in periodic_tasks()}
    assert registered["process-scheduled-notifications"] == "notifications.tasks.schedules_process"
    # an operator slows one down in the admin; the next migrate leaves it so
    task = PeriodicTask.objects.get(name="process-scheduled-notifications")
    task.interval.every, task.enabled = 60, False
    task.interval.save()
    task.save()
    assert periodic_tasks_install() == 0
    task.refresh_from_db()
    assert (task.interval.every, task.enabled) == (60, False)


def test_every_periodic_task_names_a_registered_celery_task():
    from config.celery import app

    app.loader.import_default_modules()
    assert {entry.task for entry in periodic_tasks()} <= set(app.tasks)


def test_process_scheduled_notifications_command(alice):
    from tests.factories import make_template

    template = make_template(alice)
    person = Recipient.objects.create(account=alice, email="ana@example.com")
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    for minutes in (5, 1, -10):
        NotificationSchedule.objects.create(
            account=alice,
            schedule_type="reminder",
            channel="email",
            recipient=person,
            template=template,
            context={"event_name": "Haircut"},
            scheduled_for=now - timedelta(minutes=minutes),
        )
    with time_machine.travel(now, tick=False):
        out = StringIO()
        call_command("process_scheduled_notifications", "--dry-run", stdout=out)
        assert out.getvalue().startswith("2 scheduled notification(s) due")
        out = StringIO()
        call_command("process_scheduled_notifications", "--quiet", "--batch-size", "1", stdout=out)
    assert out.getvalue().startswith("Processed 2 due schedule(s): 2 sent, 0 skipped, 0 failed")
    assert NotificationSchedule.objects.filter(status="scheduled").count() == 1
    assert Delivery.objects.count() == 2
