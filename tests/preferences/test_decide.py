"""The decision over planned deliveries: do-not-disturb and quiet hours in the reader's zone
(across midnight and DST changes), weekend exclusion, the daily cap, the critical override,
opt-outs, consent, the account's toggles and suppression; directly and through a send."""

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notifications.models import Delivery, Recipient
from preferences.models import DailyCount, RecipientPreference
from preferences.services import (
    Planned,
    Verdict,
    account_preference,
    consent_record,
    deliveries_decide,
    suppression_add,
)
from tests.factories import make_template
from tests.notifications.factories import SEND_URL

pytestmark = pytest.mark.django_db

MADRID = "Europe/Madrid"
NEW_YORK = "America/New_York"
TOKYO = "Asia/Tokyo"


def at(text: str, zone: str = "UTC") -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


def prefs(account, **fields):
    preference = account_preference(account=account)
    for name, value in fields.items():
        setattr(preference, name, value)
    preference.save()
    return preference


def person(account, n: int = 0, *, timezone: str = "", **preference) -> Recipient:
    recipient = Recipient.objects.create(
        account=account, email=f"person{n}@example.com", phone=f"+1415555{n:04d}", timezone=timezone
    )
    if preference:
        RecipientPreference.objects.create(account=account, recipient=recipient, **preference)
    return recipient


def plan(recipient: Recipient, when: datetime, *, channel="email", category="transactional", **fields) -> Planned:
    return Planned(
        recipient_id=recipient.pk,
        channel=channel,
        category=category,
        priority=fields.pop("priority", "normal"),
        send_at=when,
        kind=fields.pop("kind", "custom"),
        address=recipient.email if channel == "email" else recipient.phone,
        timezone=recipient.timezone,
        **fields,
    )


def decide(account, *planned: Planned):
    return deliveries_decide(account=account, planned=list(planned))


def decide_one(account, planned: Planned):
    (decision,) = decide(account, planned)
    return decision


# --- Do-not-disturb and quiet hours ---------------------------------------------------


@pytest.mark.parametrize(
    ("local", "until"),
    [
        ("2026-06-10T23:30", "2026-06-11T07:00"),  # across midnight: the next morning
        ("2026-06-11T00:15", "2026-06-11T07:00"),
        ("2026-06-11T06:59", "2026-06-11T07:00"),  # the same morning
        ("2026-06-10T22:00", "2026-06-11T07:00"),  # the window starts at 22:00 sharp
    ],
)
def test_do_not_disturb_across_midnight_defers_to_its_end(alice, local, until):
    # given: the account's do-not-disturb, 22:00-07:00 in Madrid
    prefs(alice, dnd_enabled=True, timezone=MADRID)
    ana = person(alice)
    # when
    decision = decide_one(alice, plan(ana, at(local, MADRID)))
    # then
    assert decision.verdict is Verdict.DEFER
    assert decision.until == at(until, MADRID)
    assert decision.until.utcoffset() == timedelta(hours=2)
    assert decision.reason == "deferred: do-not-disturb"


@pytest.mark.parametrize("local", ["2026-06-10T12:00", "2026-06-10T07:00", "2026-06-10T21:59"])
def test_outside_do_not_disturb_it_sends_now(alice, local):
    prefs(alice, dnd_enabled=True, timezone=MADRID)
    decision = decide_one(alice, plan(person(alice), at(local, MADRID)))
    assert (decision.verdict, decision.until, decision.reason) == (Verdict.SEND, None, "")


def test_do_not_disturb_switched_off_holds_nothing(alice):
    prefs(alice, dnd_enabled=False, timezone=MADRID)
    assert decide_one(alice, plan(person(alice), at("2026-06-10T23:30", MADRID))).verdict is Verdict.SEND


def test_a_same_day_window_defers_to_its_end(alice):
    prefs(alice, dnd_enabled=True, dnd_start_time=time(12, 0), dnd_end_time=time(14, 0))
    ana = person(alice)
    decision = decide_one(alice, plan(ana, at("2026-06-10T13:00")))
    assert (decision.verdict, decision.until) == (Verdict.DEFER, at("2026-06-10T14:00"))
    assert decide_one(alice, plan(ana, at("2026-06-10T14:00"))).verdict is Verdict.SEND


def test_quiet_hours_are_judged_in_the_recipients_own_zone(alice):
    # given: the account is in Madrid; Ana reads in New York and keeps quiet 22:00-07:00
    prefs(alice, timezone=MADRID)
    ana = person(alice, 1, timezone=NEW_YORK, quiet_hours_enabled=True)
    ben = person(alice, 2, quiet_hours_enabled=True)  # no zone of his own: the account's
    # when: 04:00 UTC is midnight in New York and 06:00 in Madrid
    night_in_new_york = decide(alice, plan(ana, at("2026-06-10T04:00")), plan(ben, at("2026-06-10T04:00")))
    # then: Ana waits for 07:00 in New York; Ben for 07:00 in Madrid
    assert [(d.verdict, d.until) for d in night_in_new_york] == [
        (Verdict.DEFER, at("2026-06-10T07:00", NEW_YORK)),
        (Verdict.DEFER, at("2026-06-10T07:00", MADRID)),
    ]
    assert night_in_new_york[0].until == at("2026-06-10T11:00")
    assert night_in_new_york[0].reason == "deferred: quiet hours"
    # when: 21:00 UTC is 17:00 in New York and 23:00 in Madrid
    evening = decide(alice, plan(ana, at("2026-06-10T21:00")), plan(ben, at("2026-06-10T21:00")))
    assert [(d.verdict, d.until) for d in evening] == [
        (Verdict.SEND, None),
        (Verdict.DEFER, at("2026-06-11T07:00", MADRID)),
    ]


def test_quiet_hours_switched_off_hold_nothing(alice):
    ana = person(alice, timezone=NEW_YORK, quiet_hours_enabled=False)
    assert decide_one(alice, plan(ana, at("2026-06-10T04:00"))).verdict is Verdict.SEND


@pytest.mark.parametrize(
    ("send_at", "until", "offset"),
    [
        # 2026-03-08: New York springs forward at 02:00 EST to 03:00 EDT.
        ("2026-03-08T03:00", "2026-03-08T11:00", -4),  # 22:00 EST on the 7th
        ("2026-03-08T06:30", "2026-03-08T11:00", -4),  # 01:30 EST, just before the gap
        ("2026-03-08T07:30", "2026-03-08T11:00", -4),  # 03:30 EDT, just after it
        # 2026-11-01: New York falls back at 02:00 EDT to 01:00 EST.
        ("2026-11-01T02:00", "2026-11-01T12:00", -5),  # 22:00 EDT on the 31st
        ("2026-11-01T05:30", "2026-11-01T12:00", -5),  # 01:30 EDT, the first time
        ("2026-11-01T06:30", "2026-11-01T12:00", -5),  # 01:30 EST, the second time
    ],
)
def test_quiet_hours_across_a_dst_change_end_at_seven_local_time(alice, send_at, until, offset):
    ana = person(alice, timezone=NEW_YORK, quiet_hours_enabled=True)
    decision = decide_one(alice, plan(ana, at(send_at)))
    assert decision.verdict is Verdict.DEFER
    assert decision.until == at(until)
    assert decision.until.astimezone(ZoneInfo(NEW_YORK)).strftime("%H:%M") == "07:00"
    assert decision.until.utcoffset() == timedelta(hours=offset)


def test_do_not_disturb_and_quiet_hours_together_wait_for_both(alice):
    # given: the account's 22:00-07:00 and Ana's own 06:00-09:00, both in New York
    prefs(alice, dnd_enabled=True, timezone=NEW_YORK)
    ana = person(
        alice,
        quiet_hours_enabled=True,
        quiet_hours_start=time(6, 0),
        quiet_hours_end=time(9, 0),
    )
    # when: 23:00 local
    decision = decide_one(alice, plan(ana, at("2026-06-10T23:00", NEW_YORK)))
    # then
    assert (decision.verdict, decision.until) == (Verdict.DEFER, at("2026-06-11T09:00", NEW_YORK))
    assert decision.reason == "deferred: do-not-disturb, quiet hours"


# --- Weekends -------------------------------------------------------------------------


def test_weekend_exclusion_of_reminders_is_judged_in_the_recipients_zone(alice):
    # given: Friday 2026-06-12 23:30 UTC is Saturday 08:30 in Tokyo and Friday 19:30 in New York
    prefs(alice, exclude_weekends_reminders=True)
    friday_night = at("2026-06-12T23:30")
    in_tokyo = person(alice, 1, timezone=TOKYO)
    in_new_york = person(alice, 2, timezone=NEW_YORK)
    # when
    decisions = decide(
        alice,
        plan(in_tokyo, friday_night, kind="booking_reminder"),
        plan(in_new_york, friday_night, kind="booking_reminder"),
        plan(in_tokyo, friday_night, kind="booking_confirmation"),
    )
    # then: only the reminder that would land on a Saturday is skipped
    assert [(d.verdict, d.reason) for d in decisions] == [
        (Verdict.SKIP, "weekend: the account excludes reminders at weekends"),
        (Verdict.SEND, ""),
        (Verdict.SEND, ""),
    ]


def test_weekend_reminders_go_when_the_account_does_not_exclude_them(alice):
    prefs(alice, exclude_weekends_reminders=False)
    ana = person(alice, timezone=TOKYO)
    assert decide_one(alice, plan(ana, at("2026-06-13T12:00"), kind="booking_reminder")).verdict is Verdict.SEND


def test_a_reminder_deferred_into_the_weekend_is_skipped(alice):
    # given: Friday 23:30 in Madrid, under do-not-disturb until Saturday 07:00
    prefs(alice, exclude_weekends_reminders=True, dnd_enabled=True, timezone=MADRID)
    ana = person(alice)
    friday_night = at("2026-06-12T23:30", MADRID)
    # when / then: a Saturday reminder is what the account excluded
    decision = decide_one(alice, plan(ana, friday_night, kind="booking_reminder"))
    assert (decision.verdict, decision.reason) == (Verdict.SKIP, "weekend: the account excludes reminders at weekends")
    # a confirmation is not a reminder: deferred to Saturday morning
    decision = decide_one(alice, plan(ana, friday_night, kind="booking_confirmation"))
    assert (decision.verdict, decision.until) == (Verdict.DEFER, at("2026-06-13T07:00", MADRID))


# --- The daily cap --------------------------------------------------------------------


def test_the_reminder_over_the_daily_cap_waits_for_the_next_local_day(alice):
    # given: two reminders a day at most; Ana reads in Madrid
    prefs(alice, max_reminders_per_day=2, timezone="UTC")
    ana = person(alice, 1, timezone=MADRID)
    ben = person(alice, 2, timezone=MADRID)
    noon = at("2026-06-10T12:00", MADRID)
    # when
    decisions = decide(
        alice, *[plan(ana, noon, kind="booking_reminder") for _ in range(3)], plan(ben, noon, kind="booking_reminder")
    )
    # then: the third waits for midnight in Madrid; Ben has his own count
    assert [(d.verdict, d.until) for d in decisions] == [
        (Verdict.SEND, None),
        (Verdict.SEND, None),
        (Verdict.DEFER, at("2026-06-11T00:00", MADRID)),
        (Verdict.SEND, None),
    ]
    assert decisions[2].reason == "deferred: daily cap of 2 reminders"
    # each counts on the local day it goes
    assert sorted(DailyCount.objects.values_list("recipient_id", "day", "count")) == [
        (ana.pk, date(2026, 6, 10), 2),
        (ana.pk, date(2026, 6, 11), 1),
        (ben.pk, date(2026, 6, 10), 1),
    ]


def test_the_daily_cap_counts_across_calls(alice):
    prefs(alice, max_reminders_per_day=2)
    ana = person(alice)
    noon = at("2026-06-10T12:00")
    assert [d.verdict for d in decide(alice, *[plan(ana, noon, kind="booking_reminder")] * 2)] == [Verdict.SEND] * 2
    # when: a later call the same day
    decision = decide_one(alice, plan(ana, noon + timedelta(hours=3), kind="booking_reminder"))
    # then
    assert (decision.verdict, decision.until) == (Verdict.DEFER, at("2026-06-11T00:00"))
    # other kinds are not capped and not counted
    assert decide_one(alice, plan(ana, noon, kind="booking_confirmation")).verdict is Verdict.SEND
    assert decide_one(alice, plan(ana, noon)).verdict is Verdict.SEND
    assert sorted(DailyCount.objects.values_list("day", "count")) == [(date(2026, 6, 10), 2), (date(2026, 6, 11), 1)]


def test_over_the_cap_under_do_not_disturb_waits_for_its_end(alice):
    prefs(alice, max_reminders_per_day=1, dnd_enabled=True, timezone=MADRID)
    ana = person(alice)
    noon = at("2026-06-10T12:00", MADRID)
    decisions = decide(alice, plan(ana, noon, kind="booking_reminder"), plan(ana, noon, kind="booking_reminder"))
    assert [(d.verdict, d.until) for d in decisions] == [
        (Verdict.SEND, None),
        (Verdict.DEFER, at("2026-06-11T07:00", MADRID)),
    ]
    assert decisions[1].reason == "deferred: daily cap of 1 reminders, do-not-disturb"


def test_a_reminder_is_never_skipped_for_the_cap_only_deferred(alice):
    prefs(alice, max_reminders_per_day=1)
    ana = person(alice)
    noon = at("2026-06-10T12:00")
    decisions = decide(alice, *[plan(ana, noon, kind="booking_reminder")] * 3)
    assert [(d.verdict, d.until) for d in decisions] == [
        (Verdict.SEND, None),
        (Verdict.DEFER, at("2026-06-11T00:00")),
        (Verdict.DEFER, at("2026-06-12T00:00")),
    ]


# --- Critical -------------------------------------------------------------------------


def test_a_critical_message_ignores_do_not_disturb_the_cap_and_opt_outs(alice):
    # given: do-not-disturb now, the cap already reached, and an opt-out of everything
    prefs(alice, dnd_enabled=True, max_reminders_per_day=1, timezone=MADRID)
    ana = person(alice, opt_outs=[{"category": "*", "channel": "*"}])
    night = at("2026-06-10T23:30", MADRID)
    DailyCount.objects.create(recipient=ana, day=date(2026, 6, 10), count=1)
    # when
    decisions = decide(
        alice,
        plan(ana, night, kind="booking_reminder", priority="critical"),
        plan(ana, night, kind="booking_reminder", priority="high"),
    )
    # then: the critical one goes now and is not counted; the high one is opted out
    assert decisions[0].verdict is Verdict.SEND
    assert (decisions[1].verdict, decisions[1].reason) == (
        Verdict.SKIP,
        "opted_out: the recipient opted out of * on *",
    )
    assert list(DailyCount.objects.values_list("day", "count")) == [(date(2026, 6, 10), 1)]


def test_a_critical_message_still_respects_suppression(alice):
    ana = person(alice)
    suppression_add(account=alice, channel="sms", address=ana.phone, reason="stop_keyword")
    decision = decide_one(alice, plan(ana, at("2026-06-10T12:00"), channel="sms", priority="critical"))
    assert decision.verdict is Verdict.SKIP
    assert decision.reason == "suppressed: the sms address is suppressed (stop_keyword)"


# --- Opt-outs and consent -------------------------------------------------------------


def grant_marketing(account, recipient, channel="*"):
    consent_record(account=account, recipient=recipient, channel=channel, granted=True)


def test_a_marketing_opt_out_blocks_marketing_not_transactional(alice):
    ana = person(alice, opt_outs=[{"category": "marketing", "channel": "*"}])
    grant_marketing(alice, ana)
    noon = at("2026-06-10T12:00")
    decisions = decide(
        alice,
        plan(ana, noon, category="marketing"),
        plan(ana, noon, category="marketing", channel="sms"),
        plan(ana, noon, category="transactional"),
        plan(ana, noon, category="system", channel="sms"),
    )
    assert [(d.verdict, d.reason) for d in decisions] == [
        (Verdict.SKIP, "opted_out: the recipient opted out of marketing on *"),
        (Verdict.SKIP, "opted_out: the recipient opted out of marketing on *"),
        (Verdict.SEND, ""),
        (Verdict.SEND, ""),
    ]


def test_an_opt_out_of_every_category_blocks_transactional_unless_critical(alice):
    ana = person(alice, opt_outs=[{"category": "*", "channel": "*"}])
    noon = at("2026-06-10T12:00")
    decisions = decide(
        alice,
        plan(ana, noon, category="transactional"),
        plan(ana, noon, category="transactional", priority="high"),
        plan(ana, noon, category="transactional", priority="critical"),
    )
    assert [d.verdict for d in decisions] == [Verdict.SKIP, Verdict.SKIP, Verdict.SEND]
    assert decisions[0].reason.startswith("opted_out:")


def test_an_opt_out_on_one_channel_leaves_the_others(alice):
    ana = person(alice, opt_outs=[{"category": "transactional", "channel": "sms"}])
    noon = at("2026-06-10T12:00")
    decisions = decide(alice, plan(ana, noon, channel="sms"), plan(ana, noon, channel="email"))
    assert [(d.verdict, d.reason) for d in decisions] == [
        (Verdict.SKIP, "opted_out: the recipient opted out of transactional on sms"),
        (Verdict.SEND, ""),
    ]


def test_marketing_needs_consent_in_force(alice):
    ana = person(alice)
    message = plan(ana, at("2026-06-10T12:00"), category="marketing")
    # no record: skipped
    decision = decide_one(alice, message)
    assert (decision.verdict, decision.reason) == (
        Verdict.SKIP,
        "no_consent: no recorded consent to marketing on email",
    )
    # a grant: sent
    with time_machine.travel(at("2026-06-01T09:00"), tick=False):
        grant_marketing(alice, ana)
    assert decide_one(alice, message).verdict is Verdict.SEND
    # a later withdrawal: skipped again
    with time_machine.travel(at("2026-06-05T09:00"), tick=False):
        consent_record(account=alice, recipient=ana, granted=False)
    assert decide_one(alice, message).reason.startswith("no_consent")
    # and a grant after that: sent again
    with time_machine.travel(at("2026-06-07T09:00"), tick=False):
        grant_marketing(alice, ana)
    assert decide_one(alice, message).verdict is Verdict.SEND


def test_consent_is_per_channel_and_the_latest_record_decides(alice):
    ana = person(alice, 1)
    ben = person(alice, 2)
    with time_machine.travel(at("2026-06-01T09:00"), tick=False) as clock:
        grant_marketing(alice, ana)  # every channel
        clock.shift(60)
        consent_record(account=alice, recipient=ana, channel="sms", granted=False)
        grant_marketing(alice, ben, channel="sms")
    noon = at("2026-06-10T12:00")
    decisions = decide(
        alice,
        plan(ana, noon, category="marketing", channel="email"),
        plan(ana, noon, category="marketing", channel="sms"),
        plan(ben, noon, category="marketing", channel="sms"),
        plan(ben, noon, category="marketing", channel="email"),
    )
    assert [d.verdict for d in decisions] == [Verdict.SEND, Verdict.SKIP, Verdict.SEND, Verdict.SKIP]


def test_another_accounts_consent_counts_for_nothing(alice, bob):
    ana = person(alice)
    consent_record(account=bob, recipient=ana, granted=True)
    assert decide_one(alice, plan(ana, at("2026-06-10T12:00"), category="marketing")).verdict is Verdict.SKIP


# --- The account's toggles and suppression --------------------------------------------


def test_the_accounts_toggle_switches_a_kind_off_on_a_channel(alice):
    prefs(alice)  # the defaults: booking reminders by email, not by SMS
    ana = person(alice)
    noon = at("2026-06-10T12:00")
    decisions = decide(
        alice,
        plan(ana, noon, channel="sms", kind="booking_reminder"),
        plan(ana, noon, channel="email", kind="booking_reminder"),
        plan(ana, noon, channel="sms", kind="custom"),  # a custom template has no toggle
    )
    assert [(d.verdict, d.reason) for d in decisions] == [
        (Verdict.SKIP, "channel_off: the account's booking_reminder on sms is switched off"),
        (Verdict.SEND, ""),
        (Verdict.SEND, ""),
    ]
    # when the account switches SMS reminders on
    prefs(alice, booking_reminders_sms=True)
    assert decide_one(alice, plan(ana, noon, channel="sms", kind="booking_reminder")).verdict is Verdict.SEND


def test_a_suppressed_address_is_skipped_on_its_channel_only(alice, bob):
    ana = person(alice)
    suppression_add(account=alice, channel="email", address=ana.email.upper(), reason="bounced")
    suppression_add(account=bob, channel="sms", address=ana.phone, reason="stop_keyword")  # not alice's
    noon = at("2026-06-10T12:00")
    decisions = decide(alice, plan(ana, noon, channel="email"), plan(ana, noon, channel="sms"))
    assert decisions[0].verdict is Verdict.SKIP
    assert decisions[0].reason.startswith("suppressed")
    assert decisions[0].reason == "suppressed: the email address is suppressed (bounced)"
    assert decisions[1].verdict is Verdict.SEND


# --- A batch in a constant number of queries ------------------------------------------


def batch_of(account, recipients: int) -> list[Planned]:
    """Four deliveries per recipient: a marketing email, an SMS reminder, a transactional
    email and a booking confirmation by SMS; every third recipient has quiet hours, every
    fifth a marketing grant, every seventh a suppressed phone."""
    people = Recipient.objects.bulk_create(
        [
            Recipient(account=account, email=f"r{n}@example.com", phone=f"+1415{n:07d}", timezone=NEW_YORK)
            for n in range(recipients)
        ]
    )
    RecipientPreference.objects.bulk_create(
        [RecipientPreference(account=account, recipient=r, quiet_hours_enabled=True) for r in people[::3]]
    )
    for r in people[::5]:
        grant_marketing(account, r)
    for r in people[::7]:
        suppression_add(account=account, channel="sms", address=r.phone, reason="stop_keyword")
    noon = at("2026-06-10T12:00", NEW_YORK)
    planned = []
    for r in people:
        planned += [
            plan(r, noon, category="marketing"),
            plan(r, noon, channel="sms", kind="booking_reminder"),
            plan(r, noon - timedelta(hours=13)),  # 23:00 the night before: quiet for some
            plan(r, noon, channel="sms", kind="booking_confirmation"),
        ]
    return planned


def test_a_batch_is_decided_in_the_same_number_of_queries_whatever_its_size(alice, bob):
    # given
    prefs(alice, booking_reminders_sms=True, booking_confirmations_sms=True, max_reminders_per_day=5)
    prefs(bob, booking_reminders_sms=True, booking_confirmations_sms=True, max_reminders_per_day=5)
    small, large = batch_of(alice, 3)[:10], batch_of(bob, 2500)
    assert (len(small), len(large)) == (10, 10_000)
    # when
    with CaptureQueriesContext(connection) as few:
        small_decisions = decide(alice, *small)
    with CaptureQueriesContext(connection) as many:
        large_decisions = decide(bob, *large)
    # then: preferences, suppressions, recipient preferences, consent, counts, one upsert
    assert len(few) == len(many) == 6
    assert len(large_decisions) == 10_000
    verdicts = [d.verdict for d in large_decisions]
    assert verdicts.count(Verdict.SKIP) == 2000 + 2 * 358  # no consent, and the suppressed phones
    assert verdicts.count(Verdict.DEFER) == 834  # the 23:00 emails of those with quiet hours
    # the first recipient has quiet hours, a grant and a suppressed phone
    assert [d.verdict for d in small_decisions][:4] == [Verdict.SEND, Verdict.SKIP, Verdict.DEFER, Verdict.SKIP]
    assert DailyCount.objects.filter(recipient__account=bob).count() == 2500 - 358


# --- Through a send -------------------------------------------------------------------


def send(api, **fields):
    body = {
        "channel": "email",
        "recipient": {"email": "ana@example.com", "external_id": "ana"},
        "template": "reminder",
        "context": {"event_name": "Haircut"},
    }
    body.update(fields)
    response = api.post(SEND_URL, body, format="json")
    assert response.status_code == 202, response.json()
    return Delivery.objects.get(pk=response.json()["deliveries"][0]["id"])


def test_a_send_at_night_is_deferred_to_the_end_of_quiet_hours_across_a_dst_change(alice, alice_api):
    # given: Ana keeps quiet 22:00-07:00 in New York; it is 22:30 there on 7 March 2026
    make_template(alice)
    ana = Recipient.objects.create(account=alice, external_id="ana", email="ana@example.com", timezone=NEW_YORK)
    RecipientPreference.objects.create(account=alice, recipient=ana, quiet_hours_enabled=True)
    with time_machine.travel(at("2026-03-07T22:30", NEW_YORK), tick=False):
        # when
        delivery = send(alice_api)
    # then: held until 07:00 EDT, after the clocks went forward
    assert (delivery.status, delivery.next_attempt_at) == ("scheduled", at("2026-03-08T11:00"))
    assert list(delivery.events.values_list("status", "detail")) == [
        ("scheduled", "deferred: quiet hours until 2026-03-08T07:00:00-04:00")
    ]


def test_a_send_under_do_not_disturb_is_deferred_and_goes_at_once_by_day(alice, alice_api):
    make_template(alice)
    prefs(alice, dnd_enabled=True, timezone=MADRID)
    with time_machine.travel(at("2026-06-10T23:30", MADRID), tick=False):
        night = send(alice_api)
    with time_machine.travel(at("2026-06-10T12:00", MADRID), tick=False):
        day = send(alice_api, recipient={"email": "ben@example.com"})
    assert (night.status, night.next_attempt_at) == ("scheduled", at("2026-06-11T07:00", MADRID))
    assert (day.status, day.next_attempt_at) == ("queued", at("2026-06-10T12:00", MADRID))


def test_a_marketing_send_without_consent_is_stored_suppressed(alice, alice_api):
    make_template(alice, key="promo", category="marketing")
    delivery = send(alice_api, template="promo")
    assert (delivery.status, delivery.error_code, delivery.error_message) == (
        "suppressed",
        "skipped",
        "no_consent: no recorded consent to marketing on email",
    )
    # when: consent is granted, the next one goes
    consent_record(account=alice, recipient=Recipient.objects.get(external_id="ana"), granted=True)
    assert send(alice_api, template="promo").status == "queued"


def test_an_sms_reminder_with_sms_reminders_switched_off_is_stored_suppressed(alice, alice_api):
    make_template(alice, key="booking-reminder", template_type="booking_reminder")
    delivery = send(
        alice_api,
        channel="sms",
        template="booking-reminder",
        recipient={"phone": "+14155550123", "external_id": "ana"},
    )
    assert (delivery.status, delivery.error_message) == (
        "suppressed",
        "channel_off: the account's booking_reminder on sms is switched off",
    )
