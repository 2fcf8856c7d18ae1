"""Webhooks end to end in-process: the /api/v1/webhooks/ API, status-change events and the
webhook channel posted to a local receiver double and verified with the `standardwebhooks`
library, the retry schedule on a frozen clock, disabling (410 Gone, five days failing),
secret rotation, the outbound URL guard, the due scan, and the operator console."""

import base64
import ipaddress
import json
import re
import socket
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from notifications.models import (
    Delivery,
    InboxItem,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
)
from notifications.services.webhooks import (
    endpoint_create,
    endpoint_test,
    webhook_messages_due,
)
from tests.doubles.receiver import HOOK_PATH
from tests.notifications.factories import make_delivery, make_recipient
from tests.notifications.test_admin import change, changelist, messages_of

pytestmark = pytest.mark.django_db

WEBHOOKS = "/api/v1/webhooks/"
SEND_URL = "/api/v1/notifications/send/"
SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
GAPS = [5, 300, 1800, 7200, 18000, 36000, 36000]


def create(api, url, event_types=("*",), **extra) -> dict:
    response = api.post(WEBHOOKS, {"url": url, "event_types": list(event_types), **extra}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def verify(secret: str, request: dict) -> dict:
    """What a receiver does with the `standardwebhooks` library; the payload, or raises."""
    return Webhook(secret).verify(request["body"], request["headers"])


def sms_send(api, capture):
    with capture(execute=True):
        response = api.post(
            SEND_URL, {"channel": "sms", "recipient": {"phone": "+14155550123", "external_id": "ana"}, "message": "Hi"}
        )
    assert response.status_code == 202, response.json()
    return response


def webhook_send(api, capture, url):
    body = {
        "channel": "webhook",
        "recipient": {"external_id": "x", "webhook_url": url},
        "subject": "Hi",
        "message": "Body",
    }
    with capture(execute=True):
        return api.post(SEND_URL, body, format="json")


def seconds(moment: datetime) -> str:
    return str(int(moment.timestamp()))


@pytest.fixture
def console_sms(settings):
    settings.BEACON_SMS_PROVIDER = "console"


@pytest.fixture
def no_private(settings):
    settings.BEACON_ALLOW_PRIVATE_TARGETS = False


# --- The API ------------------------------------------------------------------------------


def test_the_secret_is_shown_once_and_only_to_its_account(alice_api, bob_api, receiver):
    # when
    created = create(alice_api, receiver.url(), ["delivery.sent", "delivery.failed"], description="CRM")
    # then
    secret = created.pop("secret")
    assert SECRET.match(secret)
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert created == {
        "id": created["id"],
        "url": receiver.url(),
        "description": "CRM",
        "event_types": ["delivery.sent", "delivery.failed"],
        "enabled": True,
        "disabled_at": None,
        "disabled_reason": "",
        "failing_since": None,
        "previous_secret_expires_at": None,
        "created_at": created["created_at"],
        "updated_at": created["updated_at"],
    }
    detail = alice_api.get(f"{WEBHOOKS}{created['id']}/")
    listed = alice_api.get(WEBHOOKS)
    assert detail.json() == created
    assert (listed.json()["count"], listed.json()["results"]) == (1, [created])
    for response in (detail, listed):
        assert "secret" not in response.json()
        assert secret not in response.content.decode()
        assert secret.removeprefix("whsec_") not in response.content.decode()
    # Another account's endpoint is not found, whatever is asked of it.
    endpoint = f"{WEBHOOKS}{created['id']}/"
    assert bob_api.get(WEBHOOKS).json()["count"] == 0
    assert bob_api.get(endpoint).status_code == 404
    assert bob_api.patch(endpoint, {"enabled": False}).status_code == 404
    assert bob_api.put(endpoint, {"url": receiver.url(), "event_types": ["*"]}).status_code == 404
    assert bob_api.post(f"{endpoint}test/").status_code == 404
    assert bob_api.post(f"{endpoint}rotate-secret/").status_code == 404
    assert bob_api.get(f"{endpoint}messages/").status_code == 404
    assert bob_api.delete(endpoint).status_code == 404
    assert receiver.received() == []
    stored = WebhookEndpoint.objects.get()
    assert (stored.enabled, stored.event_types, secret in stored.secret) == (
        True,
        ["delivery.sent", "delivery.failed"],
        False,
    )


def test_bad_input_names_the_field(alice_api, receiver):
    cases = [
        ({"url": receiver.url(), "event_types": ["delivery.nope"]}, "event_types"),
        ({"url": receiver.url(), "event_types": []}, "event_types"),
        ({"url": receiver.url()}, "event_types"),
        ({"url": receiver.url(), "event_types": "*"}, "event_types"),
        ({"url": "not a url", "event_types": ["*"]}, "url"),
        ({"event_types": ["*"]}, "url"),
        ({"url": receiver.url(), "event_types": ["*"], "description": "x" * 201}, "description"),
    ]
    for body, field in cases:
        response = alice_api.post(WEBHOOKS, body, format="json")
        assert response.status_code == 400, body
        assert list(response.json()["errors"]) == [field], (body, response.json())
    unknown = alice_api.post(WEBHOOKS, {"url": receiver.url(), "event_types": ["*", "delivery.nope"]}, format="json")
    (error,) = unknown.json()["errors"]["event_types"]["1"]
    assert error.startswith('Unknown event type "delivery.nope". Known: *, delivery.scheduled, delivery.queued, ')
    assert WebhookEndpoint.objects.count() == 0
    # One endpoint per URL: the webhook channel picks the endpoint (and its secret) by it.
    create(alice_api, receiver.url())
    again = alice_api.post(WEBHOOKS, {"url": receiver.url(), "event_types": ["*"]}, format="json")
    assert (again.status_code, list(again.json()["errors"])) == (400, ["url"])


def test_patch_put_and_delete(alice, alice_api, receiver, django_capture_on_commit_callbacks):
    created = create(alice_api, receiver.url(), ["delivery.sent"])
    endpoint = f"{WEBHOOKS}{created['id']}/"
    # disabled by hand, then enabled again
    response = alice_api.patch(endpoint, {"enabled": False}, format="json")
    assert response.status_code == 200, response.json()
    assert (response.json()["enabled"], response.json()["disabled_reason"]) == (False, "disabled by hand")
    assert alice_api.post(f"{endpoint}test/").status_code == 409
    response = alice_api.patch(endpoint, {"enabled": True, "description": "billing"}, format="json")
    assert (response.json()["enabled"], response.json()["disabled_reason"], response.json()["description"]) == (
        True,
        "",
        "billing",
    )
    # PUT wants the URL and the event types
    assert alice_api.put(endpoint, {"description": "x"}, format="json").status_code == 400
    other = receiver.url("/hooks/other")
    response = alice_api.put(endpoint, {"url": other, "event_types": ["*", "*"]}, format="json")
    assert response.status_code == 200, response.json()
    assert (response.json()["url"], response.json()["event_types"]) == (other, ["*"])
    assert alice_api.patch(endpoint, {"event_types": ["delivery.sending"]}, format="json").status_code == 400
    # the test event goes to the new URL; DELETE takes the endpoint and its messages
    assert alice_api.post(f"{endpoint}test/").json()["status"] == "delivered"
    assert [r["path"] for r in receiver.received()] == ["/hooks/other"]
    assert alice_api.delete(endpoint).status_code == 204
    assert (WebhookEndpoint.objects.count(), WebhookMessage.objects.count(), WebhookAttempt.objects.count()) == (
        0,
        0,
        0,
    )
    assert alice_api.get(endpoint).status_code == 404
    # with it gone, nobody listens: a send writes no message
    sms_send(alice_api, django_capture_on_commit_callbacks)
    assert WebhookMessage.objects.count() == 0


# --- Signed events ------------------------------------------------------------------------


def test_status_changes_reach_subscribed_endpoints_signed(
    alice_api, receiver, console_sms, django_capture_on_commit_callbacks
):
    # given
    everything = create(alice_api, receiver.url(), ["*"])
    failures = create(alice_api, receiver.url("/hooks/failures"), ["delivery.failed"])
    # when
    sms_send(alice_api, django_capture_on_commit_callbacks)
    # then
    requests = receiver.received()
    assert [r["path"] for r in requests] == [HOOK_PATH, HOOK_PATH]
    events = [verify(everything["secret"], r) for r in requests]
    assert [e["type"] for e in events] == ["delivery.queued", "delivery.sent"]
    delivery = Delivery.objects.get()
    sent = events[1]
    assert sent == {
        "type": "delivery.sent",
        "timestamp": sent["timestamp"],
        "data": {
            "delivery_id": str(delivery.pk),
            "notification_id": str(delivery.notification_id),
            "channel": "sms",
            "status": "sent",
            "previous_status": "sending",
            "detail": sent["data"]["detail"],
            "provider": "console",
            "provider_message_id": delivery.provider_message_id,
            "error_code": "",
            "recipient": {"external_id": "ana"},
        },
    }
    assert events[0]["data"]["previous_status"] is None
    assert datetime.fromisoformat(sent["timestamp"]) <= timezone.now()
    # the headers, as Standard Webhooks has them
    messages = {m.event_type: m for m in WebhookMessage.objects.all()}
    assert set(messages) == {"delivery.queued", "delivery.sent"}
    headers = requests[1]["headers"]
    assert headers["webhook-id"] == messages["delivery.sent"].webhook_id
    assert re.fullmatch(r"msg_[0-9a-f]{32}", headers["webhook-id"])
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", headers["webhook-signature"])
    assert (headers["content-type"], headers["user-agent"]) == ("application/json", "Beacon-Webhooks/1")
    assert {(m.status, m.attempt_count) for m in messages.values()} == {("delivered", 1)}
    # another secret does not verify; the endpoint subscribed to failures heard nothing
    with pytest.raises(WebhookVerificationError):
        verify(failures["secret"], requests[1])
    assert receiver.received("/hooks/failures") == []
    assert WebhookMessage.objects.filter(endpoint_id=failures["id"]).count() == 0


def test_the_test_event_is_signed_and_listed(alice_api, bob_api, receiver):
    created = create(alice_api, receiver.url(), ["delivery.failed"])
    endpoint = f"{WEBHOOKS}{created['id']}/"
    # when
    response = alice_api.post(f"{endpoint}test/")
    # then
    assert response.status_code == 200, response.json()
    body = response.json()
    (request,) = receiver.received()
    assert verify(created["secret"], request) == {
        "type": "webhook.test",
        "timestamp": body["payload"]["timestamp"],
        "data": {"endpoint_id": created["id"], "message": "A test event from Beacon."},
    }
    message = WebhookMessage.objects.get()
    assert request["headers"]["webhook-id"] == message.webhook_id == body["webhook_id"]
    assert (body["status"], body["attempt_count"], body["event_type"], body["endpoint"]) == (
        "delivered",
        1,
        "webhook.test",
        created["id"],
    )
    assert body["attempts"] == [
        {
            "number": 1,
            "started_at": body["attempts"][0]["started_at"],
            "duration_ms": body["attempts"][0]["duration_ms"],
            "response_status": 200,
            "response_body": "ok",
            "error": "",
            "succeeded": True,
        }
    ]
    # the messages API
    listed = alice_api.get(f"{endpoint}messages/").json()
    assert listed["count"] == 1
    assert listed["results"][0]["webhook_id"] == message.webhook_id
    assert "attempts" not in listed["results"][0]
    assert alice_api.get(f"{endpoint}messages/", {"status": "failed"}).json()["count"] == 0
    assert alice_api.get(f"{endpoint}messages/", {"event_type": "webhook.test"}).json()["count"] == 1
    assert alice_api.get(f"{endpoint}messages/", {"event_type": "delivery.sent"}).json()["count"] == 0
    assert alice_api.get(f"{endpoint}messages/", {"status": "bogus"}).status_code == 400
    detail = alice_api.get(f"{endpoint}messages/{message.pk}/").json()
    assert detail == body
    assert bob_api.get(f"{endpoint}messages/{message.pk}/").status_code == 404
    # a message id under another endpoint is not found either
    other = create(alice_api, receiver.url("/hooks/other"))
    assert alice_api.get(f"{WEBHOOKS}{other['id']}/messages/{message.pk}/").status_code == 404


def test_the_webhook_channel_posts_the_message_signed(alice, alice_api, receiver, django_capture_on_commit_callbacks):
    # given: an endpoint that hears no status changes, so that only the message reaches it
    created = create(alice_api, receiver.url(), ["webhook.test"])
    # when
    response = webhook_send(alice_api, django_capture_on_commit_callbacks, receiver.url())
    # then
    assert response.status_code == 202, response.json()
    delivery = Delivery.objects.get()
    assert (delivery.channel, delivery.to, delivery.status, delivery.provider) == (
        "webhook",
        receiver.url(),
        "delivered",
        "webhook",
    )
    (request,) = receiver.received()
    payload = verify(created["secret"], request)
    assert payload == {
        "type": "notification.message",
        "timestamp": payload["timestamp"],
        "data": {"delivery_id": str(delivery.pk), "subject": "Hi", "body": "Body", "locale": "", "data": {}},
    }
    assert request["headers"]["webhook-id"] == f"msg_{delivery.pk.hex}"
    # a URL that is not one of the account's enabled endpoints is refused
    response = webhook_send(alice_api, django_capture_on_commit_callbacks, receiver.url("/hooks/unknown"))
    assert response.status_code == 400
    assert list(response.json()["errors"]["recipient"]) == ["webhook_url"]


# --- Retries --------------------------------------------------------------------------------


def test_the_webhook_id_stays_and_the_timestamp_is_each_attempts(alice, receiver):
    with time_machine.travel(T0, tick=False) as clock:
        endpoint, secret = endpoint_create(account=alice, url=receiver.url(), event_types=["*"])
        receiver.answer_next((500, {}, "down"))
        message = endpoint_test(endpoint=endpoint)
        assert (message.status, message.next_attempt_at) == ("pending", T0 + timedelta(seconds=5))
        clock.move_to(T0 + timedelta(seconds=5))
        assert webhook_messages_due(now=timezone.now()) == {"sent": 1, "recovered": 0}
        first, second = receiver.received()
        assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == message.webhook_id
        assert (first["headers"]["webhook-timestamp"], second["headers"]["webhook-timestamp"]) == (
            seconds(T0),
            seconds(T0 + timedelta(seconds=5)),
        )
        assert first["body"] == second["body"]
        assert verify(secret, second)["type"] == "webhook.test"
    message.refresh_from_db()
    assert (message.status, message.attempt_count) == ("delivered", 2)
    assert [(a.number, a.started_at, a.response_status, a.succeeded) for a in message.attempts.all()] == [
        (1, T0, 500, False),
        (2, T0 + timedelta(seconds=5), 200, True),
    ]


def test_the_retry_schedule_then_failed(alice, receiver):
    receiver.answer_next(*[(500, {}, "down")] * 8)
    with time_machine.travel(T0, tick=False) as clock:
        endpoint, _ = endpoint_create(account=alice, url=receiver.url(), event_types=["*"])
        message = endpoint_test(endpoint=endpoint)
        gaps = []
        while message.status == "pending":
            attempted = message.attempts.order_by("-number").first().started_at
            gaps.append(int((message.next_attempt_at - attempted).total_seconds()))
            # a second early, nothing is sent
            clock.move_to(message.next_attempt_at - timedelta(seconds=1))
            sent_before = receiver.sent_count()
            assert webhook_messages_due(now=timezone.now()) == {"sent": 0, "recovered": 0}
            assert receiver.sent_count() == sent_before
            # on time, it is
            clock.move_to(message.next_attempt_at)
            assert webhook_messages_due(now=timezone.now()) == {"sent": 1, "recovered": 0}
            message.refresh_from_db()
    assert gaps == GAPS
    assert (message.status, message.attempt_count, message.next_attempt_at) == ("failed", 8, None)
    assert message.last_error == "127.0.0.1 answered HTTP 500"
    assert [a.number for a in message.attempts.all()] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert receiver.sent_count() == 8
    assert len({r["headers"]["webhook-id"] for r in receiver.received()}) == 1
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.failing_since) == (True, T0)


def test_a_retry_after_longer_than_the_schedule_is_kept(alice, receiver):
    receiver.answer_next((429, {"Retry-After": "120"}, "slow down"))
    with time_machine.travel(T0, tick=False):
        endpoint, _ = endpoint_create(account=alice, url=receiver.url(), event_types=["*"])
        message = endpoint_test(endpoint=endpoint)
    assert (message.status, message.next_attempt_at) == ("pending", T0 + timedelta(seconds=120))


# --- Disabling --------------------------------------------------------------------------------


def test_410_gone_disables_the_endpoint_at_once(
    alice, alice_api, receiver, console_sms, django_capture_on_commit_callbacks
):
    created = create(alice_api, receiver.url(), ["*"])
    receiver.answer_next((410, {}, "gone"))
    # when
    body = alice_api.post(f"{WEBHOOKS}{created['id']}/test/").json()
    # then
    assert (body["status"], body["attempts"][0]["response_status"]) == ("failed", 410)
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "the receiver answered 410 Gone")
    assert endpoint.disabled_at is not None
    # no more events are written for it
    sms_send(alice_api, django_capture_on_commit_callbacks)
    assert WebhookMessage.objects.count() == 1
    assert receiver.sent_count() == 1


def test_410_gone_on_the_webhook_channel_fails_the_delivery_and_disables_the_endpoint(
    alice_api, receiver, django_capture_on_commit_callbacks
):
    create(alice_api, receiver.url(), ["webhook.test"])
    receiver.answer_next((410, {}, "gone"))
    # when
    response = webhook_send(alice_api, django_capture_on_commit_callbacks, receiver.url())
    # then
    assert response.status_code == 202, response.json()
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.error_code) == ("failed", "410")
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "the receiver answered 410 Gone")
    # the URL is no longer a target
    again = webhook_send(alice_api, django_capture_on_commit_callbacks, receiver.url())
    assert again.status_code == 400
    assert receiver.sent_count() == 1


def test_an_endpoint_failing_for_five_days_is_disabled(alice, receiver):
    with time_machine.travel(T0, tick=False) as clock:
        endpoint, _ = endpoint_create(account=alice, url=receiver.url(), event_types=["*"])
        receiver.answer_next((500, {}, "down"))
        endpoint_test(endpoint=endpoint)
        endpoint.refresh_from_db()
        assert (endpoint.enabled, endpoint.failing_since) == (True, T0)
        # still failing, four days on
        clock.move_to(T0 + timedelta(days=4))
        receiver.answer_next((500, {}, "down"))
        endpoint_test(endpoint=endpoint)
        endpoint.refresh_from_db()
        assert (endpoint.enabled, endpoint.failing_since) == (True, T0)
        # and past five days
        clock.move_to(T0 + timedelta(days=5, minutes=1))
        receiver.answer_next((500, {}, "down"))
        message = endpoint_test(endpoint=endpoint)
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "every attempt failed for 5 days")
    assert endpoint.disabled_at == T0 + timedelta(days=5, minutes=1)
    assert (message.status, message.next_attempt_at) == ("failed", None)
    # the older messages still waiting fail at their turn, without a post
    with time_machine.travel(T0 + timedelta(days=6), tick=False):
        webhook_messages_due(now=timezone.now())
    assert set(WebhookMessage.objects.values_list("status", flat=True)) == {"failed"}
    assert receiver.sent_count() == 3


def test_a_success_ends_the_failure_run(alice, receiver):
    with time_machine.travel(T0, tick=False) as clock:
        endpoint, _ = endpoint_create(account=alice, url=receiver.url(), event_types=["*"])
        receiver.answer_next((500, {}, "down"))
        endpoint_test(endpoint=endpoint)
        clock.move_to(T0 + timedelta(days=2))
        assert endpoint_test(endpoint=endpoint).status == "delivered"
        endpoint.refresh_from_db()
        assert endpoint.failing_since is None
        later = T0 + timedelta(days=5, minutes=1)
        clock.move_to(later)
        receiver.answer_next((500, {}, "down"))
        assert endpoint_test(endpoint=endpoint).status == "pending"
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.failing_since) == (True, later)


def test_a_success_then_a_failure_in_one_batch(alice, receiver):
    """The due scan sends several messages of one endpoint together: a success ends the
    failure run for the messages after it in the same batch."""
    with time_machine.travel(T0, tick=False) as clock:
        endpoint, _ = endpoint_create(account=alice, url=receiver.url(), event_types=["*"])
        receiver.answer_next((500, {}, "down"))
        first = endpoint_test(endpoint=endpoint)  # failing since T0, next try at T0 + 5 s
        second = WebhookMessage.objects.create(
            account=alice,
            endpoint=endpoint,
            event_type="webhook.test",
            payload={"type": "webhook.test"},
            next_attempt_at=T0 + timedelta(seconds=6),
            created_at=T0,
        )
        later = T0 + timedelta(days=5, minutes=1)
        clock.move_to(later)
        receiver.answer_next((200, {}, "ok"), (500, {}, "down"))
        # when
        assert webhook_messages_due(now=later) == {"sent": 2, "recovered": 0}
    # then: not disabled, and failing since the failure after the success
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("delivered", "pending")
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.failing_since) == (True, later)


# --- Secret rotation ------------------------------------------------------------------------


def test_after_rotation_both_secrets_sign_until_the_overlap_ends(alice_api, receiver):
    with time_machine.travel(T0, tick=False) as clock:
        created = create(alice_api, receiver.url(), ["webhook.test"])
        old = created["secret"]
        endpoint = f"{WEBHOOKS}{created['id']}/"
        # when
        rotated = alice_api.post(f"{endpoint}rotate-secret/")
        # then
        assert rotated.status_code == 200, rotated.json()
        new = rotated.json()["secret"]
        assert SECRET.match(new) and new != old
        assert datetime.fromisoformat(rotated.json()["previous_secret_expires_at"]) == T0 + timedelta(hours=24)
        assert "secret" not in alice_api.get(endpoint).json()
        alice_api.post(f"{endpoint}test/")
        request = receiver.received()[-1]
        assert len(request["headers"]["webhook-signature"].split(" ")) == 2
        assert verify(old, request) == verify(new, request)
        # a day later only the new one signs
        clock.move_to(T0 + timedelta(hours=24, seconds=1))
        alice_api.post(f"{endpoint}test/")
        request = receiver.received()[-1]
        assert len(request["headers"]["webhook-signature"].split(" ")) == 1
        assert verify(new, request)["type"] == "webhook.test"
        with pytest.raises(WebhookVerificationError):
            verify(old, request)


# --- The outbound URL guard -----------------------------------------------------------------


REFUSED = [
    "http://127.0.0.1/",
    "http://[::1]/",
    "http://169.254.169.254/",
    "http://0x7f000001/",
    "http://2130706433/",
    "http://017700000001/",
    "http://[::ffff:127.0.0.1]/",
    "http://10.0.0.1/",
    "file:///etc/passwd",
    "gopher://example.com/",
    "http://internal.example.com/hook",
]


def test_private_and_odd_urls_are_refused(alice_api, no_private, monkeypatch):
    answers = {"internal.example.com": [ipaddress.ip_address("127.0.0.1")]}
    monkeypatch.setattr("providers.urlguard._resolve", lambda host, port: answers.get(host, []))
    for url in REFUSED:
        response = alice_api.post(WEBHOOKS, {"url": url, "event_types": ["*"]}, format="json")
        assert response.status_code == 400, url
        assert list(response.json()["errors"]) == ["url"], (url, response.json())
    assert "resolves to 127.0.0.1" in response.json()["errors"]["url"][0]
    assert WebhookEndpoint.objects.count() == 0
    # PATCH is guarded the same way
    answers["hooks.example.com"] = [ipaddress.ip_address("93.184.216.34")]
    created = create(alice_api, "https://hooks.example.com/beacon")
    response = alice_api.patch(f"{WEBHOOKS}{created['id']}/", {"url": "http://10.0.0.1/"}, format="json")
    assert (response.status_code, list(response.json()["errors"])) == (400, ["url"])


@pytest.fixture
def rebinding(monkeypatch, receiver, settings):
    """rebind.example resolved to a public address when the endpoint was saved; the
    receiver double (on 127.0.0.1) is what a connection to it reaches now."""
    settings.BEACON_ALLOW_PRIVATE_TARGETS = False
    answers = {"rebind.example": [ipaddress.ip_address("93.184.216.34")]}
    monkeypatch.setattr("providers.urlguard._resolve", lambda host, port: answers.get(host, []))
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "rebind.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    port = receiver_port(receiver)
    return answers, f"http://rebind.example:{port}{HOOK_PATH}"


def receiver_port(receiver) -> int:
    return int(receiver.base_url.rsplit(":", 1)[1])


def test_a_name_resolving_privately_at_send_time_is_refused(alice_api, receiver, rebinding):
    answers, url = rebinding
    created = create(alice_api, url, ["webhook.test"])
    # when: the name now resolves to loopback
    answers["rebind.example"] = [ipaddress.ip_address("127.0.0.1")]
    body = alice_api.post(f"{WEBHOOKS}{created['id']}/test/").json()
    # then
    assert body["status"] == "pending"
    assert body["attempts"][0]["error"] == (
        "The webhook URL is refused: rebind.example resolves to 127.0.0.1, which is not a public address."
    )
    assert receiver.received() == []


def test_a_connection_reaching_a_private_address_is_refused(alice_api, receiver, rebinding):
    _, url = rebinding
    created = create(alice_api, url, ["webhook.test"])
    # when: the check's lookup says public, the connection reaches loopback (DNS rebinding)
    body = alice_api.post(f"{WEBHOOKS}{created['id']}/test/").json()
    # then
    assert body["status"] == "pending"
    assert body["attempts"][0]["error"] == (
        "The webhook URL is refused: The connection reached 127.0.0.1, which is not a public address."
    )
    assert body["attempts"][0]["response_status"] is None
    assert receiver.received() == []


def test_a_redirect_is_not_followed(alice_api, receiver, django_capture_on_commit_callbacks):
    created = create(alice_api, receiver.url(), ["webhook.test"])
    elsewhere = receiver.url("/latest/meta-data/")
    receiver.answer_next((302, {"Location": elsewhere}, None), (302, {"Location": elsewhere}, None))
    # when
    body = alice_api.post(f"{WEBHOOKS}{created['id']}/test/").json()
    # then
    assert (body["status"], body["attempts"][0]["response_status"]) == ("pending", 302)
    assert body["attempts"][0]["error"] == "127.0.0.1 answered HTTP 302: a redirect, which is not followed"
    # the webhook channel records the code
    response = webhook_send(alice_api, django_capture_on_commit_callbacks, receiver.url())
    assert response.status_code == 202
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.error_code) == ("failed", "redirect")
    assert [r["path"] for r in receiver.received()] == [HOOK_PATH, HOOK_PATH]


def test_a_slow_receiver_is_a_retryable_timeout(alice, receiver, settings):
    settings.BEACON_WEBHOOK_TIMEOUT_SECONDS = 0.3
    receiver.slow = 1.0
    with time_machine.travel(T0, tick=False):
        endpoint, _ = endpoint_create(account=alice, url=receiver.url(), event_types=["*"])
        # when
        message = endpoint_test(endpoint=endpoint)
    # then
    attempt = message.attempts.get()
    assert (message.status, message.attempt_count) == ("pending", 1)
    assert (attempt.started_at, message.next_attempt_at) == (T0, T0 + timedelta(seconds=5))
    assert (attempt.succeeded, attempt.response_status) == (False, None)
    assert attempt.error == "127.0.0.1 did not answer within 0.3 s."
    assert 300 <= attempt.duration_ms < 1000
    assert message.last_error == attempt.error


def test_a_huge_answer_is_read_only_in_part(alice, receiver):
    receiver.answer_next((200, {}, "x" * 300_000))
    endpoint, _ = endpoint_create(account=alice, url=receiver.url(), event_types=["*"])
    message = endpoint_test(endpoint=endpoint)
    assert message.status == "delivered"
    assert message.attempts.get().response_body == "x" * 1000


# --- The due scan -----------------------------------------------------------------------------


def test_the_due_scan_sends_a_message_once(alice, receiver, settings):
    with time_machine.travel(T0, tick=False) as clock:
        endpoint, _ = endpoint_create(account=alice, url=receiver.url(), event_types=["*"])
        receiver.answer_next((503, {}, "busy"))
        message = endpoint_test(endpoint=endpoint)
        clock.move_to(T0 + timedelta(minutes=1))
        now = timezone.now()
        assert webhook_messages_due(now=now) == {"sent": 1, "recovered": 0}
        assert webhook_messages_due(now=now) == {"sent": 0, "recovered": 0}
        assert receiver.sent_count() == 2
        message.refresh_from_db()
        assert (message.status, message.attempt_count) == ("delivered", 2)
        # a message a dead worker held: left alone within the lease, sent again after it
        lease = timedelta(seconds=settings.BEACON_SENDING_LEASE_SECONDS)
        held = endpoint_test(endpoint=endpoint)
        WebhookMessage.objects.filter(pk=held.pk).update(
            status="sending", claimed_at=now - lease + timedelta(seconds=1)
        )
        assert webhook_messages_due(now=now) == {"sent": 0, "recovered": 0}
        WebhookMessage.objects.filter(pk=held.pk).update(claimed_at=now - lease - timedelta(seconds=1))
        assert webhook_messages_due(now=now) == {"sent": 1, "recovered": 1}
    held.refresh_from_db()
    assert (held.status, held.attempt_count, held.claimed_at) == ("delivered", 2, None)
    assert receiver.sent_count() == 4


def test_a_slow_batch_puts_back_what_it_did_not_reach_within_half_the_lease(alice, receiver, settings):
    """A batch that would outlive its lease would be taken for a dead worker's and posted
    again by the next scan: it stops at half the lease and puts the rest back, unposted."""
    settings.BEACON_SENDING_LEASE_SECONDS = 1
    endpoint, _ = endpoint_create(account=alice, url=receiver.url(), event_types=["*"])
    now = timezone.now()
    waiting = [
        WebhookMessage.objects.create(
            account=alice,
            endpoint=endpoint,
            event_type="webhook.test",
            payload={"type": "webhook.test", "n": n},
            next_attempt_at=now - timedelta(seconds=3 - n),
            created_at=now,
        )
        for n in range(3)
    ]
    receiver.slow = 0.6
    # when
    assert webhook_messages_due(now=now) == {"sent": 1, "recovered": 0}
    # then
    assert receiver.sent_count() == 1
    statuses = [
        WebhookMessage.objects.values_list("status", "attempt_count", "claimed_at").get(pk=m.pk) for m in waiting
    ]
    assert statuses == [("delivered", 1, None), ("pending", 0, None), ("pending", 0, None)]
    receiver.slow = 0.0
    assert webhook_messages_due(now=timezone.now()) == {"sent": 2, "recovered": 0}
    # (PostgreSQL's jsonb keeps its own key order: compare the JSON, not the bytes)
    assert [json.loads(r["body"]) for r in receiver.received()] == [{"type": "webhook.test", "n": n} for n in range(3)]


# --- Statements -------------------------------------------------------------------------------


def test_with_no_endpoint_a_send_asks_nothing_of_the_webhook_tables(
    alice_api, bob, console_sms, receiver, django_capture_on_commit_callbacks
):
    # when
    with CaptureQueriesContext(connection) as queries:
        sms_send(alice_api, django_capture_on_commit_callbacks)
    # then
    assert Delivery.objects.get().status == "sent"
    assert [q["sql"] for q in queries if "notifications_webhook" in q["sql"]] == []
    # nor when only another account listens (once the process knows it)
    endpoint_create(account=bob, url=receiver.url(), event_types=["*"])
    sms_send(alice_api, django_capture_on_commit_callbacks)
    with CaptureQueriesContext(connection) as queries:
        sms_send(alice_api, django_capture_on_commit_callbacks)
    assert [q["sql"] for q in queries if "notifications_webhook" in q["sql"]] == []
    assert (WebhookMessage.objects.count(), receiver.sent_count()) == (0, 0)


# --- The operator console ---------------------------------------------------------------------


def console_rows(account, receiver) -> dict:
    endpoint, _ = endpoint_create(account=account, url=receiver.url(f"/hooks/{account.username}"), event_types=["*"])
    message = endpoint_test(endpoint=endpoint)
    recipient = make_recipient(account, external_id=f"{account.username}-1")
    delivery = make_delivery(account, channel="in_app", recipient=recipient, to=recipient.external_id)
    item = InboxItem.objects.create(
        account=account, recipient=recipient, delivery=delivery, title="Hi", body="Body", created_at=timezone.now()
    )
    return {"endpoint": endpoint, "message": message, "attempt": message.attempts.get(), "inbox": item}


@pytest.fixture
def alice_rows(alice, receiver):
    return console_rows(alice, receiver)


@pytest.fixture
def bob_rows(bob, receiver):
    return console_rows(bob, receiver)


@pytest.fixture
def alice_staff(alice):
    alice.is_staff = True
    alice.save()
    alice.user_permissions.set(Permission.objects.filter(content_type__app_label="notifications"))
    client = Client()
    client.force_login(alice)
    return client


MODELS = [
    ("notifications_webhookendpoint", "endpoint"),
    ("notifications_webhookmessage", "message"),
    ("notifications_webhookattempt", "attempt"),
    ("notifications_inboxitem", "inbox"),
]


@pytest.mark.parametrize(("model", "key"), MODELS)
def test_console_pages_load(admin_client, alice_rows, bob_rows, model, key):
    response = admin_client.get(changelist(model))
    assert response.status_code == 200
    assert response.context["cl"].result_count == 2
    page = admin_client.get(change(model, alice_rows[key].pk))
    assert page.status_code == 200
    assert alice_rows["endpoint"].secret not in page.content.decode()


@pytest.mark.parametrize(("model", "key"), MODELS)
def test_scoped_staff_see_their_own_account_only(alice_staff, alice_rows, bob_rows, model, key):
    response = alice_staff.get(changelist(model))
    assert response.status_code == 200
    assert [obj.pk for obj in response.context["cl"].result_list] == [alice_rows[key].pk]
    assert alice_staff.get(change(model, alice_rows[key].pk)).status_code == 200
    response = alice_staff.get(change(model, bob_rows[key].pk))
    assert (response.status_code, response.url) == (302, "/admin/")


def test_the_endpoint_page_edits_through_the_service_and_never_shows_a_secret(admin_client, alice_rows, settings):
    endpoint = alice_rows["endpoint"]
    page = admin_client.get(change("notifications_webhookendpoint", endpoint.pk))
    assert sorted(page.context["adminform"].form.fields) == ["description", "enabled", "event_types", "url"]
    form = {"url": endpoint.url, "description": "ops", "event_types": '["delivery.failed"]'}  # unticked: disabled
    response = admin_client.post(change("notifications_webhookendpoint", endpoint.pk), form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason, endpoint.description, endpoint.event_types) == (
        False,
        "disabled by hand",
        "ops",
        ["delivery.failed"],
    )
    # bad event types and private URLs are refused on the form
    settings.BEACON_ALLOW_PRIVATE_TARGETS = False
    response = admin_client.post(
        change("notifications_webhookendpoint", endpoint.pk),
        {"url": "http://10.0.0.1/", "event_types": '["delivery.nope"]', "enabled": "on"},
    )
    assert response.status_code == 200
    assert sorted(response.context["adminform"].form.errors) == ["event_types", "url"]
    assert admin_client.get(reverse("admin:notifications_webhookendpoint_add")).status_code == 403


def test_the_send_test_event_action(admin_client, alice_rows, receiver):
    endpoint = alice_rows["endpoint"]
    data = {"action": "send_test_event", "_selected_action": [str(endpoint.pk)]}
    # asks first
    response = admin_client.post(changelist("notifications_webhookendpoint"), data)
    assert response.status_code == 200
    assert "Send a webhook.test event to these endpoints now?" in response.content.decode()
    assert receiver.sent_count() == 1  # the fixture's own test event
    # then sends
    response = admin_client.post(changelist("notifications_webhookendpoint"), {**data, "post": "yes"})
    assert messages_of(response) == [("success", f"{endpoint.url}: the test event was delivered.")]
    assert receiver.sent_count() == 2
    assert WebhookMessage.objects.filter(endpoint=endpoint).count() == 2


def test_the_retry_now_action(admin_client, alice, receiver, django_capture_on_commit_callbacks):
    endpoint, _ = endpoint_create(account=alice, url=receiver.url(), event_types=["*"])
    receiver.answer_next((500, {}, "down"))
    failing = endpoint_test(endpoint=endpoint)
    WebhookMessage.objects.filter(pk=failing.pk).update(
        status="failed", next_attempt_at=None, attempt_count=8, last_error="gave up"
    )
    delivered = endpoint_test(endpoint=endpoint)
    data = {"action": "retry_now", "_selected_action": [str(failing.pk), str(delivered.pk)], "post": "yes"}
    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(changelist("notifications_webhookmessage"), data)
    # then
    assert sorted(messages_of(response)) == [
        ("success", "Put 1 message back to be sent now."),
        ("warning", "1 message was delivered or being sent, and left alone."),
    ]
    failing.refresh_from_db()
    assert (failing.status, failing.attempt_count, failing.last_error) == ("delivered", 9, "")
    assert receiver.sent_count() == 3


def test_the_message_search_takes_the_webhook_id(admin_client, alice_rows, bob_rows):
    message = alice_rows["message"]
    response = admin_client.get(changelist("notifications_webhookmessage"), {"q": message.webhook_id})
    assert [m.pk for m in response.context["cl"].result_list] == [message.pk]
