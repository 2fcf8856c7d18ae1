"""The preference endpoints: the account's (/api/v1/notifications/preferences/) and a
recipient's, with unsubscribe and the consent ledger (/api/v1/preferences/{external_id}/)."""

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest
import time_machine

from notifications.models import Delivery, Recipient
from preferences.models import AccountPreference, ConsentRecord, RecipientPreference
from tests.factories import make_template
from tests.notifications.factories import SEND_URL

pytestmark = pytest.mark.django_db

URL = "/api/v1/notifications/preferences/"
DEFAULTS = {
    "booking_confirmations_email": True,
    "booking_reminders_email": True,
    "booking_cancellations_email": True,
    "booking_rescheduled_email": True,
    "daily_agenda_email": True,
    "follow_ups_email": True,
    "booking_confirmations_sms": False,
    "booking_reminders_sms": False,
    "booking_cancellations_sms": False,
    "booking_rescheduled_sms": False,
    "daily_agenda_sms": False,
    "follow_ups_sms": False,
    "reminder_minutes_before": [1440, 120],
    "follow_up_minutes_after": 60,
    "daily_agenda_time": "08:00",
    "dnd_enabled": False,
    "dnd_start_time": "22:00",
    "dnd_end_time": "07:00",
    "exclude_weekends_reminders": False,
    "exclude_weekends_agenda": True,
    "preferred_notification_method": "email",
    "max_reminders_per_day": 10,
    "timezone": "UTC",
}


def recipient_url(external_id: str, tail: str = "") -> str:
    return f"/api/v1/preferences/{external_id}/{tail}"


def assert_invalid(response, field: str) -> None:
    assert response.status_code == 400, response.json()
    body = response.json()
    assert list(body["errors"]) == [field]
    assert body["message"].startswith(f"Invalid input: {field}: ")


# --- The account's preferences --------------------------------------------------------


def test_the_first_read_answers_and_stores_the_defaults(alice, alice_api):
    assert not AccountPreference.objects.exists()
    response = alice_api.get(URL)
    assert response.status_code == 200
    body = response.json()
    updated_at = body.pop("updated_at")
    assert body == DEFAULTS
    stored = AccountPreference.objects.get(account=alice)
    assert datetime.fromisoformat(updated_at.replace("Z", "+00:00")) == stored.updated_at


def test_put_replaces_the_preferences(alice, alice_api):
    # given
    wanted = {
        **DEFAULTS,
        "booking_reminders_sms": True,
        "follow_ups_email": False,
        "reminder_minutes_before": [30, 2880, 60],
        "follow_up_minutes_after": 0,
        "daily_agenda_time": "07:45",
        "dnd_enabled": True,
        "dnd_start_time": "21:30",
        "dnd_end_time": "06:15:00",
        "exclude_weekends_reminders": True,
        "preferred_notification_method": "both",
        "max_reminders_per_day": 50,
        "timezone": "America/New_York",
    }
    # when
    response = alice_api.put(URL, wanted, format="json")
    # then: reminders kept in descending order, times as HH:MM
    assert response.status_code == 200, response.json()
    body = response.json()
    body.pop("updated_at")
    assert body == {**wanted, "reminder_minutes_before": [2880, 60, 30], "dnd_end_time": "06:15"}
    stored = AccountPreference.objects.get(account=alice)
    assert (stored.dnd_start_time, stored.dnd_end_time, stored.daily_agenda_time) == (
        time(21, 30),
        time(6, 15),
        time(7, 45),
    )
    assert (stored.booking_reminders_sms, stored.reminder_minutes_before, stored.timezone) == (
        True,
        [2880, 60, 30],
        "America/New_York",
    )
    again = alice_api.get(URL).json()
    again.pop("updated_at")
    assert again == body


@pytest.mark.parametrize("method", ["put", "patch"])
def test_a_partial_update_changes_only_the_fields_given(alice, alice_api, method):
    alice_api.put(URL, {"timezone": "Europe/Madrid", "booking_reminders_sms": True}, format="json")
    response = getattr(alice_api, method)(URL, {"max_reminders_per_day": 3}, format="json")
    assert response.status_code == 200
    body = response.json()
    body.pop("updated_at")
    assert body == {**DEFAULTS, "timezone": "Europe/Madrid", "booking_reminders_sms": True, "max_reminders_per_day": 3}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timezone", "Mars/Olympus_Mons"),
        ("timezone", ""),
        ("max_reminders_per_day", 0),
        ("max_reminders_per_day", 51),
        ("dnd_start_time", "25:00"),
        ("dnd_end_time", "7pm"),
        ("daily_agenda_time", "08:60"),
        ("reminder_minutes_before", [-30]),
        ("reminder_minutes_before", [0]),
        ("reminder_minutes_before", [43201]),
        ("reminder_minutes_before", [60, 120, 60]),
        ("reminder_minutes_before", list(range(1, 12))),
        ("reminder_minutes_before", "60"),
        ("follow_up_minutes_after", -1),
        ("preferred_notification_method", "fax"),
        ("dnd_enabled", "sometimes"),
    ],
)
def test_a_bad_value_is_a_400_naming_the_field_and_changes_nothing(alice, alice_api, field, value):
    alice_api.get(URL)
    response = alice_api.put(URL, {**DEFAULTS, field: value, "booking_reminders_sms": True}, format="json")
    assert_invalid(response, field)
    assert AccountPreference.objects.get(account=alice).booking_reminders_sms is False


def test_do_not_disturb_must_not_start_and_end_at_the_same_time(alice_api):
    response = alice_api.patch(URL, {"dnd_enabled": True, "dnd_start_time": "07:00"}, format="json")
    assert_invalid(response, "dnd_end_time")
    # switched off, the times may be anything
    assert alice_api.patch(URL, {"dnd_start_time": "07:00"}, format="json").status_code == 200


def test_each_account_has_its_own_preferences(alice, bob, alice_api, bob_api):
    alice_api.patch(URL, {"timezone": "Asia/Tokyo"}, format="json")
    assert bob_api.get(URL).json()["timezone"] == "UTC"
    assert AccountPreference.objects.get(account=alice).timezone == "Asia/Tokyo"
    assert AccountPreference.objects.get(account=bob).timezone == "UTC"


def test_the_preferences_need_a_token(anon_api):
    response = anon_api.get(URL)
    assert response.status_code == 401
    assert set(response.json()) == {"message", "errors"}
    assert not AccountPreference.objects.exists()


# --- A recipient's preferences --------------------------------------------------------

RECIPIENT_DEFAULTS = {
    "external_id": "ana-1",
    "email": "",
    "phone": "",
    "slack_webhook_url": "",
    "teams_webhook_url": "",
    "discord_webhook_url": "",
    "name": "",
    "timezone": "",
    "locale": "",
    "preferred_channel": "",
    "quiet_hours_enabled": False,
    "quiet_hours_start": "22:00",
    "quiet_hours_end": "07:00",
    "opt_outs": [],
}


def test_an_unknown_recipient_is_a_404(alice_api):
    response = alice_api.get(recipient_url("nobody"))
    assert response.status_code == 404
    assert response.json() == {"message": "The account has no recipient with this external id.", "errors": {}}


def test_put_creates_the_recipient_and_their_preferences(alice, alice_api):
    # when
    body = {
        "email": "ana@example.com",
        "phone": "+34600111222",
        "name": "Ana",
        "timezone": "America/New_York",
        "locale": "es-MX",
        "preferred_channel": "sms",
        "quiet_hours_enabled": True,
        "quiet_hours_start": "21:00",
        "quiet_hours_end": "08:30",
        "opt_outs": [
            {"category": "marketing", "channel": "*"},
            {"category": "*", "channel": "sms"},
            {"category": "marketing", "channel": "*"},
        ],
    }
    response = alice_api.put(recipient_url("ana-1"), body, format="json")
    # then: 201, the opt-outs once each
    assert response.status_code == 201, response.json()
    expected = {
        **body,
        "external_id": "ana-1",
        "slack_webhook_url": "",
        "teams_webhook_url": "",
        "discord_webhook_url": "",
        "opt_outs": [{"category": "marketing", "channel": "*"}, {"category": "*", "channel": "sms"}],
    }
    assert response.json() == expected
    recipient = Recipient.objects.get(account=alice, external_id="ana-1")
    assert (recipient.email, recipient.phone, recipient.timezone, recipient.locale) == (
        "ana@example.com",
        "+34600111222",
        "America/New_York",
        "es-MX",
    )
    preference = RecipientPreference.objects.get(recipient=recipient)
    assert (preference.account, preference.quiet_hours_start, preference.quiet_hours_end) == (
        alice,
        time(21, 0),
        time(8, 30),
    )
    assert alice_api.get(recipient_url("ana-1")).json() == expected
    # when: again, with a part of it
    response = alice_api.put(recipient_url("ana-1"), {"quiet_hours_enabled": False, "name": "Ana M."}, format="json")
    # then: 200, the rest kept
    assert response.status_code == 200
    assert response.json() == {**expected, "quiet_hours_enabled": False, "name": "Ana M."}
    assert Recipient.objects.count() == RecipientPreference.objects.count() == 1


def test_a_recipient_made_by_a_send_answers_the_default_preferences(alice, alice_api):
    Recipient.objects.create(account=alice, external_id="ana-1", email="ana@example.com")
    response = alice_api.get(recipient_url("ana-1"))
    assert response.status_code == 200
    assert response.json() == {**RECIPIENT_DEFAULTS, "email": "ana@example.com"}
    assert not RecipientPreference.objects.exists()


def test_patch_creates_with_defaults_for_the_fields_not_given(alice_api):
    response = alice_api.patch(recipient_url("ana-1"), {"preferred_channel": "email"}, format="json")
    assert response.status_code == 201
    assert response.json() == {**RECIPIENT_DEFAULTS, "preferred_channel": "email"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("phone", "600111222"),
        ("email", "not-an-address"),
        ("timezone", "Europe/Atlantis"),
        ("locale", "español"),
        ("preferred_channel", "fax"),
        ("quiet_hours_start", "25:00"),
        ("quiet_hours_end", "-01:00"),
        ("quiet_hours_enabled", "maybe"),
        ("opt_outs", [{"category": "promotions", "channel": "*"}]),
        ("opt_outs", [{"category": "marketing", "channel": "fax"}]),
        ("opt_outs", [{"category": "marketing"}]),
        ("opt_outs", {"category": "marketing", "channel": "*"}),
    ],
)
def test_a_bad_recipient_value_is_a_400_naming_the_field_and_writes_nothing(alice_api, field, value):
    response = alice_api.put(recipient_url("ana-1"), {"name": "Ana", field: value}, format="json")
    assert_invalid(response, field)
    assert not Recipient.objects.exists()
    assert not RecipientPreference.objects.exists()


def test_quiet_hours_must_not_start_and_end_at_the_same_time(alice_api):
    response = alice_api.put(
        recipient_url("ana-1"), {"quiet_hours_enabled": True, "quiet_hours_end": "22:00"}, format="json"
    )
    assert_invalid(response, "quiet_hours_end")


def test_an_external_id_longer_than_the_column_is_refused(alice_api):
    response = alice_api.put(recipient_url("a" * 201), {"name": "Ana"}, format="json")
    assert_invalid(response, "external_id")
    assert not Recipient.objects.exists()


def test_another_accounts_recipient_is_a_404(alice, bob, alice_api, bob_api):
    # given
    alice_api.put(recipient_url("ana-1"), {"name": "Ana", "quiet_hours_enabled": True}, format="json")
    # then: bob sees, unsubscribes and records nothing of alice's
    assert bob_api.get(recipient_url("ana-1")).status_code == 404
    assert bob_api.post(recipient_url("ana-1", "unsubscribe/"), {}, format="json").status_code == 404
    assert bob_api.get(recipient_url("ana-1", "consent/")).status_code == 404
    assert bob_api.post(recipient_url("ana-1", "consent/"), {"granted": True}, format="json").status_code == 404
    assert not ConsentRecord.objects.exists()
    # bob's PUT makes his own recipient with that id
    assert bob_api.put(recipient_url("ana-1"), {"name": "Someone else"}, format="json").status_code == 201
    assert sorted(Recipient.objects.values_list("account__username", "name")) == [
        ("alice", "Ana"),
        ("bob", "Someone else"),
    ]
    assert alice_api.get(recipient_url("ana-1")).json()["quiet_hours_enabled"] is True
    assert bob_api.get(recipient_url("ana-1")).json()["quiet_hours_enabled"] is False


# --- Unsubscribe and consent ----------------------------------------------------------


def test_unsubscribe_opts_out_of_marketing_and_records_the_withdrawal(alice, alice_api):
    # given
    alice_api.put(recipient_url("ana-1"), {"email": "ana@example.com"}, format="json")
    # when: twice, with no body
    first = alice_api.post(recipient_url("ana-1", "unsubscribe/"))
    second = alice_api.post(recipient_url("ana-1", "unsubscribe/"), {}, format="json")
    # then: one opt-out, and one withdrawal in the ledger (the second finds it in force)
    assert first.status_code == second.status_code == 200
    assert second.json() == {
        **RECIPIENT_DEFAULTS,
        "email": "ana@example.com",
        "opt_outs": [{"category": "marketing", "channel": "*"}],
    }
    records = ConsentRecord.objects.filter(account=alice)
    assert list(records.values_list("granted", "channel", "category", "method", "recipient__external_id")) == [
        (False, "*", "marketing", "api", "ana-1")
    ]


def test_unsubscribe_from_everything_on_one_channel(alice_api):
    alice_api.put(recipient_url("ana-1"), {"opt_outs": [{"category": "marketing", "channel": "email"}]}, format="json")
    response = alice_api.post(
        recipient_url("ana-1", "unsubscribe/"), {"category": "*", "channel": "sms"}, format="json"
    )
    assert response.json()["opt_outs"] == [
        {"category": "marketing", "channel": "email"},
        {"category": "*", "channel": "sms"},
    ]
    assert list(ConsentRecord.objects.values_list("category", "channel", "granted")) == [("*", "sms", False)]


@pytest.mark.parametrize(("field", "value"), [("category", "promotions"), ("channel", "pigeon")])
def test_a_bad_unsubscribe_is_a_400_and_changes_nothing(alice_api, field, value):
    alice_api.put(recipient_url("ana-1"), {}, format="json")
    response = alice_api.post(recipient_url("ana-1", "unsubscribe/"), {field: value}, format="json")
    assert_invalid(response, field)
    assert RecipientPreference.objects.get().opt_outs == []
    assert not ConsentRecord.objects.exists()


def test_unsubscribing_an_unknown_recipient_is_a_404(alice_api):
    assert alice_api.post(recipient_url("nobody", "unsubscribe/")).status_code == 404
    assert not Recipient.objects.exists()
    assert not ConsentRecord.objects.exists()


def test_the_consent_ledger_lists_newest_first(alice, alice_api):
    # given
    alice_api.put(recipient_url("ana-1"), {}, format="json")
    assert alice_api.get(recipient_url("ana-1", "consent/")).json()["results"] == []
    # when
    with time_machine.travel(datetime(2026, 6, 1, 9, tzinfo=ZoneInfo("UTC")), tick=False) as clock:
        granted = alice_api.post(
            recipient_url("ana-1", "consent/"), {"granted": True, "detail": "ticked the box"}, format="json"
        )
        clock.shift(3600)
        withdrawn = alice_api.post(
            recipient_url("ana-1", "consent/"), {"granted": False, "channel": "sms"}, format="json"
        )
    # then
    assert granted.status_code == withdrawn.status_code == 201
    assert granted.json() == {
        "id": granted.json()["id"],
        "granted": True,
        "channel": "*",
        "category": "marketing",
        "method": "api",
        "detail": "ticked the box",
        "recorded_at": "2026-06-01T09:00:00Z",
    }
    listed = alice_api.get(recipient_url("ana-1", "consent/")).json()
    assert listed["count"] == 2
    assert [(r["granted"], r["channel"], r["recorded_at"]) for r in listed["results"]] == [
        (False, "sms", "2026-06-01T10:00:00Z"),
        (True, "*", "2026-06-01T09:00:00Z"),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "granted"),
        ({"granted": True, "channel": "fax"}, "channel"),
        ({"granted": True, "category": "x"}, "category"),
    ],
)
def test_a_bad_consent_record_is_a_400(alice_api, body, field):
    alice_api.put(recipient_url("ana-1"), {}, format="json")
    assert_invalid(alice_api.post(recipient_url("ana-1", "consent/"), body, format="json"), field)
    assert not ConsentRecord.objects.exists()


# --- What the decision makes of them --------------------------------------------------


def send(api, template: str):
    body = {
        "channel": "email",
        "recipient": {"email": "ana@example.com", "external_id": "ana-1"},
        "template": template,
        "context": {"event_name": "Spring sale"},
    }
    response = api.post(SEND_URL, body, format="json")
    assert response.status_code == 202, response.json()
    return Delivery.objects.get(pk=response.json()["deliveries"][0]["id"])


def test_after_unsubscribe_a_marketing_send_is_stored_suppressed(alice, alice_api):
    # given: Ana had agreed to marketing, then unsubscribed
    make_template(alice, key="promo", category="marketing")
    make_template(alice, key="receipt")
    alice_api.put(recipient_url("ana-1"), {"email": "ana@example.com"}, format="json")
    alice_api.post(recipient_url("ana-1", "consent/"), {"granted": True}, format="json")
    assert send(alice_api, "promo").status == "queued"
    alice_api.post(recipient_url("ana-1", "unsubscribe/"))
    # when
    promo, receipt = send(alice_api, "promo"), send(alice_api, "receipt")
    # then: the marketing one is kept with its reason, never queued; the transactional one goes
    assert (promo.status, promo.error_code, promo.error_message) == (
        "suppressed",
        "skipped",
        "opted_out: the recipient opted out of marketing on *",
    )
    assert list(promo.events.values_list("status", "detail")) == [
        ("suppressed", "opted_out: the recipient opted out of marketing on *")
    ]
    assert receipt.status == "queued"
    # when: Ana agrees again, the opt-out is lifted with it
    response = alice_api.post(recipient_url("ana-1", "consent/"), {"granted": True}, format="json")
    assert response.status_code == 201
    assert alice_api.get(recipient_url("ana-1")).json()["opt_outs"] == []
    assert send(alice_api, "promo").status == "queued"


def test_quiet_hours_set_over_the_api_hold_a_send(alice, alice_api):
    make_template(alice, key="receipt")
    alice_api.put(
        recipient_url("ana-1"),
        {"email": "ana@example.com", "timezone": "Asia/Tokyo", "quiet_hours_enabled": True},
        format="json",
    )
    tokyo = ZoneInfo("Asia/Tokyo")
    with time_machine.travel(datetime(2026, 6, 10, 23, 0, tzinfo=tokyo), tick=False):
        delivery = send(alice_api, "receipt")
    assert (delivery.status, delivery.next_attempt_at) == ("scheduled", datetime(2026, 6, 11, 7, 0, tzinfo=tokyo))
