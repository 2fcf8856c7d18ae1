"""manage.py send_notification: the same accept as the API, from the shell."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from notifications.models import Delivery, Notification
from tests.factories import make_template

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command("send_notification", *args, stdout=out)
    return out.getvalue()


def test_an_ad_hoc_sms_is_accepted_and_sent(alice, twilio, django_capture_on_commit_callbacks):
    # when
    with django_capture_on_commit_callbacks(execute=True):
        out = run("alice", "--channel", "sms", "--phone", "+14155550123", "--message", "Your table is ready")
    # then
    delivery = Delivery.objects.get()
    assert out == f"{delivery.pk} sms queued\n"
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    assert delivery.account == alice
    assert delivery.events.first().source == "command"
    assert [r["Body"] for r in twilio.requests] == ["Your table is ready"]


def test_a_template_on_two_channels(alice, twilio, smtp, django_capture_on_commit_callbacks):
    make_template(alice)
    with django_capture_on_commit_callbacks(execute=True):
        out = run(
            "alice",
            "--channel",
            "email",
            "--channel",
            "sms",
            "--email",
            "ana@example.com",
            "--phone",
            "+14155550123",
            "--template",
            "reminder",
            "--context",
            json.dumps({"event_name": "Haircut", "invitee_name": "Ana"}),
        )
    notification = Notification.objects.get()
    assert notification.channels == ["email", "sms"]
    lines = out.splitlines()
    assert [line.split()[1:] for line in lines] == [["email", "queued"], ["sms", "queued"]]
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    assert len(smtp.messages) == 1
    assert [r["Body"] for r in twilio.requests] == ["Reminder: Haircut soon"]


def test_an_unknown_account_is_an_error(db, twilio):
    with pytest.raises(CommandError, match="No account named 'nobody'."):
        run("nobody", "--channel", "sms", "--phone", "+14155550123", "--message", "Hi")
    assert Notification.objects.count() == 0


def test_invalid_input_is_an_error_naming_the_field(alice, twilio, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(CommandError) as caught:
        run("alice", "--channel", "sms", "--phone", "4155550123", "--message", "Hi")
    assert json.loads(str(caught.value)) == {
        "recipient": {"phone": ["Enter the number in E.164 form, e.g. +14155550123."]}
    }
    assert Notification.objects.count() == 0
    assert twilio.sent_count() == 0


def test_a_render_error_is_an_error(alice, twilio):
    make_template(alice)
    with pytest.raises(CommandError) as caught:
        run("alice", "--channel", "sms", "--phone", "+14155550123", "--template", "reminder")
    assert json.loads(str(caught.value)) == {"context": ["sms: missing required placeholder(s): event_name"]}
    assert Notification.objects.count() == 0
    assert twilio.sent_count() == 0


def test_context_must_be_json(alice):
    with pytest.raises(CommandError, match="--context is not JSON"):
        run("alice", "--channel", "sms", "--phone", "+14155550123", "--template", "reminder", "--context", "{x")
