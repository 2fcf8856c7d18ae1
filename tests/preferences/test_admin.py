"""The operator console for preferences: pages load, suppressions are added and lifted and
consent is recorded through the services, and staff scoped to an account see only its rows."""

import datetime

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from preferences.models import (
    AccountPreference,
    ConsentRecord,
    DailyCount,
    RecipientPreference,
    Suppression,
    address_hash,
)
from preferences.services import account_preference, consent_record, suppression_add
from tests.notifications.factories import make_recipient
from tests.notifications.test_admin import change, changelist, messages_of

pytestmark = pytest.mark.django_db

MODELS = [
    "preferences_accountpreference",
    "preferences_recipientpreference",
    "preferences_suppression",
    "preferences_consentrecord",
    "preferences_dailycount",
]


def rows_of(account):
    """One row of each preferences model for the account."""
    recipient = make_recipient(account, external_id=f"{account.username}-1", email=f"ana@{account.username}.example")
    suppression_add(
        account=account, channel="email", address=recipient.email, reason="bounced", detail="550 no such user"
    )
    return {
        "preferences_accountpreference": account_preference(account=account),
        "preferences_recipientpreference": RecipientPreference.objects.create(
            account=account, recipient=recipient, preferred_channel="sms", quiet_hours_enabled=True
        ),
        "preferences_suppression": Suppression.objects.get(account=account),
        "preferences_consentrecord": consent_record(
            account=account, recipient=recipient, channel="email", granted=True, detail="signed up"
        ),
        "preferences_dailycount": DailyCount.objects.create(
            recipient=recipient, day=datetime.date(2026, 3, 2), count=2
        ),
    }


@pytest.fixture
def alice_rows(alice):
    return rows_of(alice)


@pytest.fixture
def bob_rows(bob):
    return rows_of(bob)


@pytest.fixture
def alice_staff(alice):
    """Alice's own operator: staff with every permission on these apps, not a superuser."""
    alice.is_staff = True
    alice.save()
    alice.user_permissions.set(Permission.objects.filter(content_type__app_label__in=["preferences", "notifications"]))
    client = Client()
    client.force_login(alice)
    return client


def lift(client, *suppressions, confirmed: bool):
    data = {"action": "lift_suppressions", "_selected_action": [str(s.pk) for s in suppressions]}
    if confirmed:
        data["post"] = "yes"
    return client.post(changelist("preferences_suppression"), data)


@pytest.mark.parametrize("model", MODELS)
def test_changelists_and_change_pages_load(admin_client, alice_rows, bob_rows, model):
    response = admin_client.get(changelist(model))
    assert response.status_code == 200
    assert response.context["cl"].result_count == 2
    assert admin_client.get(change(model, alice_rows[model].pk)).status_code == 200


@pytest.mark.parametrize(
    ("model", "status"),
    [
        ("preferences_accountpreference", 200),
        ("preferences_suppression", 200),
        ("preferences_consentrecord", 200),
        ("preferences_recipientpreference", 403),
        ("preferences_dailycount", 403),
    ],
)
def test_add_pages(admin_client, model, status):
    assert admin_client.get(f"/admin/{model.replace('_', '/', 1)}/add/").status_code == status


def test_changelist_filters_and_search(admin_client, alice_rows, bob_rows):
    suppressions = changelist("preferences_suppression")
    assert admin_client.get(suppressions, {"q": "ana@alice.example"}).context["cl"].result_count == 1
    assert admin_client.get(suppressions, {"reason": "bounced"}).context["cl"].result_count == 2
    assert admin_client.get(suppressions, {"reason": "complained"}).context["cl"].result_count == 0
    preferences = changelist("preferences_recipientpreference")
    assert admin_client.get(preferences, {"q": "alice-1"}).context["cl"].result_count == 1
    assert admin_client.get(preferences, {"quiet_hours_enabled__exact": "0"}).context["cl"].result_count == 0
    consent = changelist("preferences_consentrecord")
    assert admin_client.get(consent, {"granted__exact": "1", "method": "api"}).context["cl"].result_count == 2
    assert admin_client.get(consent, {"method": "admin"}).context["cl"].result_count == 0


def test_an_erased_address_shows_as_erased(admin_client, alice):
    suppression_add(account=alice, channel="sms", address="+14155550123", reason="stop_keyword")
    Suppression.objects.update(address="")
    content = admin_client.get(changelist("preferences_suppression")).content.decode()
    assert '<td class="field-address_shown">erased</td>' in content


def test_the_account_preference_page_groups_its_fields(admin_client, alice_rows):
    response = admin_client.get(change("preferences_accountpreference", alice_rows["preferences_accountpreference"].pk))
    names = [fieldset.name for fieldset in response.context["adminform"]]
    assert names == [None, "Email", "SMS", "Timing", "Do not disturb", "Weekends", "Method and cap"]


def test_an_account_preference_is_checked_like_the_api_does(admin_client, alice_rows):
    # given
    preference = alice_rows["preferences_accountpreference"]
    form = {
        "timezone": "Mars/Olympus",
        "reminder_minutes_before": "[120, 120]",
        "follow_up_minutes_after": "60",
        "daily_agenda_time": "08:00",
        "dnd_start_time": "22:00",
        "dnd_end_time": "07:00",
        "preferred_notification_method": "both",
        "max_reminders_per_day": "5",
    }
    # when
    response = admin_client.post(change("preferences_accountpreference", preference.pk), form)
    # then
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"timezone", "reminder_minutes_before"}
    assert AccountPreference.objects.get().timezone == "UTC"
    # when it is right
    form.update(timezone="Europe/Madrid", reminder_minutes_before="[60, 1440]")
    response = admin_client.post(change("preferences_accountpreference", preference.pk), form)
    # then
    assert response.status_code == 302
    preference.refresh_from_db()
    assert (preference.timezone, preference.reminder_minutes_before) == ("Europe/Madrid", [1440, 60])
    assert (preference.preferred_notification_method, preference.max_reminders_per_day) == ("both", 5)
    assert preference.booking_reminders_email is False  # an unticked box


def test_a_suppression_added_by_hand_goes_through_the_service(admin_client, alice):
    # when
    response = admin_client.post(
        "/admin/preferences/suppression/add/",
        {"account": alice.pk, "channel": " SMS ", "address": " +14155550123 ", "reason": "manual", "detail": "asked"},
    )
    # then
    assert response.status_code == 302
    suppression = Suppression.objects.get()
    assert (suppression.account, suppression.channel, suppression.address) == (alice, "sms", "+14155550123")
    assert suppression.address_hash == address_hash("sms", "+14155550123")
    assert (suppression.reason, suppression.detail) == ("manual", "asked")


def test_an_address_already_suppressed_is_refused(admin_client, alice_rows, alice):
    response = admin_client.post(
        "/admin/preferences/suppression/add/",
        {"account": alice.pk, "channel": "email", "address": "ANA@alice.example", "reason": "manual"},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"address": ["Already suppressed on email (Hard bounce)."]}
    assert Suppression.objects.filter(account=alice).count() == 1


def test_lifting_asks_first_then_lifts(admin_client, alice_rows, bob_rows):
    suppression = alice_rows["preferences_suppression"]
    # when
    response = lift(admin_client, suppression, confirmed=False)
    # then
    assert response.status_code == 200
    assert "Are you sure you want to lift these suppressions?" in response.content.decode()
    assert response.context["pks"] == [suppression.pk]
    assert Suppression.objects.count() == 2
    # when
    response = lift(admin_client, suppression, confirmed=True)
    # then
    assert response.status_code == 302
    assert messages_of(response) == [("success", "Lifted 1 suppression.")]
    assert list(Suppression.objects.values_list("account__username", flat=True)) == ["bob"]


def test_a_suppression_of_an_erased_address_is_not_lifted(admin_client, alice):
    suppression_add(account=alice, channel="sms", address="+14155550123", reason="stop_keyword")
    suppression_add(account=alice, channel="sms", address="+14155550999", reason="stop_keyword")
    erased = Suppression.objects.get(address="+14155550123")
    Suppression.objects.filter(pk=erased.pk).update(address="")
    erased.refresh_from_db()
    response = lift(admin_client, *Suppression.objects.all(), confirmed=True)
    assert sorted(messages_of(response)) == [
        ("success", "Lifted 1 suppression."),
        ("warning", f"{erased}: not lifted, its address was erased."),
    ]
    assert list(Suppression.objects.all()) == [erased]


def test_suppressions_are_not_edited_or_deleted_by_hand(admin_client, alice_rows):
    suppression = alice_rows["preferences_suppression"]
    page = admin_client.get(change("preferences_suppression", suppression.pk))
    assert 'name="_save"' not in page.content.decode()
    response = admin_client.post(change("preferences_suppression", suppression.pk), {"address": "x@example.com"})
    assert response.status_code == 403
    assert admin_client.get(f"/admin/preferences/suppression/{suppression.pk}/delete/").status_code == 403
    actions = admin_client.get(changelist("preferences_suppression")).context["action_form"].fields["action"]
    assert [name for name, _ in actions.choices] == ["", "lift_suppressions"]
    suppression.refresh_from_db()
    assert suppression.address == "ana@alice.example"


def test_consent_added_by_an_operator_is_appended_to_the_ledger(admin_client, alice_rows, alice):
    # given
    recipient = alice_rows["preferences_recipientpreference"].recipient
    first = alice_rows["preferences_consentrecord"]
    # when
    response = admin_client.post(
        "/admin/preferences/consentrecord/add/",
        {
            "account": alice.pk,
            "recipient": recipient.pk,
            "channel": "email",
            "category": "marketing",
            "granted": "False",
            "detail": "by phone, 3 March",
        },
    )
    # then
    assert response.status_code == 302
    assert ConsentRecord.objects.count() == 2
    record = ConsentRecord.objects.exclude(pk=first.pk).get()
    assert (record.account, record.recipient, record.channel, record.category) == (
        alice,
        recipient,
        "email",
        "marketing",
    )
    assert (record.granted, record.method) == (False, "admin")
    assert record.detail == "recorded by admin: by phone, 3 March"
    first.refresh_from_db()
    assert (first.granted, first.method, first.detail) == (True, "api", "signed up")


def test_consent_needs_a_recipient_of_the_same_account(admin_client, alice, bob_rows):
    response = admin_client.post(
        "/admin/preferences/consentrecord/add/",
        {
            "account": alice.pk,
            "recipient": bob_rows["preferences_recipientpreference"].recipient.pk,
            "channel": "*",
            "category": "marketing",
            "granted": "True",
        },
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"recipient": ["This recipient belongs to another account."]}
    assert ConsentRecord.objects.count() == 1


def test_the_ledger_is_never_changed_or_deleted(admin_client, alice_rows):
    record = alice_rows["preferences_consentrecord"]
    page = admin_client.get(change("preferences_consentrecord", record.pk))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(change("preferences_consentrecord", record.pk), {"granted": "False"}).status_code == 403
    assert admin_client.get(f"/admin/preferences/consentrecord/{record.pk}/delete/").status_code == 403
    record.refresh_from_db()
    assert record.granted is True


@pytest.mark.parametrize("model", MODELS)
def test_scoped_staff_see_their_own_account_only(alice_staff, alice_rows, bob_rows, model):
    response = alice_staff.get(changelist(model))
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [alice_rows[model]]
    assert alice_staff.get(change(model, alice_rows[model].pk)).status_code == 200
    # Another account's row is not found: the admin sends the operator back to its index.
    response = alice_staff.get(change(model, bob_rows[model].pk))
    assert (response.status_code, response.url) == (302, "/admin/")


def test_scoped_staff_cannot_lift_another_accounts_suppression(alice_staff, alice_rows, bob_rows):
    theirs = bob_rows["preferences_suppression"]
    response = lift(alice_staff, theirs, confirmed=True)
    assert messages_of(response) == []
    assert Suppression.objects.filter(pk=theirs.pk).exists()


def test_scoped_staff_add_only_for_their_own_account(alice_staff, alice, bob, bob_rows):
    # given
    form = alice_staff.get("/admin/preferences/suppression/add/").context["adminform"].form
    assert list(form.fields["account"].queryset) == [alice]
    # when
    response = alice_staff.post(
        "/admin/preferences/suppression/add/",
        {"account": bob.pk, "channel": "sms", "address": "+14155550999", "reason": "manual"},
    )
    # then
    assert response.status_code == 200
    assert set(response.context["adminform"].form.errors) == {"account"}
    assert Suppression.objects.filter(account=bob).count() == 1
    # and consent for another account's recipient is refused too
    response = alice_staff.post(
        "/admin/preferences/consentrecord/add/",
        {
            "account": alice.pk,
            "recipient": bob_rows["preferences_recipientpreference"].recipient.pk,
            "channel": "*",
            "category": "marketing",
            "granted": "True",
        },
    )
    assert set(response.context["adminform"].form.errors) == {"recipient"}
    assert ConsentRecord.objects.count() == 1
