"""manage.py cleanup_notifications and send_test_notification."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from notifications.models import Delivery, Notification
from tests.factories import make_template
from tests.notifications.test_upkeep import logged

pytestmark = pytest.mark.django_db


def run(name: str, *args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def help_text(name: str, capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        call_command(name, "--help")
    assert exited.value.code == 0
    return capsys.readouterr().out


# --- cleanup_notifications ------------------------------------------------------------


@pytest.fixture
def old_logs(alice):
    long_ago = timezone.now() - timedelta(days=100)
    gone = [logged(alice, at=long_ago) for _ in range(3)]
    kept = [logged(alice, at=timezone.now() - timedelta(days=10)), logged(alice, status="queued", at=long_ago)]
    return gone, kept


def test_cleanup_deletes_and_sums_up(old_logs):
    # when
    out, err = run("cleanup_notifications")
    # then
    assert out == (
        "Deleted 3 notifications, 3 deliveries, 3 attempts, 6 delivery events, 3 idempotency keys, "
        "0 finished schedules, 0 booking events, 0 daily counts (older than 90 days).\n"
    )
    assert Notification.objects.count() == 2
    assert "notifications [" in err and "3/3" in err


def test_cleanup_dry_run_deletes_nothing(old_logs):
    out, _ = run("cleanup_notifications", "--dry-run", "--quiet")
    assert out.startswith("Would delete 3 notifications, 3 deliveries,")
    assert Notification.objects.count() == 5


def test_cleanup_days_overrides_the_retention(old_logs):
    out, err = run("cleanup_notifications", "--days", "5", "--quiet")
    assert out.startswith("Deleted 4 notifications,")
    assert out.endswith("(older than 5 days).\n")
    assert err == ""
    # the queued one is never deleted
    assert list(Notification.objects.values_list("deliveries__status", flat=True)) == ["queued"]


def test_cleanup_refuses_a_retention_under_a_day(old_logs):
    with pytest.raises(CommandError, match="--days must be at least 1."):
        run("cleanup_notifications", "--days", "0")
    assert Notification.objects.count() == 5


def test_cleanup_help_says_what_it_does(db, capsys):
    text = help_text("cleanup_notifications", capsys)
    assert "BEACON_LOG_RETENTION_DAYS" in text
    assert "--dry-run" in text and "--days" in text


# --- send_test_notification -----------------------------------------------------------


@pytest.fixture
def defaults(db):
    call_command("load_default_templates", verbosity=0)


def test_a_test_notification_goes_out_with_the_sample_data(alice, defaults, smtp, django_capture_on_commit_callbacks):
    # when
    with django_capture_on_commit_callbacks(execute=True):
        out, _ = run("send_test_notification", "--account", "alice", "--channel", "email", "--to", "ana@example.com")
    # then
    notification = Notification.objects.get()
    delivery = notification.deliveries.get()
    assert out == f"Test notification {notification.pk} to ana@example.com: email queued (delivery {delivery.pk})\n"
    assert notification.is_test is True
    assert notification.template.key == "booking_confirmation"
    assert notification.context == notification.template.current_version.sample_context
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    assert delivery.events.first().source == "command"
    (received,) = smtp.messages
    assert received["rcpt_tos"] == ["ana@example.com"]
    assert received["message"]["Subject"] == "Confirmed: Haircut on Tue 3 Mar, 10:00"


def test_a_test_notification_the_accounts_preferences_stop_says_why(alice, defaults, twilio):
    # booking confirmations by SMS are off until the account switches them on
    out, _ = run("send_test_notification", "--account", "alice", "--channel", "sms", "--to", "+14155550123")
    delivery = Delivery.objects.get()
    assert out.endswith(
        "sms suppressed (channel_off: the account's booking_confirmation on sms is switched off)"
        f" (delivery {delivery.pk})\n"
    )
    assert twilio.sent_count() == 0


def test_a_dry_run_renders_and_sends_nothing(alice, defaults, twilio, smtp):
    out, _ = run(
        "send_test_notification", "--account", "alice", "--channel", "email", "--to", "ana@example.com", "--dry-run"
    )
    lines = out.splitlines()
    assert lines[0] == "Template booking_confirmation v1, email to ana@example.com (locale default):"
    assert lines[1] == "Subject: Confirmed: Haircut on Tue 3 Mar, 10:00"
    assert "Hi Ana García," in lines
    assert lines[-1] == "Dry run: nothing was sent."
    assert Notification.objects.count() == 0
    assert twilio.sent_count() == 0
    assert smtp.messages == []


def test_the_accounts_own_template_and_locale(alice, twilio):
    make_template(alice)
    out, _ = run(
        "send_test_notification",
        "--account",
        "alice",
        "--channel",
        "sms",
        "--to",
        "+14155550123",
        "--template",
        "reminder",
        "--locale",
        "es",
        "--dry-run",
    )
    assert out.splitlines()[1:3] == ["Recordatorio: Haircut soon", "(GSM-7, 1 segment(s))"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "nobody", "--channel", "sms", "--to", "+14155550123"], "No account named 'nobody'."),
        (
            ["--account", "alice", "--channel", "sms", "--to", "+14155550123", "--template", "nope"],
            "No usable template",
        ),
    ],
)
def test_unknown_account_or_template_is_an_error(alice, defaults, args, message):
    with pytest.raises(CommandError, match=message):
        run("send_test_notification", *args)
    assert Notification.objects.count() == 0


def test_a_bad_address_is_an_error_naming_it(alice, defaults, twilio):
    with pytest.raises(CommandError) as caught:
        run("send_test_notification", "--account", "alice", "--channel", "sms", "--to", "4155550123")
    assert json.loads(str(caught.value)) == {"to": ["Enter the number in E.164 form, e.g. +14155550123."]}
    assert Delivery.objects.count() == 0
    assert twilio.sent_count() == 0


def test_send_test_notification_help(db, capsys):
    text = help_text("send_test_notification", capsys)
    for option in ("--account", "--channel", "--to", "--template", "--dry-run"):
        assert option in text
    assert "booking_confirmation" in text
