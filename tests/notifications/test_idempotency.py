"""Idempotency-Key: a retried request gets the first answer and sends nothing more."""

from unittest import mock

import pytest

from notifications.models import Delivery, IdempotencyKey, Notification
from notifications.services import accept as services
from tests.factories import make_template
from tests.notifications.factories import SEND_URL, sms_request

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _templates(alice, bob):
    make_template(alice)
    make_template(bob)


def send(client, body, key, capture):
    with capture(execute=True):
        return client.post(SEND_URL, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_same_key_and_body_replays_the_first_answer(alice_api, twilio, django_capture_on_commit_callbacks):
    # given
    first = send(alice_api, sms_request(), "booking-42-reminder", django_capture_on_commit_callbacks)
    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first.headers
    # when
    second = send(alice_api, sms_request(), "booking-42-reminder", django_capture_on_commit_callbacks)
    # then
    assert second.status_code == 202
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert second.json()["id"] == str(Notification.objects.get().pk)
    assert [d["id"] for d in second.json()["deliveries"]] == [str(Delivery.objects.get().pk)]
    assert Notification.objects.count() == 1
    assert Delivery.objects.count() == 1
    assert twilio.sent_count() == 1
    stored = IdempotencyKey.objects.get()
    assert (stored.key, stored.response_status, stored.response_body) == ("booking-42-reminder", 202, first.json())


def test_key_order_in_the_body_does_not_matter(alice_api, twilio, django_capture_on_commit_callbacks):
    body = sms_request()
    reordered = dict(reversed(list(body.items())))
    send(alice_api, body, "k1", django_capture_on_commit_callbacks)
    second = send(alice_api, reordered, "k1", django_capture_on_commit_callbacks)
    assert second.status_code == 202
    assert second.headers["Idempotent-Replayed"] == "true"
    assert twilio.sent_count() == 1


def test_same_key_with_a_different_body_is_422_and_writes_nothing(
    alice_api, twilio, django_capture_on_commit_callbacks
):
    # given
    first = send(alice_api, sms_request(), "k1", django_capture_on_commit_callbacks)
    # when
    changed = sms_request(context={"event_name": "Massage"})
    second = send(alice_api, changed, "k1", django_capture_on_commit_callbacks)
    # then
    assert second.status_code == 422
    assert second.json() == {
        "message": "This Idempotency-Key was used with a different request body.",
        "errors": {},
    }
    assert "Idempotent-Replayed" not in second.headers
    assert Notification.objects.count() == 1
    assert Delivery.objects.count() == 1
    assert IdempotencyKey.objects.count() == 1
    assert str(Notification.objects.get().pk) == first.json()["id"]
    assert twilio.sent_count() == 1


def test_the_same_key_from_another_account_is_independent(
    alice_api, bob_api, twilio, django_capture_on_commit_callbacks
):
    first = send(alice_api, sms_request(), "shared-key", django_capture_on_commit_callbacks)
    second = send(bob_api, sms_request(), "shared-key", django_capture_on_commit_callbacks)
    assert second.status_code == 202
    assert "Idempotent-Replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]
    assert sorted(Notification.objects.values_list("account__username", flat=True)) == ["alice", "bob"]
    assert IdempotencyKey.objects.count() == 2
    assert twilio.sent_count() == 2


def test_without_a_key_each_request_sends(alice_api, twilio, django_capture_on_commit_callbacks):
    send(alice_api, sms_request(), "", django_capture_on_commit_callbacks)
    send(alice_api, sms_request(), "", django_capture_on_commit_callbacks)
    assert Notification.objects.count() == 2
    assert IdempotencyKey.objects.count() == 0
    assert twilio.sent_count() == 2


def test_a_refused_request_does_not_burn_the_key(alice_api, twilio, django_capture_on_commit_callbacks):
    refused = send(alice_api, sms_request(context={}), "k1", django_capture_on_commit_callbacks)
    assert refused.status_code == 400
    accepted = send(alice_api, sms_request(), "k1", django_capture_on_commit_callbacks)
    assert accepted.status_code == 202
    assert "Idempotent-Replayed" not in accepted.headers
    assert twilio.sent_count() == 1


def test_a_concurrent_request_that_committed_first_is_replayed(
    alice, alice_api, twilio, django_capture_on_commit_callbacks
):
    # given: another request with the key commits between our check and our insert
    first = send(alice_api, sms_request(), "race", django_capture_on_commit_callbacks)
    assert twilio.sent_count() == 1
    stored_answer = services._idempotent_replay(account=alice, key="race", request_hash=_hash(sms_request()))
    # when: our first look finds nothing, the insert collides, the second look finds it
    with mock.patch.object(services, "_idempotent_replay", side_effect=[None, stored_answer]) as replay:
        second = send(alice_api, sms_request(), "race", django_capture_on_commit_callbacks)
    assert replay.call_count == 2
    # then
    assert second.status_code == 202
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert Notification.objects.count() == 1
    assert Delivery.objects.count() == 1
    assert twilio.sent_count() == 1


def _hash(body):
    from notifications.api import request_fingerprint

    return request_fingerprint(body)
