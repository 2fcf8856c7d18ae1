"""Campaigns: the API, the fan-out through accept, pause / resume / cancel without sending
anyone twice or skipping anyone, skipped recipients with their reasons, A/B assignment,
per-recipient results, and the commands."""

import csv
import io
from collections import Counter
from datetime import UTC, datetime, time

import pytest
from django.core.management import call_command

from campaigns.models import Audience, AudienceMember, Campaign, CampaignRecipient, CampaignVariant
from campaigns.services import (
    campaign_cancel,
    campaign_create,
    campaign_fan_out,
    campaign_pause,
    campaign_resume,
    campaign_start,
    campaigns_watch,
    variant_for,
)
from notifications.models import Delivery, Notification, Recipient
from preferences.models import Suppression, address_hash
from tests.factories import make_template

pytestmark = pytest.mark.django_db

CAMPAIGNS = "/api/v1/campaigns/"


def phone(n: int) -> str:
    return f"+1415555{n:04d}"


def audience_of(account, count: int, *, name="clients", without_phone=()) -> Audience:
    audience = Audience.objects.create(account=account, name=name)
    people = Recipient.objects.bulk_create(
        [
            Recipient(
                account=account,
                external_id=f"client-{n}",
                phone="" if n in without_phone else phone(n),
                name=f"Client {n}",
            )
            for n in range(count)
        ]
    )
    AudienceMember.objects.bulk_create(
        [
            AudienceMember(audience=audience, recipient=person, attributes={"first": f"C{n}"})
            for n, person in enumerate(people)
        ]
    )
    audience.member_count = count
    audience.save()
    return audience


def sms_campaign(account, audience, **overrides) -> Campaign:
    fields = {
        "name": "Spring offer",
        "audience": audience,
        "channels": ["sms"],
        "subject": "",
        "message": "20% off this week, {{ first }}",
        # Marketing needs recorded consent (tested on its own below).
        "category": "transactional",
    }
    fields.update(overrides)
    return campaign_create(account, **fields)


def notified(campaign) -> Counter:
    """How many notifications each recipient of the campaign got."""
    return Counter(
        Notification.objects.filter(campaign_recipient__campaign=campaign).values_list("recipient_id", flat=True)
    )


# --- The API -------------------------------------------------------------------------------


def test_create_start_and_read_a_campaign_over_the_api(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    # given
    audience = audience_of(alice, 5)
    make_template(alice)
    # when: a draft
    response = alice_api.post(
        CAMPAIGNS,
        {
            "name": "Reminder blast",
            "audience": audience.pk,
            "channels": ["sms"],
            "template": "reminder",
            "context": {"event_name": "Open day"},
            "category": "transactional",
        },
        format="json",
    )
    # then
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["status"], body["channels"], body["category"]) == ("draft", ["sms"], "transactional")
    assert [(v["name"], v["template"], v["split"]) for v in body["variants"]] == [("A", "reminder", 100)]
    # when: started (fan-out and dispatch run in-process here)
    with django_capture_on_commit_callbacks(execute=True):
        started = alice_api.post(f"{CAMPAIGNS}{body['id']}/start/")
    assert started.status_code == 200, started.json()
    campaigns_watch()  # what beat runs: completes a campaign whose deliveries all settled
    detail = alice_api.get(f"{CAMPAIGNS}{body['id']}/").json()
    # then: everyone got one SMS
    assert detail["status"] == "completed"
    assert detail["counts"]["recipients_reached"] == 5
    assert detail["counts"]["by_status"]["sent"] == 5
    assert detail["counts"]["progress"] == 1.0
    assert twilio.sent_count() == 5
    assert "Open day" in twilio.requests[0]["Body"]


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"channels": []}, "channels"),
        ({"channels": ["pigeon"]}, "channels"),
        ({"audience": 999_999}, "audience"),
        ({"message": "", "template": ""}, "template"),
        ({"template": "no-such-template", "message": ""}, "template"),
        (
            {"variants": [{"name": "A", "message": "x", "split": 60}, {"name": "B", "message": "y", "split": 30}]},
            "variants",
        ),
        ({"fallback": True}, "fallback"),
        ({"throttle_per_minute": 0}, "throttle_per_minute"),
    ],
)
def test_bad_input_names_the_field(alice, alice_api, overrides, field):
    audience = audience_of(alice, 1)
    body = {"name": "x", "audience": audience.pk, "channels": ["sms"], "message": "hi", **overrides}
    if "variants" in overrides:
        body.pop("message")
    response = alice_api.post(CAMPAIGNS, body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()


def test_another_account_s_campaign_and_audience_are_not_found(alice, bob, alice_api, bob_api):
    campaign = sms_campaign(alice, audience_of(alice, 1))
    for path in ("", "start/", "pause/", "resume/", "cancel/", "recipients/"):
        method = bob_api.get if path in ("", "recipients/") else bob_api.post
        assert method(f"{CAMPAIGNS}{campaign.pk}/{path}").status_code == 404
    theirs = bob_api.post(
        CAMPAIGNS,
        {"name": "x", "audience": campaign.audience_id, "channels": ["sms"], "message": "hi"},
        format="json",
    )
    assert theirs.status_code == 400
    assert "audience" in theirs.json()["errors"]
    assert bob_api.get(CAMPAIGNS).json()["count"] == 0


def test_an_action_the_status_does_not_allow_is_a_409(alice, alice_api):
    campaign = sms_campaign(alice, audience_of(alice, 1))
    assert alice_api.post(f"{CAMPAIGNS}{campaign.pk}/resume/").status_code == 409
    assert alice_api.post(f"{CAMPAIGNS}{campaign.pk}/pause/").status_code == 409
    assert alice_api.post(f"{CAMPAIGNS}{campaign.pk}/cancel/").status_code == 200
    assert alice_api.post(f"{CAMPAIGNS}{campaign.pk}/start/").status_code == 409


# --- Fan-out, pause, resume, cancel ------------------------------------------------------


def test_pause_holds_what_is_queued_and_resume_goes_on_without_repeats_or_gaps(
    alice, twilio, settings, django_capture_on_commit_callbacks
):
    # given: 25 members, pages of 10; dispatch and the fan-out's next task held back
    settings.BEACON_CAMPAIGN_PAGE_SIZE = 10
    campaign = sms_campaign(alice, audience_of(alice, 25))
    with django_capture_on_commit_callbacks():
        campaign_start(campaign)
        # when: one page is fanned out, then the campaign is paused
        first = campaign_fan_out(campaign.pk, seconds=0)
        campaign_pause(campaign)
    assert (first.pages, first.recipients) == (1, 10)
    assert Delivery.objects.filter(status="paused").count() == 10
    # then: fan-out does nothing while paused
    assert campaign_fan_out(campaign.pk, seconds=0).pages == 0
    assert twilio.sent_count() == 0
    # when: resumed; everything runs
    with django_capture_on_commit_callbacks(execute=True):
        campaign_resume(campaign)
    # then: each of the 25 once, none twice, the campaign completed
    campaigns_watch()
    campaign.refresh_from_db()
    assert campaign.status == "completed"
    counts = notified(campaign)
    assert len(counts) == 25 and set(counts.values()) == {1}
    assert twilio.sent_count() == 25
    assert len({r["To"] for r in twilio.requests}) == 25


def test_a_fan_out_run_twice_sends_nobody_twice(alice, twilio, settings, django_capture_on_commit_callbacks):
    settings.BEACON_CAMPAIGN_PAGE_SIZE = 7
    campaign = sms_campaign(alice, audience_of(alice, 20))
    with django_capture_on_commit_callbacks():
        campaign_start(campaign)
    with django_capture_on_commit_callbacks(execute=True):
        campaign_fan_out(campaign.pk, seconds=60)
        campaign_fan_out(campaign.pk, seconds=60)
    assert set(notified(campaign).values()) == {1}
    assert CampaignRecipient.objects.filter(campaign=campaign).count() == 20
    assert twilio.sent_count() == 20


def test_cancel_cancels_what_was_not_sent(alice, twilio, settings, django_capture_on_commit_callbacks):
    settings.BEACON_CAMPAIGN_PAGE_SIZE = 10
    campaign = sms_campaign(alice, audience_of(alice, 30))
    with django_capture_on_commit_callbacks():
        campaign_start(campaign)
        campaign_fan_out(campaign.pk, seconds=0)
        campaign_cancel(campaign)
    assert Delivery.objects.filter(status="cancelled").count() == 10
    assert campaign_fan_out(campaign.pk, seconds=0).pages == 0
    assert twilio.sent_count() == 0


def test_suppressed_and_unreachable_recipients_are_recorded_as_skipped_with_why(
    alice, alice_api, twilio, django_capture_on_commit_callbacks
):
    # given: one member said STOP, one has no phone number
    audience = audience_of(alice, 4, without_phone={3})
    Suppression.objects.create(account=alice, channel="sms", address_hash=address_hash("sms", phone(0)), reason="stop")
    campaign = sms_campaign(alice, audience)
    # when
    with django_capture_on_commit_callbacks(execute=True):
        campaign_start(campaign)
    # then
    counts = alice_api.get(f"{CAMPAIGNS}{campaign.pk}/").json()["counts"]
    assert counts["by_status"]["sent"] == 2
    assert counts["skipped"] == 2
    reasons = {row["reason"] for row in counts["skipped_reasons"]}
    assert "no phone number for sms" in reasons
    assert any("stop" in reason for reason in reasons)
    assert twilio.sent_count() == 2
    skipped = alice_api.get(f"{CAMPAIGNS}{campaign.pk}/recipients/?status=skipped").json()["results"]
    assert [(r["external_id"], r["skipped_reason"]) for r in skipped] == [("client-3", "no phone number for sms")]


def test_throttle_fans_out_a_tenth_of_the_minute_s_messages_per_page(
    alice, settings, django_capture_on_commit_callbacks
):
    campaign = sms_campaign(alice, audience_of(alice, 30), throttle_per_minute=60)
    with django_capture_on_commit_callbacks():
        campaign_start(campaign)
        result = campaign_fan_out(campaign.pk, seconds=60)
    assert (result.pages, result.recipients) == (1, 6)
    assert Notification.objects.count() == 6


def test_local_send_time_schedules_each_in_their_own_zone(alice, settings, django_capture_on_commit_callbacks):
    import time_machine

    audience = audience_of(alice, 2)
    Recipient.objects.filter(external_id="client-0").update(timezone="America/New_York")
    Recipient.objects.filter(external_id="client-1").update(timezone="Asia/Tokyo")
    campaign = sms_campaign(alice, audience, local_send_time=time(9, 0))
    with time_machine.travel(datetime(2026, 3, 2, 12, 0, tzinfo=UTC), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            campaign_start(campaign)
    sends = dict(
        Delivery.objects.filter(status="scheduled").values_list(
            "notification__recipient__external_id", "next_attempt_at"
        )
    )
    # 09:00 in New York is 14:00 UTC that day; in Tokyo it is 00:00 UTC, so the next day's
    assert sends == {
        "client-0": datetime(2026, 3, 2, 14, 0, tzinfo=UTC),
        "client-1": datetime(2026, 3, 3, 0, 0, tzinfo=UTC),
    }


# --- A/B -------------------------------------------------------------------------------------


def test_ab_assignment_is_stable_and_within_2_percent_of_the_split_at_10000():
    variants = [CampaignVariant(pk=1, name="A", split=30), CampaignVariant(pk=2, name="B", split=70)]
    chosen = [variant_for(42, recipient_id, variants).name for recipient_id in range(1, 10_001)]
    share = chosen.count("A") / len(chosen)
    assert abs(share - 0.30) <= 0.02
    assert chosen == [variant_for(42, recipient_id, variants).name for recipient_id in range(1, 10_001)]


def test_variants_send_their_own_message_and_results_are_per_variant(
    alice, alice_api, twilio, django_capture_on_commit_callbacks
):
    audience = audience_of(alice, 40)
    campaign = campaign_create(
        alice,
        category="transactional",
        name="A/B",
        audience=audience,
        channels=["sms"],
        variants=[{"name": "A", "message": "Offer A", "split": 50}, {"name": "B", "message": "Offer B", "split": 50}],
    )
    with django_capture_on_commit_callbacks(execute=True):
        campaign_start(campaign)
    rows = alice_api.get(f"{CAMPAIGNS}{campaign.pk}/recipients/?page_size=100").json()["results"]
    by_phone = {r["phone"]: r["variant"] for r in rows}
    for request in twilio.requests:
        assert request["Body"] == f"Offer {by_phone[request['To']]}"
    assert {r["variant"] for r in rows} == {"A", "B"}
    only_a = alice_api.get(f"{CAMPAIGNS}{campaign.pk}/recipients/?variant=A").json()["count"]
    assert 0 < only_a < 40


def test_recipients_export_as_csv(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    campaign = sms_campaign(alice, audience_of(alice, 3, without_phone={2}))
    with django_capture_on_commit_callbacks(execute=True):
        campaign_start(campaign)
    response = alice_api.get(f"{CAMPAIGNS}{campaign.pk}/recipients/?format=csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(line["external_id"], line["status"]) for line in lines] == [
        ("client-0", "sent"),
        ("client-1", "sent"),
        ("client-2", "skipped"),
    ]


# --- Commands --------------------------------------------------------------------------------


def test_send_campaign_dry_run_counts_after_suppression_and_writes_nothing(alice):
    audience = audience_of(alice, 5, without_phone={4})
    Suppression.objects.create(account=alice, channel="sms", address_hash=address_hash("sms", phone(1)), reason="stop")
    campaign = sms_campaign(alice, audience)
    out = io.StringIO()
    call_command("send_campaign", str(campaign.pk), "--dry-run", stdout=out)
    assert "3 of 5 would be sent to; 2 skipped" in out.getvalue()
    assert Notification.objects.count() == 0
    campaign.refresh_from_db()
    assert campaign.status == "draft"


def test_send_campaign_runs_it_with_a_progress_bar_and_campaign_status_reports(
    alice, twilio, django_capture_on_commit_callbacks
):
    campaign = sms_campaign(alice, audience_of(alice, 3))
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("send_campaign", str(campaign.pk), stdout=out)
    assert "100.0%" in out.getvalue()
    assert "3 reached, 0 skipped" in out.getvalue()
    campaigns_watch()
    status = io.StringIO()
    call_command("campaign_status", str(campaign.pk), stdout=status)
    assert "completed; 3 of 3 reached (100.0%)" in status.getvalue()


def test_a_marketing_campaign_reaches_only_those_who_consented(alice, twilio, django_capture_on_commit_callbacks):
    from preferences.services.consent import consent_record

    audience = audience_of(alice, 3)
    consent_record(account=alice, recipient=Recipient.objects.get(external_id="client-1"), granted=True)
    campaign = sms_campaign(alice, audience, category="marketing")
    with django_capture_on_commit_callbacks(execute=True):
        campaign_start(campaign)
    assert [r["To"] for r in twilio.requests] == [phone(1)]
    reasons = {d.error_message for d in Delivery.objects.filter(status="suppressed")}
    assert len(reasons) == 1 and "consent" in reasons.pop()


def test_a_scheduled_campaign_paused_and_resumed_before_its_time_waits_for_it(
    alice, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    campaign = sms_campaign(alice, audience_of(alice, 2), scheduled_for=timezone.now() + timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert campaign_start(campaign).status == "scheduled"
        assert campaign_pause(campaign).status == "paused"
        assert campaign_resume(campaign).status == "scheduled"
    assert Notification.objects.count() == 0


def test_results_per_variant_and_channel_with_rates(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    audience = audience_of(alice, 40)
    campaign = campaign_create(
        alice,
        category="transactional",
        name="A/B results",
        audience=audience,
        channels=["sms"],
        variants=[{"name": "A", "message": "Offer A", "split": 50}, {"name": "B", "message": "Offer B", "split": 50}],
    )
    with django_capture_on_commit_callbacks(execute=True):
        campaign_start(campaign)
    # two of A's were delivered, one of them clicked; one of B's failed later
    a_ids = list(
        Delivery.objects.filter(notification__campaign_recipient__variant__name="A").values_list("pk", flat=True)
    )
    b_ids = list(
        Delivery.objects.filter(notification__campaign_recipient__variant__name="B").values_list("pk", flat=True)
    )
    Delivery.objects.filter(pk=a_ids[0]).update(status="delivered")
    Delivery.objects.filter(pk=a_ids[1]).update(status="clicked")
    Delivery.objects.filter(pk=b_ids[0]).update(status="undelivered")
    results = {r["variant"]: r for r in alice_api.get(f"{CAMPAIGNS}{campaign.pk}/").json()["counts"]["results"]}
    a, b = results["A"], results["B"]
    assert (a["channel"], a["deliveries"], a["sent"]) == ("sms", len(a_ids), len(a_ids))
    assert (a["delivered"], a["opened"], a["clicked"], a["failed"]) == (2, 1, 1, 0)
    assert (a["delivery_rate"], a["click_rate"]) == (round(2 / len(a_ids), 4), 0.5)
    assert (b["deliveries"], b["failed"], b["delivered"], b["open_rate"]) == (len(b_ids), 1, 0, None)
    assert len(a_ids) + len(b_ids) == 40
