"""Channel fallback: `fallback: true` tries the channels in order, each only when the
recipient could not be reached on the ones before it. Accept records every channel (a
skipped one too), holds the later ranks as standby; a failure releases the next rank, a
send cancels the rest. Driven end to end: the send API -> accept -> dispatch (eager) ->
the real pyfcm and Twilio clients -> their local doubles."""

import datetime
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryEvent,
    Device,
    Notification,
    NotificationSchedule,
    Recipient,
)
from notifications.services import deliveries_sweep, delivery_cancel, delivery_resend, delivery_track
from notifications.services.dispatch import deliveries_dispatch
from notifications.services.fallback import fallbacks_settle
from preferences.models import RecipientPreference
from preferences.services.consent import suppression_add

pytestmark = pytest.mark.django_db

SEND_URL = "/api/v1/notifications/send/"
BATCH_URL = "/api/v1/notifications/send/batch/"
LOGS_URL = "/api/v1/notifications/logs/"
ANDROID = "android-token-" + "a" * 40
GONE = "unregistered-" + "u" * 30
PHONE = "+14155550123"
DEVICES_HINT = "The recipient has no active push device; register one at /api/v1/recipients/{external_id}/devices/."
GONE_ERROR = "FCM answered HTTP 404 UNREGISTERED: Requested entity was not found."


def register(api, token: str, external_id: str = "user-1") -> None:
    response = api.post(
        f"/api/v1/recipients/{external_id}/devices/", {"platform": "android", "token": token}, format="json"
    )
    assert response.status_code == 201, response.json()


def fallback_request(*, channels=("push", "sms"), recipient=None, **extra) -> dict:
    return {
        "channels": list(channels),
        "fallback": True,
        "recipient": recipient or {"external_id": "user-1", "phone": PHONE},
        "subject": "Your table",
        "message": "Your table is ready.",
        **extra,
    }


def send(api, body, capture, *, execute=True, url=SEND_URL, **headers):
    with capture(execute=execute):
        return api.post(url, body, format="json", **headers)


def by_channel(notification_id=None) -> dict[str, Delivery]:
    deliveries = Delivery.objects.all()
    if notification_id:
        deliveries = deliveries.filter(notification_id=notification_id)
    return {d.channel: d for d in deliveries}


def events_of(delivery) -> list[tuple[str, str, str, str]]:
    return list(
        DeliveryEvent.objects.filter(delivery=delivery)
        .order_by("created_at", "pk")
        .values_list("from_status", "status", "source", "detail")
    )


# --- Accept ----------------------------------------------------------------------------------


def test_push_without_a_device_is_recorded_skipped_and_sms_is_sent(
    alice_api, fcm, twilio, django_capture_on_commit_callbacks
):
    # when: the recipient has no push device at all
    response = send(alice_api, fallback_request(), django_capture_on_commit_callbacks)
    # then: push is in the chain as skipped, and sms went out at once
    assert response.status_code == 202, response.json()
    notification = Notification.objects.get()
    d = by_channel()
    assert response.json() == {
        "id": str(notification.pk),
        "status": "accepted",
        "scheduled_for": None,
        "fallback": True,
        "deliveries": [
            {
                "id": str(d["push"].pk),
                "channel": "push",
                "to": "",
                "status": "suppressed",
                "encoding": "",
                "segments": 0,
                "fallback_rank": 0,
            },
            {
                "id": str(d["sms"].pk),
                "channel": "sms",
                "to": PHONE,
                "status": "queued",
                "encoding": "GSM-7",
                "segments": 1,
                "fallback_rank": 1,
            },
        ],
    }
    assert notification.fallback is True
    assert (d["push"].status, d["push"].to, d["push"].error_code, d["push"].error_message) == (
        "suppressed",
        "",
        "skipped",
        "no active push device",
    )
    assert events_of(d["push"]) == [("", "suppressed", "api", "no active push device")]
    assert d["sms"].status == "sent"
    assert [r["To"] for r in twilio.requests] == [PHONE]
    assert fcm.received() == []


def test_without_a_phone_sms_is_skipped_and_push_is_sent(alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    register(alice_api, ANDROID)
    response = send(
        alice_api,
        fallback_request(channels=["sms", "push"], recipient={"external_id": "user-1"}),
        django_capture_on_commit_callbacks,
    )
    assert response.status_code == 202, response.json()
    d = by_channel()
    assert (d["sms"].fallback_rank, d["sms"].status, d["sms"].error_message) == (
        0,
        "suppressed",
        "no phone number for sms",
    )
    assert (d["push"].fallback_rank, d["push"].status) == (1, "sent")
    assert [r["token"] for r in fcm.delivered()] == [ANDROID]
    assert twilio.sent_count() == 0


def test_a_suppressed_first_channel_makes_the_second_live(
    alice, alice_api, fcm, twilio, django_capture_on_commit_callbacks
):
    # given: the push device's address is suppressed
    register(alice_api, ANDROID)
    assert suppression_add(account=alice, channel="push", address=ANDROID, reason="manual")
    # when
    response = send(alice_api, fallback_request(), django_capture_on_commit_callbacks)
    # then: the decision skipped push, so sms is live from the start (never standby)
    assert response.status_code == 202, response.json()
    assert [(x["channel"], x["status"], x["fallback_rank"]) for x in response.json()["deliveries"]] == [
        ("push", "suppressed", 0),
        ("sms", "queued", 1),
    ]
    d = by_channel()
    assert d["push"].error_message == "suppressed: the push address is suppressed (manual)"
    assert d["sms"].status == "sent"
    assert [status for _, status, _, _ in events_of(d["sms"])] == ["queued", "sending", "sent"]
    assert fcm.received() == []


def test_the_later_channels_wait_as_standby_with_their_decided_time(
    alice_api, fcm, twilio, django_capture_on_commit_callbacks
):
    # given
    register(alice_api, ANDROID)
    # when: accepted, not yet dispatched
    response = send(alice_api, fallback_request(), django_capture_on_commit_callbacks, execute=False)
    # then
    assert response.status_code == 202, response.json()
    assert [(x["channel"], x["status"], x["fallback_rank"]) for x in response.json()["deliveries"]] == [
        ("push", "queued", 0),
        ("sms", "standby", 1),
    ]
    d = by_channel()
    assert d["sms"].next_attempt_at is not None and d["sms"].enqueued_at is None
    assert events_of(d["sms"]) == [
        ("", "standby", "api", "standby: tried if push cannot reach the recipient (accepted)")
    ]
    # only the live delivery's task was published
    assert fcm.received() == [] and twilio.sent_count() == 0


def test_without_fallback_nothing_changes(alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    # a channel without an address is still a 400
    body = {**fallback_request(), "fallback": False}
    response = alice_api.post(SEND_URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"recipient": {"devices": [DEVICES_HINT]}}
    # and every channel is sent, the receipt as it was
    register(alice_api, ANDROID)
    body.pop("fallback")
    response = send(alice_api, body, django_capture_on_commit_callbacks)
    assert response.status_code == 202, response.json()
    assert "fallback" not in response.json()
    assert [sorted(x) for x in response.json()["deliveries"]] == [
        ["channel", "encoding", "id", "segments", "status", "to"]
    ] * 2
    assert {(d.channel, d.status, d.fallback_rank) for d in Delivery.objects.all()} == {
        ("push", "sent", None),
        ("sms", "sent", None),
    }
    assert Notification.objects.get().fallback is False


def test_no_channel_reachable_is_a_400_as_without_fallback(alice_api, fcm, twilio):
    response = alice_api.post(SEND_URL, fallback_request(recipient={"external_id": "user-1"}), format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "recipient": {"devices": [DEVICES_HINT], "phone": ["Required to send on the sms channel."]}
    }
    assert (Notification.objects.count(), Delivery.objects.count(), Recipient.objects.count()) == (0, 0, 0)


@pytest.mark.parametrize("channels", [{"channel": "sms"}, {"channels": ["sms"]}])
def test_fallback_with_one_channel_is_a_400(alice_api, twilio, channels):
    body = {**fallback_request(), **channels}
    body.pop("channels", None) if "channel" in channels else None
    response = alice_api.post(SEND_URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "fallback": ["Fallback tries the channels in order: give at least two channels."]
    }
    assert Delivery.objects.count() == 0
    assert twilio.sent_count() == 0


def test_fallback_must_be_a_boolean(alice_api):
    response = alice_api.post(SEND_URL, fallback_request(fallback="sometimes"), format="json")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["fallback"]


# --- Release and cancel -------------------------------------------------------------------


def test_a_push_that_fails_permanently_releases_sms(alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    # given: the only device's token is gone (FCM answers 404 UNREGISTERED)
    register(alice_api, GONE)
    # when
    response = send(alice_api, fallback_request(), django_capture_on_commit_callbacks)
    # then: push failed at dispatch, sms was released and sent
    assert response.status_code == 202, response.json()
    assert [x["status"] for x in response.json()["deliveries"]] == ["queued", "standby"]
    d = by_channel()
    assert (d["push"].status, d["push"].error_message) == ("failed", GONE_ERROR)
    assert d["sms"].status == "sent"
    assert [r["token"] for r in fcm.received()] == [GONE]
    assert [r["To"] for r in twilio.requests] == [PHONE]
    released = f"fallback: push could not reach the recipient (failed: {GONE_ERROR}); trying sms"
    assert [(f, s, src, detail) for f, s, src, detail in events_of(d["sms"])][:2] == [
        ("", "standby", "api", "standby: tried if push cannot reach the recipient (accepted)"),
        ("standby", "queued", "fallback", released),
    ]
    assert [status for _, status, _, _ in events_of(d["sms"])] == ["standby", "queued", "sending", "sent"]
    assert (d["sms"].error_code, d["sms"].attempt_count) == ("", 1)


def test_a_sent_first_channel_cancels_the_standby(alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    # given
    register(alice_api, ANDROID)
    # when
    response = send(
        alice_api,
        fallback_request(
            channels=["push", "sms", "email"],
            recipient={"external_id": "user-1", "phone": PHONE, "email": "ana@example.com"},
        ),
        django_capture_on_commit_callbacks,
    )
    # then
    assert response.status_code == 202, response.json()
    d = by_channel()
    assert d["push"].status == "sent"
    for channel in ("sms", "email"):
        assert (d[channel].status, d[channel].error_code, d[channel].error_message) == (
            "cancelled",
            "not_needed",
            "not needed: sent on push",
        )
        assert events_of(d[channel])[1:] == [("standby", "cancelled", "fallback", "not needed: sent on push")]
        assert (d[channel].next_attempt_at, d[channel].enqueued_at) == (None, None)
    assert twilio.sent_count() == 0


def test_three_channels_fall_through_one_at_a_time(alice, alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    # given: push fails (gone token); the sms number is suppressed after accept
    register(alice_api, GONE)
    body = fallback_request(
        channels=["push", "sms", "email"],
        recipient={"external_id": "user-1", "phone": PHONE, "email": "ana@example.com"},
    )
    send(alice_api, body, django_capture_on_commit_callbacks, execute=False)
    suppression_add(account=alice, channel="sms", address=PHONE, reason="manual")
    d = by_channel()
    # when: push is dispatched, fails, and releases sms, which dispatch drops as suppressed
    with django_capture_on_commit_callbacks(execute=True):
        deliveries_dispatch(items=[(d["push"].pk, 0)])
    # then: email was released after sms and sent (console backend, locmem in tests)
    d = by_channel()
    assert [(c, d[c].status) for c in ("push", "sms", "email")] == [
        ("push", "failed"),
        ("sms", "suppressed"),
        ("email", "sent"),
    ]
    assert events_of(d["email"])[1][3] == (
        "fallback: sms could not reach the recipient (suppressed: the sms address was suppressed (manual) "
        "before it was sent); trying email"
    )
    assert twilio.sent_count() == 0


def test_a_device_removed_before_dispatch_releases_sms(alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    # given: accepted with a device, which is removed before the push is dispatched
    register(alice_api, ANDROID)
    send(alice_api, fallback_request(), django_capture_on_commit_callbacks, execute=False)
    Device.objects.all().delete()
    d = by_channel()
    # when
    with django_capture_on_commit_callbacks(execute=True):
        outcomes = deliveries_dispatch(items=[(d["push"].pk, 0)])
    # then
    assert outcomes == {str(d["push"].pk): "suppressed"}
    d = by_channel()
    assert (d["push"].status, d["sms"].status) == ("suppressed", "sent")
    assert events_of(d["sms"])[1][:3] == ("standby", "queued", "fallback")
    assert fcm.received() == []


def test_two_devices_release_only_when_both_failed(alice, alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    # given: two devices; accepted, not dispatched
    register(alice_api, ANDROID)
    register(alice_api, "other-" + "o" * 30)
    send(alice_api, fallback_request(), django_capture_on_commit_callbacks, execute=False)
    first, second = Delivery.objects.filter(channel="push").order_by("to")
    sms = Delivery.objects.get(channel="sms")
    # when: one fails while the other is still queued
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert delivery_track(delivery=first, status="failed", source="test", error_message="gone")
    # then: nothing is released yet
    sms.refresh_from_db()
    assert sms.status == "standby"
    assert callbacks == []
    # when: the other fails too
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert delivery_track(delivery=second, status="failed", source="test", error_message="gone too")
    # then: sms is released, with both reasons, and enqueued
    sms.refresh_from_db()
    assert (sms.status, sms.enqueued_at is not None) == ("queued", True)
    assert events_of(sms)[-1] == (
        "standby",
        "queued",
        "fallback",
        "fallback: push could not reach the recipient (failed: gone; failed: gone too); trying sms",
    )
    assert len(callbacks) == 1


def test_an_undelivered_callback_releases_the_next_channel(
    alice, alice_api, twilio, smtp, django_capture_on_commit_callbacks
):
    # given: sms first, email standby; the sms is being sent
    body = fallback_request(channels=["sms", "email"], recipient={"phone": PHONE, "email": "ana@example.com"})
    send(alice_api, body, django_capture_on_commit_callbacks, execute=False)
    d = by_channel()
    Delivery.objects.filter(pk=d["sms"].pk).update(status="sending")
    # when: Twilio reports it undelivered
    with django_capture_on_commit_callbacks(execute=True):
        delivery_track(
            delivery=d["sms"],
            status="undelivered",
            source="twilio",
            error_code="30003",
            error_message="Twilio error 30003",
        )
    # then
    d = by_channel()
    assert (d["sms"].status, d["email"].status) == ("undelivered", "sent")
    assert events_of(d["email"])[1][3] == (
        "fallback: sms could not reach the recipient (undelivered: Twilio error 30003); trying email"
    )
    assert len(smtp.messages) == 1


def test_a_late_failure_after_a_send_releases_nothing(alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    register(alice_api, ANDROID)
    send(alice_api, fallback_request(), django_capture_on_commit_callbacks)
    d = by_channel()
    assert (d["push"].status, d["sms"].status) == ("sent", "cancelled")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        delivery_track(delivery=d["push"], status="failed", source="test", error_message="late")
    assert Delivery.objects.get(pk=d["sms"].pk).status == "cancelled"
    assert callbacks == []


def test_a_released_channel_deferred_at_accept_is_scheduled(
    alice, alice_api, fcm, twilio, django_capture_on_commit_callbacks
):
    late_evening = datetime.datetime(2025, 3, 12, 23, 30, tzinfo=datetime.UTC)
    morning = datetime.datetime(2025, 3, 13, 7, 0, tzinfo=datetime.UTC)
    with time_machine.travel(late_evening, tick=False):
        # given: quiet hours for the recipient; critical push goes now, sms would wait
        register(alice_api, GONE)
        recipient = Recipient.objects.get(account=alice, external_id="user-1")
        RecipientPreference.objects.create(
            account=alice,
            recipient=recipient,
            quiet_hours_enabled=True,
            quiet_hours_start=datetime.time(22, 0),
            quiet_hours_end=datetime.time(7, 0),
        )
        send(alice_api, fallback_request(), django_capture_on_commit_callbacks, execute=False)
        d = by_channel()
        assert [(c, d[c].status, d[c].next_attempt_at) for c in ("push", "sms")] == [
            ("push", "scheduled", morning),
            ("sms", "standby", morning),
        ]
        # when: push fails (set directly, as a stage would) before morning
        Delivery.objects.filter(pk=d["push"].pk).update(status="failed", error_message="gone")
        d["push"].status, d["push"].error_message = "failed", "gone"
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            assert fallbacks_settle([d["push"]]) == {"released": 1, "cancelled": 0}
    # then: sms keeps its decided time: scheduled, for the sweep, no task now
    sms = Delivery.objects.get(pk=d["sms"].pk)
    assert (sms.status, sms.next_attempt_at, sms.enqueued_at) == ("scheduled", morning, None)
    assert events_of(sms)[-1][3] == (
        f"fallback: push could not reach the recipient (failed: gone); trying sms at {morning.isoformat()}"
    )
    assert callbacks == []


# --- Cancel, resend, the sweep ------------------------------------------------------------------


def test_cancelling_the_live_delivery_cancels_the_standby(alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    register(alice_api, ANDROID)
    send(alice_api, fallback_request(), django_capture_on_commit_callbacks, execute=False)
    d = by_channel()
    # when
    delivery_cancel(delivery=d["push"], source="admin")
    # then
    d = by_channel()
    assert (d["push"].status, d["sms"].status) == ("cancelled", "cancelled")
    assert events_of(d["sms"])[-1] == (
        "standby",
        "cancelled",
        "admin",
        "cancelled: the fallback chain was cancelled with its push delivery",
    )
    assert d["sms"].error_code == "fallback_cancelled"


def test_a_standby_delivery_can_be_cancelled(alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    register(alice_api, ANDROID)
    send(alice_api, fallback_request(), django_capture_on_commit_callbacks, execute=False)
    d = by_channel()
    delivery_cancel(delivery=d["sms"])
    d = by_channel()
    assert (d["push"].status, d["sms"].status) == ("queued", "cancelled")
    assert events_of(d["sms"])[-1] == ("standby", "cancelled", "api", "cancelled")


def test_cancelling_a_scheduled_fallback_send_cancels_its_standby(
    alice_api, fcm, twilio, django_capture_on_commit_callbacks
):
    register(alice_api, ANDROID)
    when = timezone.now() + timedelta(hours=2)
    response = send(
        alice_api, fallback_request(scheduled_for=when.isoformat()), django_capture_on_commit_callbacks, execute=False
    )
    assert [x["status"] for x in response.json()["deliveries"]] == ["scheduled", "standby"]
    # the schedule list holds the live delivery only
    schedule = NotificationSchedule.objects.get()
    assert schedule.delivery_id == by_channel()["push"].pk
    response = alice_api.post(f"/api/v1/notifications/scheduled/{schedule.pk}/cancel/")
    assert response.status_code == 200, response.json()
    assert {d.channel: d.status for d in Delivery.objects.all()} == {"push": "cancelled", "sms": "cancelled"}


def test_a_resent_fallback_delivery_is_that_one_only(alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    # given: push failed, sms was released and sent
    register(alice_api, GONE)
    send(alice_api, fallback_request(), django_capture_on_commit_callbacks)
    d = by_channel()
    assert (d["push"].status, d["sms"].status) == ("failed", "sent")
    # when
    with django_capture_on_commit_callbacks(execute=True):
        copy = delivery_resend(delivery=d["push"])
    # then: the copy is outside the chain (it ends suppressed: FCM's 404 deactivated the
    # device); its end releases or cancels nothing, and nothing else moved
    copy.refresh_from_db()
    assert (copy.fallback_rank, copy.status) == (None, "suppressed")
    assert {(x.channel, x.fallback_rank, x.status) for x in Delivery.objects.all()} == {
        ("push", 0, "failed"),
        ("sms", 1, "sent"),
        ("push", None, "suppressed"),
    }
    assert twilio.sent_count() == 1


def test_the_sweep_never_takes_a_standby_delivery(alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    register(alice_api, ANDROID)
    send(alice_api, fallback_request(), django_capture_on_commit_callbacks, execute=False)
    sms = by_channel()["sms"]
    long_ago = timezone.now() - timedelta(hours=1)
    Delivery.objects.filter(pk=sms.pk).update(next_attempt_at=long_ago, claimed_at=long_ago)
    later = timezone.now() + timedelta(seconds=settings.BEACON_SENDING_LEASE_SECONDS + 3600)
    with django_capture_on_commit_callbacks(execute=False):
        deliveries_sweep(now=later)
    sms.refresh_from_db()
    assert sms.status == "standby"
    assert twilio.sent_count() == 0


def test_a_worker_lost_in_the_sweep_releases_the_next_channel(
    alice_api, fcm, twilio, django_capture_on_commit_callbacks
):
    # given: push was handed to the provider by a worker that died
    register(alice_api, ANDROID)
    send(alice_api, fallback_request(), django_capture_on_commit_callbacks, execute=False)
    push = by_channel()["push"]
    claimed_at = timezone.now() - timedelta(seconds=settings.BEACON_SENDING_LEASE_SECONDS + 1)
    Delivery.objects.filter(pk=push.pk).update(status="sending", claimed_at=claimed_at, attempt_count=1)
    DeliveryAttempt.objects.create(delivery=push, number=1, provider="fcm", started_at=claimed_at)
    # when
    with django_capture_on_commit_callbacks(execute=True):
        counts = deliveries_sweep()
    # then
    assert counts["abandoned"] == 1
    d = by_channel()
    assert (d["push"].status, d["push"].error_code, d["sms"].status) == ("failed", "worker_lost", "sent")


# --- Batch, idempotency, settle itself --------------------------------------------------------


def test_a_batch_send_with_fallback(alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    # given: user-1 has a device, user-2 has none
    register(alice_api, ANDROID, external_id="user-1")
    body = {
        **fallback_request(),
        "recipients": [
            {"external_id": "user-1", "phone": "+14155550101"},
            {"external_id": "user-2", "phone": "+14155550102"},
        ],
    }
    body.pop("recipient")
    # when
    response = send(alice_api, body, django_capture_on_commit_callbacks, url=BATCH_URL)
    # then
    assert response.status_code == 202, response.json()
    answer = response.json()
    assert answer["fallback"] is True
    assert [
        [(x["channel"], x["status"], x["fallback_rank"]) for x in n["deliveries"]] for n in answer["notifications"]
    ] == [
        [("push", "queued", 0), ("sms", "standby", 1)],
        [("push", "suppressed", 0), ("sms", "queued", 1)],
    ]
    first, second = (n["id"] for n in answer["notifications"])
    assert {c: d.status for c, d in by_channel(first).items()} == {"push": "sent", "sms": "cancelled"}
    assert {c: d.status for c, d in by_channel(second).items()} == {"push": "suppressed", "sms": "sent"}
    assert [r["To"] for r in twilio.requests] == ["+14155550102"]


def test_a_batch_item_that_reaches_no_channel_refuses_the_batch(alice_api, fcm, twilio):
    body = {**fallback_request(), "recipients": [{"external_id": "user-1", "phone": PHONE}, {"external_id": "user-2"}]}
    body.pop("recipient")
    response = alice_api.post(BATCH_URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "recipients": {"1": {"devices": [DEVICES_HINT], "phone": ["Required to send on the sms channel."]}}
    }
    assert Delivery.objects.count() == 0


def test_an_idempotent_replay_answers_the_same_and_sends_nothing_more(
    alice_api, fcm, twilio, django_capture_on_commit_callbacks
):
    first = send(alice_api, fallback_request(), django_capture_on_commit_callbacks, HTTP_IDEMPOTENCY_KEY="k-1")
    second = send(alice_api, fallback_request(), django_capture_on_commit_callbacks, HTTP_IDEMPOTENCY_KEY="k-1")
    assert (first.status_code, second.status_code) == (202, 202)
    assert second.json() == first.json()
    assert second.json()["fallback"] is True
    assert second.headers["Idempotent-Replayed"] == "true"
    assert (Notification.objects.count(), Delivery.objects.count(), twilio.sent_count()) == (1, 2, 1)


def test_settling_twice_moves_each_standby_once(alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    register(alice_api, ANDROID)
    send(alice_api, fallback_request(), django_capture_on_commit_callbacks, execute=False)
    push = by_channel()["push"]
    Delivery.objects.filter(pk=push.pk).update(status="failed", error_message="x")
    push.status = "failed"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert fallbacks_settle([push]) == {"released": 1, "cancelled": 0}
        assert fallbacks_settle([push]) == {"released": 0, "cancelled": 0}
    assert len(callbacks) == 1
    sms = by_channel()["sms"]
    assert [status for _, status, _, _ in events_of(sms)] == ["standby", "queued"]


def test_settle_ignores_what_has_no_rank_or_settles_nothing(django_assert_num_queries, alice):
    with django_assert_num_queries(0):
        assert fallbacks_settle([Delivery(status="failed"), Delivery(status="queued", fallback_rank=0)]) == {
            "released": 0,
            "cancelled": 0,
        }


def _failed_pushes(api, capture, count: int) -> list[Delivery]:
    """A batch of `count` fallback notifications (push, then sms), their pushes failed."""
    body = {
        **fallback_request(),
        "recipients": [{"external_id": f"user-{n}", "phone": f"+1415555{n:04d}"} for n in range(count)],
    }
    body.pop("recipient")
    for n in range(count):
        register(api, f"token-{n}-" + "t" * 30, external_id=f"user-{n}")
    response = send(api, body, capture, url=BATCH_URL, execute=False)
    assert response.status_code == 202, response.json()
    pushes = list(Delivery.objects.filter(channel="push", status="queued"))
    Delivery.objects.filter(pk__in=[d.pk for d in pushes]).update(status="failed", error_message="gone")
    for delivery in pushes:
        delivery.status = "failed"
    return pushes


def test_the_release_costs_the_same_few_statements_whatever_the_batch(
    alice_api, fcm, twilio, django_capture_on_commit_callbacks
):
    counted = []
    for size in (2, 20):
        pushes = _failed_pushes(alice_api, django_capture_on_commit_callbacks, size)
        with django_capture_on_commit_callbacks(execute=False), CaptureQueriesContext(connection) as queries:
            assert fallbacks_settle(pushes) == {"released": size, "cancelled": 0}
        counted.append(len(queries))
        assert Delivery.objects.filter(channel="sms", status="queued").count() == size
        Delivery.objects.all().delete()
        Notification.objects.all().delete()
        Device.objects.all().delete()
    assert counted[0] == counted[1], counted
    assert counted[0] <= 7, counted


# --- What the log shows -------------------------------------------------------------------------


def test_the_log_shows_the_chain(alice_api, fcm, twilio, django_capture_on_commit_callbacks):
    # given: accepted, push live and sms standby
    register(alice_api, GONE)
    response = send(alice_api, fallback_request(), django_capture_on_commit_callbacks, execute=False)
    notification_id = response.json()["id"]
    # then: the log lists the standby delivery, with its rank, and filters on it
    standby = alice_api.get(LOGS_URL, {"status": "standby"}).json()["results"]
    assert [(x["channel"], x["status"], x["fallback"], x["fallback_rank"]) for x in standby] == [
        ("sms", "standby", True, 1)
    ]
    assert alice_api.get(LOGS_URL, {"fallback": "true"}).json()["count"] == 2
    assert alice_api.get(LOGS_URL, {"fallback": "false"}).json()["count"] == 0
    # when: push is dispatched and fails
    push = by_channel()["push"]
    with django_capture_on_commit_callbacks(execute=True):
        deliveries_dispatch(items=[(push.pk, 0)])
    # then: each delivery's detail tells its part of the chain
    rows = alice_api.get(LOGS_URL, {"notification": notification_id}).json()["results"]
    assert sorted((x["fallback_rank"], x["channel"], x["status"]) for x in rows) == [
        (0, "push", "failed"),
        (1, "sms", "sent"),
    ]
    sms = next(x for x in rows if x["channel"] == "sms")
    detail = alice_api.get(f"{LOGS_URL}{sms['id']}/").json()
    assert [(e["from_status"], e["status"], e["source"]) for e in detail["events"]] == [
        ("", "standby", "api"),
        ("standby", "queued", "fallback"),
        ("queued", "sending", "dispatch"),
        ("sending", "sent", "dispatch"),
    ]
    assert detail["events"][1]["detail"].startswith("fallback: push could not reach the recipient (failed: FCM")


def test_the_admin_shows_the_chain(alice, alice_api, admin_client, fcm, twilio, django_capture_on_commit_callbacks):
    register(alice_api, ANDROID)
    response = send(alice_api, fallback_request(), django_capture_on_commit_callbacks, execute=False)
    notification_id = response.json()["id"]
    page = admin_client.get(f"/admin/notifications/notification/{notification_id}/change/")
    assert page.status_code == 200
    assert b"Standby" in page.content
    listing = admin_client.get("/admin/notifications/delivery/", {"status__exact": "standby"})
    assert listing.status_code == 200
    assert b"Standby" in listing.content


def test_the_fallback_receipt_is_what_the_accepted_serializer_says(
    alice_api, fcm, twilio, django_capture_on_commit_callbacks
):
    import json

    from notifications.receipts import AcceptedSerializer

    response = send(alice_api, fallback_request(), django_capture_on_commit_callbacks, execute=False)
    notification = Notification.objects.get()
    expected = AcceptedSerializer(
        {
            "id": notification.pk,
            "status": "accepted",
            "scheduled_for": None,
            "fallback": True,
            "deliveries": list(notification.deliveries.order_by("fallback_rank")),
        }
    ).data
    assert response.json() == json.loads(json.dumps(expected))


def test_the_send_command_takes_fallback(alice, twilio, django_capture_on_commit_callbacks):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    with django_capture_on_commit_callbacks(execute=False):
        call_command(
            "send_notification",
            "alice",
            "--channel=email",
            "--channel=sms",
            "--email=ana@example.com",
            f"--phone={PHONE}",
            "--subject=Hi",
            "--message=Your table is ready.",
            "--fallback",
            stdout=out,
        )
    d = by_channel()
    assert out.getvalue().splitlines() == [f"{d['email'].pk} email queued", f"{d['sms'].pk} sms standby"]
    assert Notification.objects.get().fallback is True


def test_cleanup_keeps_a_notification_whose_standby_still_waits(
    alice_api, fcm, twilio, django_capture_on_commit_callbacks
):
    from notifications.services.upkeep import notifications_expired

    register(alice_api, ANDROID)
    send(alice_api, fallback_request(), django_capture_on_commit_callbacks, execute=False)
    Delivery.objects.filter(channel="push").update(status="failed")
    later = timezone.now() + timedelta(days=1)
    assert list(notifications_expired(before=later)) == []
    Delivery.objects.filter(channel="sms").update(status="cancelled")
    assert list(notifications_expired(before=later)) == [Notification.objects.get()]


@pytest.mark.django_db(transaction=True)
def test_two_failures_of_one_rank_at_once_release_the_next_once(alice, monkeypatch):
    """Two push devices fail in two workers at once: the one that settles second waits
    for the first's lock on the notification and then sees both failed (without it, each
    would see the other still sending, and nothing would be released)."""
    import threading
    import time

    from django.db import transaction

    from notifications.services import fallback

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's row locks and concurrent transactions")
    enqueued = []
    monkeypatch.setattr(fallback, "enqueue_dispatch", lambda items: enqueued.extend(items))
    recipient = Recipient.objects.create(account=alice, external_id="user-1", phone=PHONE)
    notification = Notification.objects.create(
        account=alice, recipient=recipient, channels=["push", "sms"], fallback=True
    )
    common = {"account": alice, "notification": notification, "body": "Hi"}
    first = Delivery.objects.create(channel="push", to="t1", status="sending", fallback_rank=0, **common)
    second = Delivery.objects.create(channel="push", to="t2", status="sending", fallback_rank=0, **common)
    sms = Delivery.objects.create(
        channel="sms", to=PHONE, status="standby", fallback_rank=1, next_attempt_at=timezone.now(), **common
    )
    first_settled, second_started = threading.Event(), threading.Event()
    errors = []

    def fail(delivery, before_commit=None, after_start=None):
        try:
            if after_start:
                after_start.wait(5)
                second_started.set()
            with transaction.atomic():
                Delivery.objects.filter(pk=delivery.pk).update(status="failed", error_message=delivery.to)
                delivery.status = "failed"
                fallback.fallbacks_settle([delivery])
                if before_commit:
                    first_settled.set()
                    second_started.wait(5)
                    time.sleep(0.3)  # the other is now waiting for the notification's lock
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=fail, args=(first,), kwargs={"before_commit": True}),
        threading.Thread(target=fail, args=(second,), kwargs={"after_start": first_settled}),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    sms.refresh_from_db()
    assert sms.status == "queued"
    assert [e.status for e in DeliveryEvent.objects.filter(delivery=sms)] == ["queued"]
    assert [item.delivery_id for item in enqueued] == [sms.pk]
