"""Push end to end in-process: devices registered through the API, the send API -> accept
(one delivery per active device) -> dispatch (eager) -> the real pyfcm / pywebpush clients
-> the FCM and Web Push doubles; a provider's "gone" deactivates the device."""

import datetime
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications.models import Delivery, Device, Notification, Recipient
from notifications.services.devices import devices_deactivate
from preferences.models import RecipientPreference
from preferences.services.consent import suppression_add
from tests.doubles.fcm import INVALID_ARGUMENT
from tests.doubles.webpush import GONE
from tests.factories import make_template

pytestmark = pytest.mark.django_db

SEND_URL = "/api/v1/notifications/send/"
BATCH_URL = "/api/v1/notifications/send/batch/"
TEMPLATES_URL = "/api/v1/notifications/templates/"
LOGS_URL = "/api/v1/notifications/logs/"
DEVICE_TABLE = '"notifications_device"'

ANDROID = "android-token-" + "a" * 40
IOS = "ios-token-" + "i" * 40
DEVICES_HINT = "The recipient has no active push device; register one at /api/v1/recipients/{external_id}/devices/."


def devices_url(external_id: str = "user-1") -> str:
    return f"/api/v1/recipients/{external_id}/devices/"


def register(api, token: str, platform: str = "android", external_id: str = "user-1", subscription=None) -> dict:
    body = {"platform": platform, "token": token}
    if subscription is not None:
        body["subscription"] = subscription
    response = api.post(devices_url(external_id), body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def register_web(api, webpush_server, external_id: str = "user-1", answer=None) -> str:
    """A browser's subscription, registered as a web device; returns its endpoint."""
    subscription = webpush_server.subscribe(answer=answer)
    register(api, subscription["endpoint"], "web", external_id, subscription["keys"])
    return subscription["endpoint"]


def push_request(external_id: str = "user-1", **extra) -> dict:
    return {"channel": "push", "recipient": {"external_id": external_id}, "subject": "Hi", "message": "Body", **extra}


def send(api, body, capture, url=SEND_URL):
    with capture(execute=True):
        return api.post(url, body, format="json")


def fcm_message(token: str, delivery_id, *, title="Hi", body="Body", **fields) -> dict:
    """The message FCM receives for a plain push, with `fields` over it."""
    return {
        "token": token,
        "notification": {"title": title, "body": body},
        "data": {"beacon_delivery": str(delivery_id)},
        **fields,
    }


def by_token(fcm) -> dict:
    return {request["token"]: request["message"] for request in fcm.received()}


# --- Fan-out ------------------------------------------------------------------------------


def test_one_send_reaches_every_active_device_and_no_other(
    alice, alice_api, bob_api, fcm, webpush_server, django_capture_on_commit_callbacks
):
    # given: an android token, an iOS token and a browser; an inactive phone; bob's device under the same id
    register(alice_api, ANDROID, "android")
    register(alice_api, IOS, "ios")
    endpoint = register_web(alice_api, webpush_server)
    register(alice_api, "old-token-123", "android")
    devices_deactivate(account_id=alice.pk, tokens=["old-token-123"], reason="UNREGISTERED")
    register(bob_api, "bob-token-456", "android")
    # when
    response = send(alice_api, push_request(), django_capture_on_commit_callbacks)
    # then: one delivery per active device of alice's recipient
    assert response.status_code == 202, response.json()
    listed = response.json()["deliveries"]
    assert sorted((d["channel"], d["to"], d["status"]) for d in listed) == sorted(
        [("push", ANDROID, "queued"), ("push", IOS, "queued"), ("push", endpoint, "queued")]
    )
    ids = {d["to"]: d["id"] for d in listed}
    assert by_token(fcm) == {
        ANDROID: fcm_message(ANDROID, ids[ANDROID]),
        IOS: fcm_message(IOS, ids[IOS]),
    }
    assert [r["status"] for r in fcm.received()] == [200, 200]
    (pushed,) = webpush_server.received()
    assert (pushed["endpoint"], pushed["status"]) == (endpoint, 201)
    assert pushed["payload"] == {"title": "Hi", "body": "Body", "beacon_delivery": ids[endpoint]}
    assert pushed["headers"]["urgency"] == "normal"
    deliveries = {d.to: d for d in Delivery.objects.all()}
    assert {to: (d.status, d.provider) for to, d in deliveries.items()} == {
        ANDROID: ("sent", "fcm"),
        IOS: ("sent", "fcm"),
        endpoint: ("sent", "webpush"),
    }
    assert deliveries[ANDROID].provider_message_id.startswith("projects/beacon-test/messages/")
    assert Notification.objects.get().recipient == Recipient.objects.get(account=alice, external_id="user-1")
    # the inactive device and bob's were not reached
    assert "old-token-123" not in by_token(fcm) and "bob-token-456" not in by_token(fcm)


# --- Refused at accept ---------------------------------------------------------------------


def test_a_recipient_without_an_active_device_is_a_400(alice, alice_api, fcm):
    # given: a recipient whose only device is inactive
    register(alice_api, ANDROID)
    devices_deactivate(account_id=alice.pk, tokens=[ANDROID], reason="UNREGISTERED")
    # when
    response = alice_api.post(SEND_URL, push_request(), format="json")
    # then
    assert response.status_code == 400
    assert response.json()["errors"] == {"recipient": {"devices": [DEVICES_HINT]}}
    assert (Notification.objects.count(), Delivery.objects.count(), fcm.received()) == (0, 0, [])


def test_push_without_an_external_id_is_a_400_naming_it(alice_api, fcm):
    response = alice_api.post(SEND_URL, {**push_request(), "recipient": {"email": "ana@example.com"}}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "recipient": {
            "external_id": ["Required to send on the push channel: it reaches the devices registered for it."]
        }
    }
    assert (Notification.objects.count(), Delivery.objects.count()) == (0, 0)


def test_email_and_push_without_devices_writes_nothing(alice_api, fcm, django_capture_on_commit_callbacks):
    body = {
        "channels": ["email", "push"],
        "recipient": {"external_id": "user-1", "email": "ana@example.com"},
        "subject": "Hi",
        "message": "Body",
    }
    response = send(alice_api, body, django_capture_on_commit_callbacks)
    assert response.status_code == 400
    assert response.json()["errors"] == {"recipient": {"devices": [DEVICES_HINT]}}
    assert (Recipient.objects.count(), Notification.objects.count(), Delivery.objects.count()) == (0, 0, 0)


def test_push_options_without_the_push_channel_are_a_400(alice_api):
    body = {
        "channel": "email",
        "recipient": {"email": "ana@example.com"},
        "subject": "Hi",
        "message": "Body",
        "push": {"data": {"k": "v"}},
    }
    response = alice_api.post(SEND_URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"push": ["Push options need the push channel."]}
    assert Delivery.objects.count() == 0


@pytest.mark.parametrize(
    "push,problem",
    [
        ({"sound": "ding"}, "options: unknown sound; push takes"),
        ({"silent": True}, "options.silent: a silent push carries data; give options.data"),
        ({"data": {"nested": {"a": 1}}}, "options.data: must be an object of texts"),
    ],
    ids=["unknown-key", "silent-without-data", "nested-data"],
)
def test_bad_push_options_on_a_send_are_a_400(alice_api, fcm, push, problem):
    register(alice_api, ANDROID)
    response = alice_api.post(SEND_URL, push_request(push=push), format="json")
    assert response.status_code == 400
    (message,) = response.json()["errors"]["push"]
    assert message.startswith(problem)
    assert Delivery.objects.count() == 0


# --- Provider answers --------------------------------------------------------------------


def test_an_unregistered_token_fails_and_its_device_is_skipped_after(
    alice, alice_api, fcm, django_capture_on_commit_callbacks
):
    # given
    gone = "unregistered-" + "u" * 30
    register(alice_api, gone)
    register(alice_api, ANDROID)
    # when
    first = send(alice_api, push_request(), django_capture_on_commit_callbacks)
    # then: the gone token's delivery failed and its device is inactive, with FCM's reason
    assert first.status_code == 202, first.json()
    failed = Delivery.objects.get(to=gone)
    assert (failed.status, failed.error_code) == ("failed", "UNREGISTERED")
    assert failed.error_message == "FCM answered HTTP 404 UNREGISTERED: Requested entity was not found."
    assert list(failed.attempts.values_list("outcome", "response_code")) == [("permanent", 404)]
    assert Delivery.objects.get(to=ANDROID).status == "sent"
    device = Device.objects.get(token=gone)
    assert (device.active, device.deactivation_reason) == (False, failed.error_message)
    assert device.deactivated_at is not None
    assert Device.objects.get(token=ANDROID).active is True
    # when: sent again, only the active device is reached
    second = send(alice_api, push_request(), django_capture_on_commit_callbacks)
    assert [d["to"] for d in second.json()["deliveries"]] == [ANDROID]
    assert [r["token"] for r in fcm.received()].count(gone) == 1
    # and with no active device left, the send is refused
    removed = alice_api.delete(f"{devices_url()}{Device.objects.get(token=ANDROID).pk}/")
    assert removed.status_code == 204
    third = alice_api.post(SEND_URL, push_request(), format="json")
    assert third.status_code == 400
    assert third.json()["errors"] == {"recipient": {"devices": [DEVICES_HINT]}}


def test_a_web_push_410_fails_and_deactivates_the_subscription(
    alice, alice_api, fcm, webpush_server, django_capture_on_commit_callbacks
):
    # given
    endpoint = register_web(alice_api, webpush_server, answer=GONE)
    # when
    response = send(alice_api, push_request(), django_capture_on_commit_callbacks)
    # then
    assert response.status_code == 202, response.json()
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.provider, delivery.error_code) == ("failed", "", "gone")
    assert delivery.error_message == "The push service at 127.0.0.1 answered HTTP 410: the subscription is gone"
    assert [r["status"] for r in webpush_server.received(endpoint)] == [410]
    device = Device.objects.get()
    assert (device.active, device.deactivation_reason) == (False, delivery.error_message)
    assert fcm.received() == []
    # and the next send finds no device
    assert alice_api.post(SEND_URL, push_request(), format="json").status_code == 400


def test_quota_exceeded_puts_the_batch_back_until_retry_after(
    alice, alice_api, fcm, django_capture_on_commit_callbacks
):
    # given: the token FCM throttles is seen last, so it goes out first; another token waits behind it
    register(alice_api, ANDROID)
    register(alice_api, "quota-" + "q" * 30)
    before = timezone.now()
    # when
    response = send(alice_api, push_request(), django_capture_on_commit_callbacks)
    # then: FCM saw the throttled message only
    assert response.status_code == 202, response.json()
    assert [(r["token"], r["status"]) for r in fcm.received()] == [("quota-" + "q" * 30, 429)]
    throttled = Delivery.objects.get(to__startswith="quota-")
    waiting = Delivery.objects.get(to=ANDROID)
    # both wait for Retry-After (30 s) in the database, not failed
    for delivery in (throttled, waiting):
        assert delivery.status == "queued"
        assert delivery.next_attempt_at >= before + datetime.timedelta(seconds=30)
        assert delivery.enqueued_at is None  # the sweep queues it when due
        assert delivery.failed_at is None
    # the throttled one used an attempt (it reached FCM); the one behind it did not
    assert (throttled.attempt_count, throttled.error_code) == (1, "QUOTA_EXCEEDED")
    assert list(throttled.attempts.values_list("outcome", "response_code", "retry_after_seconds")) == [
        ("retryable", 429, 30.0)
    ]
    assert (waiting.attempt_count, waiting.error_code, waiting.attempts.count()) == (0, "", 0)
    assert Device.objects.filter(active=True).count() == 2


# --- Templates with push content ----------------------------------------------------------

BOOKING_TEMPLATE = {
    "key": "booking_push",
    "name": "Booking push",
    "sample_context": {"ref": "7"},
    "contents": [
        {
            "channel": "push",
            "subject": "Booking {{ ref }}",
            "body": "Your booking {{ ref }} is confirmed.",
            "options": {
                "image_url": "https://img.example/{{ ref }}.png",
                "action_url": "myapp://booking/{{ ref }}",
                "data": {"ref": "{{ ref }}"},
            },
        }
    ],
}


@pytest.fixture
def booking_template(alice_api) -> dict:
    response = alice_api.post(TEMPLATES_URL, BOOKING_TEMPLATE, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_a_template_keeps_and_previews_its_push_options(alice_api, booking_template):
    # the stored content keeps its options as given
    assert booking_template["contents"][0]["options"] == BOOKING_TEMPLATE["contents"][0]["options"]
    # preview renders them
    preview = alice_api.post(
        f"{TEMPLATES_URL}{booking_template['id']}/preview/",
        {"channel": "push", "context": {"ref": "42"}},
        format="json",
    )
    assert preview.status_code == 200, preview.json()
    body = preview.json()
    assert (body["subject"], body["body"]) == ("Booking 42", "Your booking 42 is confirmed.")
    assert body["options"] == {
        "image_url": "https://img.example/42.png",
        "action_url": "myapp://booking/42",
        "data": {"ref": "42"},
    }


def test_a_template_send_delivers_its_rendered_options(
    alice_api, fcm, webpush_server, booking_template, django_capture_on_commit_callbacks
):
    # given: a phone and a browser
    register(alice_api, ANDROID)
    endpoint = register_web(alice_api, webpush_server)
    body = {
        "channel": "push",
        "recipient": {"external_id": "user-1"},
        "template": "booking_push",
        "context": {"ref": 42},
    }
    # when
    response = send(alice_api, body, django_capture_on_commit_callbacks)
    # then
    assert response.status_code == 202, response.json()
    rendered = {
        "image_url": "https://img.example/42.png",
        "action_url": "myapp://booking/42",
        "data": {"ref": "42"},
    }
    assert [d.options for d in Delivery.objects.all()] == [rendered, rendered]
    delivery = Delivery.objects.get(to=ANDROID)
    assert by_token(fcm) == {
        ANDROID: {
            "token": ANDROID,
            "notification": {
                "title": "Booking 42",
                "body": "Your booking 42 is confirmed.",
                "image": "https://img.example/42.png",
            },
            "data": {"ref": "42", "action_url": "myapp://booking/42", "beacon_delivery": str(delivery.pk)},
        }
    }
    (pushed,) = webpush_server.received(endpoint)
    assert pushed["payload"] == {
        "title": "Booking 42",
        "body": "Your booking 42 is confirmed.",
        "image": "https://img.example/42.png",
        "url": "myapp://booking/42",
        "data": {"ref": "42"},
        "beacon_delivery": str(Delivery.objects.get(to=endpoint).pk),
    }
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}


def test_send_push_options_go_over_the_templates_data_merged_key_by_key(
    alice_api, fcm, booking_template, django_capture_on_commit_callbacks
):
    # given
    register(alice_api, ANDROID)
    body = {
        "channel": "push",
        "recipient": {"external_id": "user-1"},
        "template": "booking_push",
        "context": {"ref": 42},
        "push": {"image_url": "https://img.example/other.png", "data": {"source": "api"}},
    }
    # when
    response = send(alice_api, body, django_capture_on_commit_callbacks)
    # then
    assert response.status_code == 202, response.json()
    delivery = Delivery.objects.get()
    assert delivery.options == {
        "image_url": "https://img.example/other.png",
        "action_url": "myapp://booking/42",
        "data": {"ref": "42", "source": "api"},
    }
    message = by_token(fcm)[ANDROID]
    assert message["notification"]["image"] == "https://img.example/other.png"
    assert message["data"] == {
        "ref": "42",
        "source": "api",
        "action_url": "myapp://booking/42",
        "beacon_delivery": str(delivery.pk),
    }


@pytest.mark.parametrize(
    "content,problem",
    [
        (
            {"channel": "push", "body": "B", "options": {"sound": "ding"}},
            "options: unknown sound; push takes image_url, action_url, data, silent, android, apns, webpush",
        ),
        ({"channel": "sms", "body": "B", "options": {"data": {"k": "v"}}}, "options: the sms channel takes none"),
        (
            {"channel": "push", "body": "B", "options": {"silent": True}},
            "options.silent: a silent push carries data; give options.data",
        ),
        (
            {"channel": "push", "body": "B", "options": {"data": {"k": {"nested": "v"}}}},
            "options.data: must be an object of texts (FCM data values are strings)",
        ),
    ],
    ids=["unknown-key", "options-on-sms", "silent-without-data", "nested-data"],
)
def test_a_template_with_bad_options_is_a_400_naming_the_problem(alice_api, content, problem):
    response = alice_api.post(TEMPLATES_URL, {"key": "bad", "name": "Bad", "contents": [content]}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"contents[0]": [problem]}


def test_a_render_over_4096_bytes_is_refused_at_send(alice_api, fcm, django_capture_on_commit_callbacks):
    # given: a template whose data grows with the context
    template = {
        "key": "big",
        "name": "Big",
        "contents": [{"channel": "push", "body": "{{ text }}", "options": {"data": {"blob": "{{ blob }}"}}}],
    }
    assert alice_api.post(TEMPLATES_URL, template, format="json").status_code == 201
    register(alice_api, ANDROID)
    body = {
        "channel": "push",
        "recipient": {"external_id": "user-1"},
        "template": "big",
        "context": {"text": "t" * 2000, "blob": "b" * 2500},
    }
    # when
    response = send(alice_api, body, django_capture_on_commit_callbacks)
    # then
    assert response.status_code == 400, response.json()
    (problem,) = response.json()["errors"]["message"]
    assert problem.startswith("push: The Push payload is ") and problem.endswith("bytes; the limit is 4096.")
    assert (Delivery.objects.count(), fcm.received()) == (0, [])


# --- Silent push ---------------------------------------------------------------------------


def test_a_silent_push_carries_no_notification(alice_api, fcm, django_capture_on_commit_callbacks):
    register(alice_api, ANDROID)
    body = push_request(push={"silent": True, "data": {"kind": "sync", "count": 3}})
    response = send(alice_api, body, django_capture_on_commit_callbacks)
    assert response.status_code == 202, response.json()
    delivery = Delivery.objects.get()
    assert delivery.options == {"silent": True, "data": {"kind": "sync", "count": "3"}}
    assert by_token(fcm) == {
        ANDROID: {
            "token": ANDROID,
            "data": {"kind": "sync", "count": "3", "beacon_delivery": str(delivery.pk)},
            "android": {"priority": "normal"},
            "apns": {
                "headers": {"apns-push-type": "background", "apns-priority": "5"},
                "payload": {"aps": {"content-available": 1}},
            },
        }
    }
    assert delivery.status == "sent"


# --- Batch ---------------------------------------------------------------------------------


def batch_body() -> dict:
    return {
        "channel": "push",
        "recipients": [{"external_id": "user-1"}, {"external_id": "user-2"}],
        "subject": "Hi",
        "message": "Body",
    }


def device_reads(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if f"FROM {DEVICE_TABLE}" in q["sql"]]


def send_batch(api, capture):
    """The batch send, with the queries of the request alone and of the request and its dispatch."""
    with CaptureQueriesContext(connection) as everything:
        with capture(execute=True):
            with CaptureQueriesContext(connection) as request:
                response = api.post(BATCH_URL, batch_body(), format="json")
    return response, request, everything


def test_a_batch_reaches_each_recipients_devices(alice_api, fcm, django_capture_on_commit_callbacks):
    # given: two devices for user-1, one for user-2
    register(alice_api, ANDROID, external_id="user-1")
    register(alice_api, IOS, "ios", external_id="user-1")
    register(alice_api, "other-token-789", external_id="user-2")
    # when
    response, request, everything = send_batch(alice_api, django_capture_on_commit_callbacks)
    # then
    assert response.status_code == 202, response.json()
    notifications = response.json()["notifications"]
    assert [len(n["deliveries"]) for n in notifications] == [2, 1]
    deliveries = Delivery.objects.select_related("notification__recipient")
    assert {(d.notification.recipient.external_id, d.to) for d in deliveries} == {
        ("user-1", ANDROID),
        ("user-1", IOS),
        ("user-2", "other-token-789"),
    }
    assert sorted(r["token"] for r in fcm.delivered()) == sorted([ANDROID, IOS, "other-token-789"])
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    # dispatch reads the devices' platform and keys once for its whole batch
    assert len(device_reads(everything)) - len(device_reads(request)) == 1


def test_a_batch_item_without_devices_refuses_the_whole_batch(alice_api, fcm):
    register(alice_api, ANDROID, external_id="user-1")
    response = alice_api.post(BATCH_URL, batch_body(), format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"recipients": {"1": {"devices": [DEVICES_HINT]}}}
    assert (Notification.objects.count(), Delivery.objects.count(), fcm.received()) == (0, 0, [])


def test_a_batch_request_reads_the_active_devices_once(alice_api, fcm, django_capture_on_commit_callbacks):
    # given
    register(alice_api, ANDROID, external_id="user-1")
    register(alice_api, "other-token-789", external_id="user-2")
    # when
    response, request, _ = send_batch(alice_api, django_capture_on_commit_callbacks)
    # then: validation reads the active devices of the whole batch in one query, and accept
    # (which gets them filled in) reads none
    assert response.status_code == 202, response.json()
    assert len(fcm.delivered()) == 2
    assert len(device_reads(request)) == 1, device_reads(request)


# --- Preferences and suppression -----------------------------------------------------------

LATE_EVENING = datetime.datetime(2025, 3, 12, 23, 30, tzinfo=datetime.UTC)


def test_quiet_hours_defer_every_push_delivery(
    alice, alice_api, fcm, webpush_server, django_capture_on_commit_callbacks
):
    with time_machine.travel(LATE_EVENING, tick=False):
        # given: the recipient's quiet hours are 22:00-07:00 UTC
        register(alice_api, ANDROID)
        register_web(alice_api, webpush_server)
        recipient = Recipient.objects.get(account=alice, external_id="user-1")
        RecipientPreference.objects.create(
            account=alice,
            recipient=recipient,
            quiet_hours_enabled=True,
            quiet_hours_start=datetime.time(22, 0),
            quiet_hours_end=datetime.time(7, 0),
        )
        # when
        response = send(alice_api, push_request(), django_capture_on_commit_callbacks)
    # then: both wait for the end of quiet hours, and nothing was pushed
    assert response.status_code == 202, response.json()
    assert [d["status"] for d in response.json()["deliveries"]] == ["scheduled", "scheduled"]
    morning = datetime.datetime(2025, 3, 13, 7, 0, tzinfo=datetime.UTC)
    assert [(d.status, d.next_attempt_at) for d in Delivery.objects.all()] == [("scheduled", morning)] * 2
    assert all("quiet hours" in d.events.get().detail for d in Delivery.objects.all())
    assert (fcm.received(), webpush_server.received()) == ([], [])


def test_a_waiting_push_to_a_device_removed_meanwhile_is_not_sent(
    alice, alice_api, fcm, django_capture_on_commit_callbacks
):
    from notifications.services.dispatch import deliveries_dispatch

    # given: two devices; a push deferred by quiet hours; then one device logs out and
    # the other is reported gone by another send
    with time_machine.travel(LATE_EVENING, tick=False):
        removed = register(alice_api, ANDROID)
        register(alice_api, IOS)
        recipient = Recipient.objects.get(account=alice, external_id="user-1")
        RecipientPreference.objects.create(
            account=alice,
            recipient=recipient,
            quiet_hours_enabled=True,
            quiet_hours_start=datetime.time(22, 0),
            quiet_hours_end=datetime.time(7, 0),
        )
        send(alice_api, push_request(), django_capture_on_commit_callbacks)
    assert alice_api.delete(f"{devices_url()}{removed['id']}/").status_code == 204
    devices_deactivate(account_id=alice.pk, tokens=[IOS], reason="unregistered")
    Delivery.objects.update(status="queued")
    # when: they fall due and are dispatched
    outcomes = deliveries_dispatch(items=[(d.pk, 0) for d in Delivery.objects.all()])
    # then: neither is sent; each ends suppressed with the reason, no attempt counted
    assert set(outcomes.values()) == {"suppressed"}
    assert fcm.received() == []
    for delivery in Delivery.objects.all():
        assert (delivery.status, delivery.attempt_count, delivery.error_code) == ("suppressed", 0, "skipped")
        assert delivery.error_message == "suppressed: the push device was removed or deactivated before it was sent"


def test_a_suppressed_token_skips_that_device_only(alice, alice_api, fcm, django_capture_on_commit_callbacks):
    # given
    register(alice_api, ANDROID)
    register(alice_api, IOS, "ios")
    assert suppression_add(account=alice, channel="push", address=IOS, reason="manual")
    # when
    response = send(alice_api, push_request(), django_capture_on_commit_callbacks)
    # then
    assert response.status_code == 202, response.json()
    skipped = Delivery.objects.get(to=IOS)
    assert (skipped.status, skipped.error_code, skipped.error_message) == (
        "suppressed",
        "skipped",
        "suppressed: the push address is suppressed (manual)",
    )
    assert Delivery.objects.get(to=ANDROID).status == "sent"
    assert [r["token"] for r in fcm.received()] == [ANDROID]


# --- The test command ----------------------------------------------------------------------


@pytest.fixture
def push_test_template(alice):
    return make_template(
        alice,
        key="push_test",
        contents=[{"channel": "push", "locale": "", "subject": "Reminder", "body": "{{ event_name }} soon."}],
    )


def test_send_test_notification_reaches_each_active_device(
    alice, alice_api, fcm, push_test_template, django_capture_on_commit_callbacks
):
    # given
    register(alice_api, ANDROID)
    register(alice_api, IOS, "ios")
    out = StringIO()
    # when
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "send_test_notification",
            "--account",
            alice.username,
            "--channel",
            "push",
            "--to",
            "user-1",
            "--template",
            "push_test",
            stdout=out,
        )
    # then
    assert sorted(r["token"] for r in fcm.delivered()) == sorted([ANDROID, IOS])
    assert {r["message"]["notification"]["body"] for r in fcm.delivered()} == {"Haircut soon."}
    notification = Notification.objects.get()
    assert notification.is_test is True
    deliveries = Delivery.objects.filter(notification=notification).order_by("created_at")
    # read at print time: dispatch runs on commit, after the command printed
    statuses = ", ".join(f"push queued (delivery {d.pk})" for d in deliveries)
    assert out.getvalue().strip() == f"Test notification {notification.pk} to user-1: {statuses}"


def test_send_test_notification_dry_run_counts_devices_without_showing_tokens(
    alice, alice_api, fcm, push_test_template
):
    register(alice_api, ANDROID)
    register(alice_api, IOS, "ios")
    out = StringIO()
    call_command(
        "send_test_notification",
        "--account",
        alice.username,
        "--channel",
        "push",
        "--to",
        "user-1",
        "--template",
        "push_test",
        "--dry-run",
        stdout=out,
    )
    assert out.getvalue().splitlines() == [
        "Template push_test v1, push to 2 device(s) of user-1 (locale default):",
        "Subject: Reminder",
        "Haircut soon.",
        "Dry run: nothing was sent.",
    ]
    assert ANDROID not in out.getvalue() and IOS not in out.getvalue()
    assert (Delivery.objects.count(), fcm.received()) == (0, [])


def test_send_test_notification_to_a_recipient_without_devices_is_an_error(alice, fcm, push_test_template):
    Recipient.objects.create(account=alice, external_id="user-1")
    with pytest.raises(CommandError) as raised:
        call_command(
            "send_test_notification",
            "--account",
            alice.username,
            "--channel",
            "push",
            "--to",
            "user-1",
            "--template",
            "push_test",
            stdout=StringIO(),
        )
    assert "register one at /api/v1/recipients/{external_id}/devices/" in str(raised.value)
    assert Delivery.objects.count() == 0


# --- Resend and the log --------------------------------------------------------------------


def test_a_resent_push_carries_the_same_options(alice_api, fcm, django_capture_on_commit_callbacks):
    # given: a push refused once (a bad argument, not the token: the device stays)
    register(alice_api, ANDROID)
    fcm.answer_next(INVALID_ARGUMENT)
    options = {"action_url": "https://example.com/b/1", "data": {"ref": "1"}}
    send(alice_api, push_request(push=options), django_capture_on_commit_callbacks)
    failed = Delivery.objects.get()
    assert (failed.status, failed.error_code) == ("failed", "INVALID_ARGUMENT")
    assert Device.objects.get().active is True
    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(f"/api/v1/notifications/{failed.pk}/resend/")
    # then
    assert response.status_code == 202, response.json()
    copy = Delivery.objects.get(pk=response.json()["id"])
    assert (copy.resent_from_id, copy.to, copy.status) == (failed.pk, ANDROID, "sent")
    assert copy.options == failed.options == options
    resent = fcm.received()[-1]
    assert resent["status"] == 200
    assert resent["message"]["data"] == {
        "ref": "1",
        "action_url": "https://example.com/b/1",
        "beacon_delivery": str(copy.pk),
    }
    assert resent["message"]["webpush"] == {"fcm_options": {"link": "https://example.com/b/1"}}


def test_the_delivery_detail_shows_its_options(alice_api, fcm, django_capture_on_commit_callbacks):
    register(alice_api, ANDROID)
    options = {"image_url": "https://img.example/1.png", "data": {"ref": "1"}}
    send(alice_api, push_request(push=options), django_capture_on_commit_callbacks)
    delivery = Delivery.objects.get()
    detail = alice_api.get(f"{LOGS_URL}{delivery.pk}/")
    assert detail.status_code == 200
    body = detail.json()
    assert (body["channel"], body["to"], body["status"], body["provider"]) == ("push", ANDROID, "sent", "fcm")
    assert body["options"] == options
    assert [a["outcome"] for a in body["attempts"]] == ["success"]


def test_erasing_the_recipient_clears_the_push_options_and_devices(alice_api, fcm, django_capture_on_commit_callbacks):
    # given
    register(alice_api, ANDROID)
    send(alice_api, push_request(push={"data": {"ref": "1"}}), django_capture_on_commit_callbacks)
    # when
    assert alice_api.delete("/api/v1/recipients/user-1/").status_code == 204
    # then
    delivery = Delivery.objects.get()
    assert (delivery.to, delivery.body, delivery.options) == ("[erased]", "[erased]", {})
    assert Device.objects.count() == 0
