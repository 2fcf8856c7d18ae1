"""POST /api/v1/notifications/send/batch/: one message for many recipients, accepted as a
whole in request order with a few multi-row statements, or refused as a whole with each
bad item named by its index."""

from datetime import datetime, timedelta
from unittest import mock

import pytest
from django.db import connection
from django.utils import timezone

from notifications import tasks
from notifications.models import Delivery, DeliveryAttempt, DeliveryEvent, IdempotencyKey, Notification, Recipient
from notifications.services import deliveries_sweep
from tests.factories import make_template
from tests.notifications.factories import LOGS_URL
from tests.notifications.statements import Statements, real_parameter_limit

pytestmark = pytest.mark.django_db

BATCH_URL = "/api/v1/notifications/send/batch/"


@pytest.fixture
def templates(alice, bob):
    return {"alice": make_template(alice), "bob": make_template(bob, key="bobs-only")}


def phone(n: int) -> str:
    return f"+1415555{n:04d}"


def sms_batch(n: int, *, start: int = 0, **overrides) -> dict:
    body = {
        "channel": "sms",
        "template": "reminder",
        "recipients": [{"phone": phone(start + i), "context": {"event_name": f"Event {i}"}} for i in range(n)],
    }
    body.update(overrides)
    return body


def post(client, body, capture, *, execute: bool = False, **headers):
    """POST a batch, capturing (and with execute=True running) what is enqueued on commit."""
    with capture(execute=execute) as callbacks:
        response = client.post(BATCH_URL, body, format="json", **headers)
    return response, callbacks


def publications():
    """Patch the batch task's apply_async, still publishing (eager in unit tests)."""
    return mock.patch.object(tasks.deliveries_dispatch, "apply_async", wraps=tasks.deliveries_dispatch.apply_async)


def published(publish) -> list[tuple[str, int]]:
    """(channel, number of deliveries) of each dispatch task published."""
    return [(call.kwargs["args"][0], len(call.kwargs["args"][1])) for call in publish.call_args_list]


def assert_nothing_written(twilio, smtp=None):
    assert Notification.objects.count() == 0
    assert Delivery.objects.count() == 0
    assert DeliveryEvent.objects.count() == 0
    assert DeliveryAttempt.objects.count() == 0
    assert Recipient.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0
    assert twilio.sent_count() == 0
    if smtp is not None:
        assert smtp.messages == []


# --- Accepted --------------------------------------------------------------------------


def test_a_batch_is_accepted_in_request_order_and_recipients_are_upserted(
    alice, alice_api, templates, twilio, smtp, django_capture_on_commit_callbacks
):
    # given: ext-1 is known already; ext-2 appears twice in the batch
    known = Recipient.objects.create(
        account=alice, external_id="ext-1", name="Old", email="old@example.com", phone="+14155550100"
    )
    items = [
        {"external_id": "ext-1", "name": "Ana", "email": "ana@example.com", "phone": phone(101), "context": {"event_name": "Haircut"}},
        {"external_id": "ext-2", "name": "Ben", "email": "ben@example.com", "phone": phone(102), "context": {"event_name": "Massage"}},
        {"name": "Cy", "email": "cy@example.com", "phone": phone(103), "context": {"event_name": "Nails"}},
        {"external_id": "ext-2", "name": "Benjamin", "email": "ben@example.com", "phone": phone(102), "context": {"event_name": "Facial"}},
    ]  # fmt: skip
    body = {"channels": ["sms", "email"], "template": "reminder", "recipients": items}
    # when
    with publications() as publish:
        response, callbacks = post(alice_api, body, django_capture_on_commit_callbacks, execute=True)
    # then: the answer lists one notification per item, in request order, with a delivery per channel
    assert response.status_code == 202, response.json()
    answer = response.json()
    assert (answer["status"], answer["count"], answer["scheduled_for"]) == ("accepted", 4, None)
    assert len(answer["notifications"]) == 4
    assert Notification.objects.count() == 4
    assert Delivery.objects.count() == 8
    for item, entry in zip(items, answer["notifications"], strict=True):
        notification = Notification.objects.get(pk=entry["id"])
        assert notification.context == item["context"]
        assert notification.channels == ["sms", "email"]
        assert notification.template == templates["alice"]
        assert [(d["channel"], d["status"]) for d in entry["deliveries"]] == [("sms", "queued"), ("email", "queued")]
        sms, email = (Delivery.objects.get(pk=d["id"], notification=notification) for d in entry["deliveries"])
        assert (sms.to, email.to) == (item["phone"], item["email"])
        assert sms.body == f"Reminder: {item['context']['event_name']} soon"
        assert email.subject == f"Reminder: {item['context']['event_name']}"
    # recipients: ext-1 updated in place, ext-2 once (its later details win), Cy new
    assert Recipient.objects.filter(account=alice).count() == 3
    known.refresh_from_db()
    assert (known.name, known.email, known.phone) == ("Ana", "ana@example.com", phone(101))
    ben = Recipient.objects.get(account=alice, external_id="ext-2")
    assert (ben.name, ben.email, ben.phone) == ("Benjamin", "ben@example.com", phone(102))
    notifications = [Notification.objects.get(pk=entry["id"]) for entry in answer["notifications"]]
    assert [n.recipient_id for n in notifications] == [
        known.pk,
        ben.pk,
        Recipient.objects.get(account=alice, email="cy@example.com").pk,
        ben.pk,
    ]
    # dispatch: one task per channel, published after commit, and every delivery sent once
    assert len(callbacks) == 1
    assert sorted(published(publish)) == [("email", 4), ("sms", 4)]
    assert sorted(r["To"] for r in twilio.requests) == sorted(item["phone"] for item in items)
    assert sorted(m["message"]["To"] for m in smtp.messages) == sorted(item["email"] for item in items)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    for delivery in Delivery.objects.all():
        assert list(delivery.events.values_list("from_status", "status", "source")) == [
            ("", "queued", "api"),
            ("queued", "sending", "dispatch"),
            ("sending", "sent", "dispatch"),
        ]


def test_a_template_is_found_by_id_too(alice_api, templates, twilio, django_capture_on_commit_callbacks):
    response, callbacks = post(
        alice_api, sms_batch(2, template=str(templates["alice"].pk)), django_capture_on_commit_callbacks, execute=True
    )
    assert response.status_code == 202
    assert len(callbacks) == 1
    assert sorted(r["Body"] for r in twilio.requests) == ["Reminder: Event 0 soon", "Reminder: Event 1 soon"]


def test_a_phone_only_item_matches_the_recipient_an_earlier_item_created(
    alice, alice_api, django_capture_on_commit_callbacks
):
    # given: the same person, first by email and phone, then by phone alone
    body = {
        "channel": "sms",
        "message": "Hi",
        "recipients": [{"email": "ana@example.com", "phone": phone(100)}, {"phone": phone(100)}],
    }
    # when
    response, _ = post(alice_api, body, django_capture_on_commit_callbacks)
    # then: as two single sends in a row would leave it, one recipient for both
    assert response.status_code == 202
    ana = Recipient.objects.get(account=alice, email="ana@example.com")
    assert [Notification.objects.get(pk=n["id"]).recipient_id for n in response.json()["notifications"]] == [
        ana.pk,
        ana.pk,
    ]
    assert list(Recipient.objects.filter(account=alice).values_list("email", "phone")) == [
        ("ana@example.com", phone(100))
    ]


def test_statements_do_not_grow_with_the_batch(
    alice, alice_api, templates, settings, django_capture_on_commit_callbacks
):
    # given: a first request has warmed what a process remembers (the token, the template version)
    settings.BEACON_TOKEN_CACHE_SECONDS = 3600
    response, _ = post(alice_api, sms_batch(1, start=9000), django_capture_on_commit_callbacks)
    assert response.status_code == 202
    measured = {}
    # when
    for n, start in ((10, 0), (100, 100), (200, 300)):
        with real_parameter_limit(), Statements() as statements:
            response, callbacks = post(alice_api, sms_batch(n, start=start), django_capture_on_commit_callbacks)
        assert response.status_code == 202
        assert response.json()["count"] == n
        assert len(callbacks) == 1
        measured[n] = (len(statements.executed), len(statements.writes), len(statements.savepoints))
    # then: (statements, writes, savepoint statements) do not grow with the batch: the
    # template is remembered; in one transaction the recipients are looked up and the new
    # ones inserted (on PostgreSQL INSERT ... RETURNING gives their keys back; SQLite's
    # INSERT OR IGNORE does not, so they are read back), then notifications, deliveries and
    # events: on PostgreSQL one COPY each, or, for a few rows (10 recipients make 30), one
    # round trip of three INSERTs; the decision reads the account's preferences, the
    # suppressions and the recipients' preferences, one statement each
    assert (
        measured
        == {
            "postgresql": {10: (6, 2, 2), 100: (8, 4, 2), 200: (8, 4, 2)},
            "sqlite": {10: (9, 4, 2), 100: (9, 4, 2), 200: (9, 4, 2)},
        }[connection.vendor]
    )
    assert Delivery.objects.count() == 311
    assert Recipient.objects.count() == 311


def test_the_enqueued_tasks_carry_batches_of_one_channel(
    alice, alice_api, templates, settings, django_capture_on_commit_callbacks
):
    settings.BEACON_DISPATCH_BATCH_SIZE = 100
    settings.BEACON_SMS_PROVIDER = "console"
    settings.BEACON_EMAIL_PROVIDER = "console"
    body = {
        "channels": ["email", "sms"],
        "template": "reminder",
        "recipients": [
            {"email": f"r{i}@example.com", "phone": phone(i), "context": {"event_name": "Haircut"}} for i in range(150)
        ],
    }
    with publications() as publish:
        response, callbacks = post(alice_api, body, django_capture_on_commit_callbacks, execute=True)
    assert response.status_code == 202
    assert len(callbacks) == 1
    assert published(publish) == [("email", 100), ("email", 50), ("sms", 100), ("sms", 50)]
    for call in publish.call_args_list:
        assert call.kwargs["countdown"] is None
        channel, items = call.kwargs["args"]
        assert {attempts for _, attempts in items} == {0}
        assert set(Delivery.objects.filter(pk__in=[pk for pk, _ in items]).values_list("channel", flat=True)) == {
            channel
        }
    assert Delivery.objects.filter(status="sent").count() == 300


# --- Refused ---------------------------------------------------------------------------

INVALID_PHONE = ["Enter the number in E.164 form, e.g. +14155550123."]


def with_item(index: int, item: dict, n: int = 6) -> dict:
    body = sms_batch(n)
    body["recipients"][index] = item
    return body


REFUSALS = {
    "one bad item among many": (
        with_item(3, {"phone": "004915112345678", "context": {"event_name": "Haircut"}}),
        {"recipients": {"3": {"phone": INVALID_PHONE}}},
    ),
    "several bad items": (
        {
            **sms_batch(6),
            "recipients": [
                *sms_batch(6)["recipients"][:1],
                {"name": "No address"},
                *sms_batch(6)["recipients"][2:4],
                {"phone": phone(4), "email": "not-an-email"},
                "not an object",
            ],
        },
        {
            "recipients": {
                "1": {"email": ["Give an email address or a phone number (or an external id and a chat webhook URL)."]},
                "4": {"email": ["Enter a valid email address."]},
                "5": {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]},
            }
        },
    ),
    "missing address for the channel": (
        with_item(2, {"email": "ana@example.com", "context": {"event_name": "Haircut"}}),
        {"recipients": {"2": {"phone": ["Required to send on the sms channel."]}}},
    ),
    "missing addresses for two channels": (
        {
            "channels": ["sms", "email"],
            "template": "reminder",
            "recipients": [
                {"phone": phone(0), "email": "a@example.com", "context": {"event_name": "Haircut"}},
                {"phone": phone(1), "context": {"event_name": "Haircut"}},
                {"email": "c@example.com", "context": {"event_name": "Haircut"}},
            ],
        },
        {
            "recipients": {
                "1": {"email": ["Required to send on the email channel."]},
                "2": {"phone": ["Required to send on the sms channel."]},
            }
        },
    ),
    "a missing required placeholder": (
        with_item(4, {"phone": phone(4), "context": {"start_time": "at 10:00"}}),
        {"recipients": {"4": {"context": ["sms: missing required placeholder(s): event_name"]}}},
    ),
    "over the limit": (
        sms_batch(4),
        {"recipients": ["At most 3 recipients per request; this one has 4."]},
    ),
    "over the default limit": (
        sms_batch(1001),
        {"recipients": ["At most 1000 recipients per request; this one has 1001."]},
    ),
    "no recipients": (
        sms_batch(0),
        {"recipients": {"non_field_errors": ["This list may not be empty."]}},
    ),
    "recipients not a list": (
        {**sms_batch(0), "recipients": {"phone": phone(0)}},
        {"recipients": {"non_field_errors": ['Expected a list of items but got type "dict".']}},
    ),
    "unknown template": (
        sms_batch(3, template="no-such-template"),
        {"template": ["No active template with id or key 'no-such-template'."]},
    ),
    "another account's template by key": (
        sms_batch(3, template="bobs-only"),
        {"template": ["No active template with id or key 'bobs-only'."]},
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_batch_writes_and_sends_nothing(
    alice_api, templates, twilio, settings, django_capture_on_commit_callbacks, case
):
    # given
    if case == "over the limit":
        settings.BEACON_BATCH_MAX_RECIPIENTS = 3
    body, errors = REFUSALS[case]
    # when
    response, callbacks = post(alice_api, body, django_capture_on_commit_callbacks, execute=True)
    # then
    assert response.status_code == 400
    assert response.json()["errors"] == errors
    assert callbacks == []
    assert_nothing_written(twilio)


def test_the_refusal_message_names_the_first_bad_item(alice_api, templates, twilio, django_capture_on_commit_callbacks):
    response, _ = post(alice_api, REFUSALS["a missing required placeholder"][0], django_capture_on_commit_callbacks)
    assert response.json() == {
        "message": "Invalid input: recipients: sms: missing required placeholder(s): event_name",
        "errors": {"recipients": {"4": {"context": ["sms: missing required placeholder(s): event_name"]}}},
    }


def test_another_accounts_template_by_id_is_refused(alice_api, templates, twilio, django_capture_on_commit_callbacks):
    bobs = str(templates["bob"].pk)
    response, callbacks = post(alice_api, sms_batch(3, template=bobs), django_capture_on_commit_callbacks)
    assert response.status_code == 400
    assert response.json()["errors"] == {"template": [f"No active template with id or key {bobs!r}."]}
    assert callbacks == []
    assert_nothing_written(twilio)


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Token nope"])
def test_without_a_valid_token_it_is_401(
    anon_api, templates, twilio, django_capture_on_commit_callbacks, authorization
):
    if authorization:
        anon_api.credentials(HTTP_AUTHORIZATION=authorization)
    response, callbacks = post(anon_api, sms_batch(3), django_capture_on_commit_callbacks, execute=True)
    assert response.status_code == 401
    assert callbacks == []
    assert_nothing_written(twilio)


# --- Idempotency -----------------------------------------------------------------------


def test_the_idempotency_key_covers_the_batch(alice_api, templates, twilio, django_capture_on_commit_callbacks):
    # given
    key = {"HTTP_IDEMPOTENCY_KEY": "newsletter-2026-11"}
    first, _ = post(alice_api, sms_batch(5), django_capture_on_commit_callbacks, execute=True, **key)
    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first.headers
    # when: the same body again
    second, callbacks = post(alice_api, sms_batch(5), django_capture_on_commit_callbacks, execute=True, **key)
    # then: the first answer, and nothing more written or sent
    assert second.status_code == 202
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert callbacks == []
    assert Notification.objects.count() == 5
    assert Delivery.objects.count() == 5
    assert twilio.sent_count() == 5
    stored = IdempotencyKey.objects.get()
    assert (stored.key, stored.response_status, stored.response_body) == ("newsletter-2026-11", 202, first.json())
    # when: the same key with another body
    third, callbacks = post(alice_api, sms_batch(6), django_capture_on_commit_callbacks, execute=True, **key)
    # then
    assert third.status_code == 422
    assert third.json() == {"message": "This Idempotency-Key was used with a different request body.", "errors": {}}
    assert callbacks == []
    assert Notification.objects.count() == 5
    assert Delivery.objects.count() == 5
    assert Recipient.objects.count() == 5
    assert twilio.sent_count() == 5


def test_a_refused_batch_does_not_burn_its_key(alice_api, templates, twilio, django_capture_on_commit_callbacks):
    key = {"HTTP_IDEMPOTENCY_KEY": "k1"}
    refused, _ = post(alice_api, with_item(1, {"phone": "12"}), django_capture_on_commit_callbacks, **key)
    assert refused.status_code == 400
    assert IdempotencyKey.objects.count() == 0
    accepted, _ = post(alice_api, sms_batch(6), django_capture_on_commit_callbacks, execute=True, **key)
    assert accepted.status_code == 202
    assert "Idempotent-Replayed" not in accepted.headers
    assert twilio.sent_count() == 6


# --- Accounts --------------------------------------------------------------------------


def test_bob_cannot_see_alices_batch(alice_api, bob_api, templates, django_capture_on_commit_callbacks):
    response, _ = post(alice_api, sms_batch(3), django_capture_on_commit_callbacks)
    delivery_ids = [n["deliveries"][0]["id"] for n in response.json()["notifications"]]
    for delivery_id in delivery_ids:
        assert bob_api.get(f"{LOGS_URL}{delivery_id}/").status_code == 404
        assert alice_api.get(f"{LOGS_URL}{delivery_id}/").status_code == 200
    assert bob_api.get(LOGS_URL).json()["count"] == 0
    assert alice_api.get(LOGS_URL).json()["count"] == 3


def test_the_same_external_id_in_two_accounts_is_two_recipients(
    alice, bob, alice_api, bob_api, templates, django_capture_on_commit_callbacks
):
    item = {"external_id": "customer-7", "phone": phone(7), "context": {"event_name": "Haircut"}}
    post(alice_api, sms_batch(0, recipients=[item]), django_capture_on_commit_callbacks)
    post(
        bob_api,
        sms_batch(0, template="bobs-only", recipients=[{**item, "name": "Bob's"}]),
        django_capture_on_commit_callbacks,
    )
    assert Recipient.objects.filter(external_id="customer-7").count() == 2
    assert Recipient.objects.get(account=alice).name == ""
    assert Recipient.objects.get(account=bob).name == "Bob's"


# --- Scheduled -------------------------------------------------------------------------


def test_a_scheduled_batch_waits_then_the_sweep_sends_it_in_batches(
    alice_api, templates, twilio, settings, django_capture_on_commit_callbacks
):
    # given
    settings.BEACON_DISPATCH_BATCH_SIZE = 100
    when = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    # when
    response, callbacks = post(
        alice_api, sms_batch(250, scheduled_for=when.isoformat()), django_capture_on_commit_callbacks, execute=True
    )
    # then: all scheduled, nothing enqueued or sent
    assert response.status_code == 202
    answer = response.json()
    assert (answer["status"], answer["count"]) == ("scheduled", 250)
    assert datetime.fromisoformat(answer["scheduled_for"]) == when
    assert {d["status"] for n in answer["notifications"] for d in n["deliveries"]} == {"scheduled"}
    assert callbacks == []
    assert twilio.sent_count() == 0
    assert Delivery.objects.filter(status="scheduled", next_attempt_at=when, enqueued_at=None).count() == 250
    assert Notification.objects.filter(scheduled_for=when).count() == 250
    # when: a sweep before the time leaves them
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert deliveries_sweep(now=when - timedelta(seconds=1)) == {"due": 0, "requeued": 0, "abandoned": 0}
    assert callbacks == []
    # when: the sweep after it
    with publications() as publish, django_capture_on_commit_callbacks(execute=True) as callbacks:
        counts = deliveries_sweep(now=when + timedelta(seconds=1))
    # then: three dispatch tasks of at most 100, and each delivery sent once
    assert counts == {"due": 250, "requeued": 0, "abandoned": 0}
    assert len(callbacks) == 1
    assert published(publish) == [("sms", 100), ("sms", 100), ("sms", 50)]
    assert twilio.sent_count() == 250
    assert sorted(r["To"] for r in twilio.requests) == [phone(i) for i in range(250)]
    assert Delivery.objects.filter(status="sent", attempt_count=1).count() == 250
    assert DeliveryEvent.objects.filter(from_status="scheduled", status="queued", source="schedule").count() == 250


def test_a_literal_message_too_long_for_its_channel_is_named_once(
    alice_api, twilio, django_capture_on_commit_callbacks
):
    # given: a literal message (the same for everyone) over the SMS limit
    body = {"channel": "sms", "message": "x" * 1601, "recipients": [{"phone": phone(i)} for i in range(3)]}
    # when
    response, callbacks = post(alice_api, body, django_capture_on_commit_callbacks)
    # then: one error about the message, not one per recipient
    assert response.status_code == 400
    assert response.json()["errors"] == {"message": ["sms: The SMS body is 1601 characters; the limit is 1600."]}
    assert callbacks == []
    assert_nothing_written(twilio)
