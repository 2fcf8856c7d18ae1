"""The in-app inbox in-process: send API -> accept -> dispatch (eager) -> the inbox provider
-> InboxItem, then the inbox API (list, count, read, archive, read-all), the stream token
and the WSGI event stream (the database polled, no Redis)."""

import json
import time
from types import SimpleNamespace
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from django.core import signing
from django.db import connection
from django.test import AsyncClient

from notifications import inbox_api
from notifications.models import Delivery, InboxItem, Recipient
from notifications.services import delivery_dispatch, inbox
from notifications.services.dispatch import _message
from notifications.services.inbox import InboxProvider
from tests.factories import make_template

pytestmark = pytest.mark.django_db

SEND_URL = "/api/v1/notifications/send/"
INBOX_URL = "/api/v1/inbox/"
COUNT_URL = "/api/v1/inbox/unread-count/"
READ_ALL_URL = "/api/v1/inbox/read-all/"
TOKEN_URL = "/api/v1/inbox/stream-token/"
STREAM_URL = "/api/v1/inbox/stream/"

IN_APP_TEMPLATE = [
    {
        "channel": "in_app",
        "locale": "",
        "subject": "Reminder: {{ event_name }}",
        "body": "{{ event_name }} is {{ start_time }}.",
        "options": {
            "action_url": "https://app.example.com/bookings/{{ ref }}",
            "data": {"booking": "{{ ref }}", "kind": "reminder"},
        },
    }
]


def in_app(external_id="u1", **extra) -> dict:
    return {"channel": "in_app", "recipient": {"external_id": external_id}, "subject": "Hi", "message": "Body", **extra}


def send(api, body, capture):
    with capture(execute=True):
        response = api.post(SEND_URL, body, format="json")
    assert response.status_code == 202, response.json()
    return response


def send_items(api, capture, count, external_id="u1") -> list[InboxItem]:
    for n in range(count):
        send(api, in_app(external_id, subject=f"Hi {n}", message=f"Body {n}"), capture)
    return list(InboxItem.objects.filter(recipient__external_id=external_id).order_by("pk"))


@pytest.fixture
def capture(django_capture_on_commit_callbacks):
    return django_capture_on_commit_callbacks


@pytest.fixture
def no_redis(monkeypatch):
    monkeypatch.setattr(inbox, "redis_client", lambda: None)


# --- Storing ------------------------------------------------------------------------------


def test_a_literal_send_stores_an_item_and_is_delivered(alice, alice_api, capture):
    # when
    response = send(alice_api, in_app(), capture)
    # then
    delivery = Delivery.objects.get()
    assert (delivery.channel, delivery.to, delivery.status, delivery.provider) == ("in_app", "u1", "delivered", "inbox")
    item = InboxItem.objects.get()
    assert response.json()["deliveries"][0]["id"] == str(item.delivery_id)
    assert (item.account, item.recipient.external_id, item.title, item.body) == (alice, "u1", "Hi", "Body")
    assert (item.action_url, item.data, item.read_at, item.archived_at) == ("", {}, None, None)
    assert delivery.provider_message_id == str(item.pk)


def test_a_template_send_stores_its_in_app_options(alice, alice_api, capture):
    make_template(alice, key="booked", contents=IN_APP_TEMPLATE, category="system")
    send(
        alice_api,
        {
            "channel": "in_app",
            "recipient": {"external_id": "u1"},
            "template": "booked",
            "context": {"event_name": "Haircut", "ref": "B-42"},
        },
        capture,
    )
    item = InboxItem.objects.get()
    assert (item.title, item.body, item.category) == ("Reminder: Haircut", "Haircut is soon.", "system")
    assert item.action_url == "https://app.example.com/bookings/B-42"
    assert item.data == {"booking": "B-42", "kind": "reminder"}
    listed = alice_api.get(INBOX_URL, {"recipient": "u1"}).json()["results"][0]
    assert listed == {
        "id": item.pk,
        "delivery_id": str(item.delivery_id),
        "category": "system",
        "title": "Reminder: Haircut",
        "body": "Haircut is soon.",
        "action_url": "https://app.example.com/bookings/B-42",
        "data": {"booking": "B-42", "kind": "reminder"},
        "created_at": listed["created_at"],
        "read_at": None,
        "archived_at": None,
        "read": False,
        "archived": False,
    }
    assert listed["created_at"]


def test_the_same_delivery_dispatched_twice_stores_one_item(alice, alice_api, capture):
    send(alice_api, in_app(), capture)
    delivery = Delivery.objects.get()
    item = InboxItem.objects.get()
    # when: the batch reaches the provider again (a redelivered task past its claim)
    again = list(InboxProvider(timeout=5).send_many([_message(delivery)]))
    # and a second dispatch of the delivery claims nothing
    assert delivery_dispatch(delivery_id=delivery.pk) == "not-claimed"
    # then
    assert InboxItem.objects.count() == 1
    assert again[0].provider_message_id == str(item.pk)


def test_items_of_a_batch_are_published_in_id_order(alice, alice_api, capture, monkeypatch):
    published = []

    class Pipe:
        def publish(self, channel, data):
            published.append((channel, json.loads(data)["id"]))

        def execute(self):
            pass

    class Client:
        def pipeline(self, transaction):
            return Pipe()

    monkeypatch.setattr(inbox, "redis_client", lambda: Client())
    with capture(execute=True):
        response = alice_api.post(
            "/api/v1/notifications/send/batch/",
            {"channel": "in_app", "message": "Hi", "recipients": [{"external_id": f"u{n}"} for n in range(5)]},
            format="json",
        )
    assert response.status_code == 202, response.json()
    items = list(InboxItem.objects.order_by("pk"))
    assert [pk for _, pk in published] == [item.pk for item in items]
    assert [channel for channel, _ in published] == [f"beacon:inbox:{alice.pk}:{item.recipient_id}" for item in items]


def test_an_action_url_too_long_fails_its_delivery_alone(alice, alice_api, capture):
    make_template(
        alice,
        key="long",
        contents=[{"channel": "in_app", "locale": "", "body": "B", "options": {"action_url": "https://x/{{ p }}"}}],
        required_placeholders=[],
    )
    with capture(execute=True):
        response = alice_api.post(
            "/api/v1/notifications/send/batch/",
            {
                "channel": "in_app",
                "template": "long",
                "recipients": [
                    {"external_id": "u1", "context": {"p": "short"}},
                    {"external_id": "u2", "context": {"p": "x" * 1200}},
                ],
            },
            format="json",
        )
    assert response.status_code == 202, response.json()
    statuses = dict(Delivery.objects.values_list("to", "status"))
    assert statuses == {"u1": "delivered", "u2": "failed"}
    assert Delivery.objects.get(to="u2").error_code == "action_url_too_long"
    assert list(InboxItem.objects.values_list("recipient__external_id", flat=True)) == ["u1"]


# --- Listing, counting, marking ---------------------------------------------------------


def test_the_list_filters_by_status_newest_first(alice, alice_api, capture):
    first, second, third, fourth = send_items(alice_api, capture, 4)
    assert alice_api.post(f"{INBOX_URL}{second.pk}/read/").status_code == 200
    assert alice_api.post(f"{INBOX_URL}{third.pk}/archive/").status_code == 200
    assert alice_api.post(f"{INBOX_URL}{fourth.pk}/read/").status_code == 200
    assert alice_api.post(f"{INBOX_URL}{fourth.pk}/archive/").status_code == 200

    def ids(status=None):
        query = {"recipient": "u1", **({"status": status} if status is not None else {})}
        response = alice_api.get(INBOX_URL, query)
        assert response.status_code == 200, response.json()
        return [item["id"] for item in response.json()["results"]]

    assert ids() == [second.pk, first.pk]
    assert ids("") == [second.pk, first.pk]
    assert ids("unread") == [first.pk]
    assert ids("read") == [second.pk]
    assert ids("archived") == [fourth.pk, third.pk]
    assert ids("all") == [fourth.pk, third.pk, second.pk, first.pk]
    refused = alice_api.get(INBOX_URL, {"recipient": "u1", "status": "deleted"})
    assert refused.status_code == 400
    assert list(refused.json()["errors"]) == ["status"]


def test_the_list_pages_by_cursor(alice, alice_api, capture):
    items = send_items(alice_api, capture, 5)
    newest_first = [item.pk for item in reversed(items)]
    seen, pages, url, query = [], 0, INBOX_URL, {"recipient": "u1", "page_size": 2}
    while url:
        response = alice_api.get(url, query)
        assert response.status_code == 200, response.json()
        body = response.json()
        assert set(body) == {"next", "previous", "results"}
        seen += [item["id"] for item in body["results"]]
        pages += 1
        url, query = body["next"], None
    assert pages == 3
    assert seen == newest_first
    # the default page size is 20, at most 100 by page_size
    assert len(alice_api.get(INBOX_URL, {"recipient": "u1"}).json()["results"]) == 5
    assert alice_api.get(INBOX_URL, {"recipient": "u1", "cursor": "garbage"}).status_code == 404


def test_the_page_size_is_20_by_default_and_at_most_100(alice, alice_api, capture):
    send_items(alice_api, capture, 1)
    item = InboxItem.objects.get()
    InboxItem.objects.bulk_create(
        [
            InboxItem(
                account=alice,
                recipient=item.recipient,
                delivery=Delivery.objects.create(
                    account=alice, notification=item.delivery.notification, channel="in_app", to="u1", body="B"
                ),
                body=f"B{n}",
                created_at=item.created_at,
            )
            for n in range(120)
        ]
    )
    assert len(alice_api.get(INBOX_URL, {"recipient": "u1"}).json()["results"]) == 20
    assert len(alice_api.get(INBOX_URL, {"recipient": "u1", "page_size": 500}).json()["results"]) == 100


def test_unread_count_read_archive_and_read_all(alice, alice_api, capture):
    first, second, third, fourth = send_items(alice_api, capture, 4)

    def unread():
        response = alice_api.get(COUNT_URL, {"recipient": "u1"})
        assert response.status_code == 200, response.json()
        assert response.json()["recipient"] == "u1"
        return response.json()["unread"]

    assert unread() == 4
    read = alice_api.post(f"{INBOX_URL}{first.pk}/read/")
    assert read.status_code == 200
    assert (read.json()["id"], read.json()["read"], read.json()["archived"]) == (first.pk, True, False)
    read_at = read.json()["read_at"]
    assert read_at
    # marking again changes nothing
    assert alice_api.post(f"{INBOX_URL}{first.pk}/read/").json()["read_at"] == read_at
    assert unread() == 3
    archived = alice_api.post(f"{INBOX_URL}{second.pk}/archive/").json()
    assert (archived["archived"], archived["read"], archived["archived_at"] is not None) == (True, False, True)
    assert unread() == 2
    # read-all marks the unread ones (the archived item is left as it is)
    response = alice_api.post(f"{READ_ALL_URL}?recipient=u1")
    assert response.status_code == 200, response.json()
    assert response.json() == {"updated": 2}
    assert unread() == 0
    assert alice_api.post(f"{READ_ALL_URL}?recipient=u1").json() == {"updated": 0}
    assert InboxItem.objects.get(pk=second.pk).read_at is None
    assert set(InboxItem.objects.filter(pk__in=[third.pk, fourth.pk]).values_list("read_at", flat=True)) != {None}


def test_missing_and_unknown_recipients_are_refused(alice, alice_api, capture):
    send_items(alice_api, capture, 1)
    for method, url in [
        ("get", INBOX_URL),
        ("get", COUNT_URL),
        ("post", READ_ALL_URL),
        ("post", TOKEN_URL),
        ("get", STREAM_URL),
    ]:
        missing = getattr(alice_api, method)(url)
        assert missing.status_code == 400, (url, missing.content)
        assert missing.json()["errors"] == {"recipient": ["This field is required."]}
        assert "recipient" in missing.json()["message"]
        unknown = getattr(alice_api, method)(f"{url}?recipient=nobody")
        assert unknown.status_code == 404, (url, unknown.content)
        assert unknown.json() == {"message": "The account has no recipient with this external id.", "errors": {}}
    assert alice_api.post(f"{INBOX_URL}999999/read/").status_code == 404
    assert alice_api.post(f"{INBOX_URL}{2**70}/archive/").status_code == 404


def test_accounts_do_not_see_each_others_inboxes(alice, bob, alice_api, bob_api, capture):
    # given: both accounts have a recipient "u1", and only alice has "a-only"
    send(alice_api, in_app("u1", subject="For alice's u1"), capture)
    send(alice_api, in_app("a-only"), capture)
    send(bob_api, in_app("u1", subject="For bob's u1"), capture)
    alice_item = InboxItem.objects.get(account=alice, recipient__external_id="u1")
    bob_item = InboxItem.objects.get(account=bob)
    # then: the same external id stays separate
    assert [i["title"] for i in bob_api.get(INBOX_URL, {"recipient": "u1"}).json()["results"]] == ["For bob's u1"]
    assert [i["title"] for i in alice_api.get(INBOX_URL, {"recipient": "u1"}).json()["results"]] == ["For alice's u1"]
    assert bob_api.get(INBOX_URL, {"recipient": "a-only"}).status_code == 404
    assert bob_api.get(COUNT_URL, {"recipient": "a-only"}).status_code == 404
    # and bob cannot mark alice's item
    for action in ("read", "archive"):
        assert bob_api.post(f"{INBOX_URL}{alice_item.pk}/{action}/").status_code == 404
    alice_item.refresh_from_db()
    assert (alice_item.read_at, alice_item.archived_at) == (None, None)
    # bob's read-all marks only his own
    assert bob_api.post(f"{READ_ALL_URL}?recipient=u1").json() == {"updated": 1}
    assert alice_api.get(COUNT_URL, {"recipient": "u1"}).json()["unread"] == 1
    bob_item.refresh_from_db()
    assert bob_item.read_at is not None


def test_the_inbox_needs_a_token(alice, anon_api):
    for url in (f"{INBOX_URL}?recipient=u1", f"{COUNT_URL}?recipient=u1", f"{STREAM_URL}?recipient=u1"):
        response = anon_api.get(url)
        assert response.status_code == 401, url
        assert response.json()["message"]
    assert anon_api.post(f"{TOKEN_URL}?recipient=u1").status_code == 401


# --- The stream token -------------------------------------------------------------------


def read_stream(response, *, chunks: int | None = None) -> str:
    """The text of a streaming answer: its first chunks, or all of it."""
    out = []
    try:
        for chunk in response.streaming_content:
            out.append(chunk.decode())
            if chunks is not None and len(out) >= chunks:
                break
    finally:
        # Closing fires request_finished, whose close_old_connections would close the test's
        # connection (it is inside the test's transaction); the test client's own guard is
        # undone by the wrapper it closes on the way, so the connection is kept here.
        with mock.patch.object(connection, "close_if_unusable_or_obsolete"):
            response.close()
    return "".join(out)


def events(text: str) -> list[dict]:
    """The stream's event blocks (those with data), as {id, event, data}."""
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "data" in fields:
            found.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return found


def test_a_stream_token_opens_the_recipients_stream(alice, alice_api, anon_api, capture, settings, no_redis):
    settings.BEACON_STREAM_MAX_SECONDS = 0.5
    items = send_items(alice_api, capture, 2)
    # when
    response = alice_api.post(f"{TOKEN_URL}?recipient=u1")
    # then
    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) == {"token", "expires_at", "url"}
    assert body["url"].startswith("/api/v1/inbox/stream/?recipient=u1&token=")
    streamed = anon_api.get(body["url"], HTTP_LAST_EVENT_ID=str(items[0].pk))
    assert streamed.status_code == 200
    assert streamed["Content-Type"] == "text/event-stream"
    assert [e["id"] for e in events(read_stream(streamed))] == [items[1].pk]


def test_forged_expired_and_foreign_stream_tokens_are_refused(alice, alice_api, anon_api, capture, monkeypatch):
    send(alice_api, in_app("u1"), capture)
    send(alice_api, in_app("u2"), capture)
    token = alice_api.post(f"{TOKEN_URL}?recipient=u1").json()["token"]
    forged = signing.dumps(
        {"a": alice.pk, "r": Recipient.objects.get(account=alice, external_id="u1").pk}, salt="not-the-salt"
    )

    def stream(external_id, token_value, **headers):
        return anon_api.get(STREAM_URL, {"recipient": external_id, "token": token_value}, **headers)

    # another recipient of the same account
    assert stream("u2", token).status_code == 403
    # forged, tampered and malformed
    for bad in (forged, token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "nonsense", ""):
        response = stream("u1", bad)
        assert response.status_code == 401, bad
        assert response.json()["message"]
        assert response["Content-Type"] == "application/json"
    # expired: read an hour and a second later
    issued = alice_api.post(f"{TOKEN_URL}?recipient=u1").json()
    later = time.time() + 3601
    monkeypatch.setattr(signing, "time", SimpleNamespace(time=lambda: later))
    expired = stream("u1", issued["token"])
    assert expired.status_code == 401
    assert "expired" in expired.json()["message"]
    monkeypatch.undo()
    # a bad Bearer header is refused even with a good token
    refused = stream("u1", token, HTTP_AUTHORIZATION="Bearer wrong")
    assert refused.status_code == 401


def test_a_token_for_one_recipient_does_not_open_another(alice, alice_api, anon_api, capture, no_redis):
    send(alice_api, in_app("u1"), capture)
    send(alice_api, in_app("u2"), capture)
    token = alice_api.post(f"{TOKEN_URL}?recipient=u1").json()["token"]
    response = anon_api.get(STREAM_URL, {"recipient": "u2", "token": token})
    assert response.status_code == 403
    assert response.json() == {"message": "This stream token is for another recipient.", "errors": {}}


def test_a_token_is_bound_to_its_account(alice, bob, alice_api, bob_api, anon_api, capture, no_redis):
    # given: bob's recipient u1 and alice's u1 are different recipients
    send(alice_api, in_app("u1"), capture)
    send(bob_api, in_app("u1", subject="Bob's"), capture)
    bob_token = bob_api.post(f"{TOKEN_URL}?recipient=u1").json()["token"]
    # when: bob's token opens the stream of "u1", with alice's Bearer header
    with_alice = alice_api.get(STREAM_URL, {"recipient": "u1", "token": bob_token, "last_event_id": 0})
    # then: each sees only the items of the account that authenticated it (each stream is
    # read before the next request, as a server runs them)
    alice_events = events(read_stream(with_alice, chunks=2))
    only_token = anon_api.get(STREAM_URL, {"recipient": "u1", "token": bob_token, "last_event_id": 0})
    bob_events = events(read_stream(only_token, chunks=2))
    assert [e["data"]["title"] for e in alice_events] == ["Hi"]
    assert [e["data"]["title"] for e in bob_events] == ["Bob's"]


# --- The stream (WSGI, the database polled) -------------------------------------------


def test_the_stream_resumes_after_last_event_id(alice, alice_api, capture, settings, no_redis):
    settings.BEACON_STREAM_MAX_SECONDS = 1
    items = send_items(alice_api, capture, 4)
    # when
    response = alice_api.get(STREAM_URL, {"recipient": "u1"}, HTTP_LAST_EVENT_ID=str(items[1].pk))
    # then
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/event-stream"
    assert (response["Cache-Control"], response["X-Accel-Buffering"]) == ("no-cache", "no")
    chunks = []
    for chunk in response.streaming_content:
        chunks.append(chunk.decode())
        if len(chunks) == 2:
            break
    response.close()
    assert chunks[0] == "retry: 3000\n\n"
    expected = "".join(
        f"id: {item.pk}\nevent: notification\ndata: {json.dumps(inbox.item_json(item), separators=(',', ':'))}\n\n"
        for item in items[2:]
    )
    assert chunks[1] == expected
    assert [(e["id"], e["event"], e["data"]["title"]) for e in events(chunks[1])] == [
        (items[2].pk, "notification", "Hi 2"),
        (items[3].pk, "notification", "Hi 3"),
    ]


def test_the_stream_takes_last_event_id_from_the_query_too(alice, alice_api, capture, settings, no_redis):
    settings.BEACON_STREAM_MAX_SECONDS = 0.3
    items = send_items(alice_api, capture, 3)
    response = alice_api.get(STREAM_URL, {"recipient": "u1", "last_event_id": items[0].pk})
    assert [e["id"] for e in events(read_stream(response))] == [items[1].pk, items[2].pk]
    refused = alice_api.get(STREAM_URL, {"recipient": "u1"}, HTTP_LAST_EVENT_ID="latest")
    assert refused.status_code == 400
    assert list(refused.json()["errors"]) == ["Last-Event-ID"]


def test_without_last_event_id_the_stream_starts_live(alice, alice_api, capture, settings, no_redis):
    # given: two items from before
    settings.BEACON_STREAM_MAX_SECONDS = 3
    settings.BEACON_STREAM_HEARTBEAT_SECONDS = 0.5
    items = send_items(alice_api, capture, 2)
    response = alice_api.get(STREAM_URL, {"recipient": "u1"})
    stream = iter(response.streaming_content)
    # then: no past items, only the id to resume from
    assert next(stream).decode() == f"retry: 3000\n\nid: {items[1].pk}\n\n"
    # when: a new item comes while the stream is open
    send(alice_api, in_app(subject="Live"), capture)
    new = InboxItem.objects.latest("pk")
    received = ""
    deadline = time.monotonic() + 2.5
    while "Live" not in received and time.monotonic() < deadline:
        received += next(stream).decode()
    rest = "".join(chunk.decode() for chunk in stream)  # until BEACON_STREAM_MAX_SECONDS
    response.close()
    # then: it is passed on (once), and pings come between
    assert [(e["id"], e["data"]["title"]) for e in events(received + rest)] == [(new.pk, "Live")]
    assert ": ping\n\n" in received + rest


def test_the_stream_dedupes_items_from_redis_and_the_backlog(alice, alice_api, capture, settings, monkeypatch):
    """With Redis, the live items come from pub/sub: one published while the backlog was
    read (so in both) is sent once, and one from before Last-Event-ID not at all."""
    settings.BEACON_STREAM_MAX_SECONDS = 1
    items = send_items(alice_api, capture, 3)
    published = [inbox.item_json(items[2]), inbox.item_json(items[0])]

    class PubSub:
        subscribed = []

        def subscribe(self, channel):
            self.subscribed.append(channel)

        def get_message(self, timeout):
            if published:
                return {"type": "message", "data": json.dumps(published.pop(0)).encode()}
            time.sleep(min(timeout, 0.1))
            return None

        def close(self):
            pass

    class Client:
        def pubsub(self, ignore_subscribe_messages):
            return PubSub()

    monkeypatch.setattr(inbox, "redis_client", lambda: Client())
    response = alice_api.get(STREAM_URL, {"recipient": "u1"}, HTTP_LAST_EVENT_ID=str(items[0].pk))
    text = read_stream(response)
    assert [e["id"] for e in events(text)] == [items[1].pk, items[2].pk]
    assert PubSub.subscribed == [f"beacon:inbox:{alice.pk}:{items[0].recipient_id}"]


def test_the_stream_under_asgi_is_an_async_generator(alice, alice_api, capture, settings, no_redis):
    """Under ASGI the same view answers an async iterator (Django would read a sync one to
    its end before sending a byte)."""
    settings.BEACON_STREAM_MAX_SECONDS = 0.5
    items = send_items(alice_api, capture, 3)
    authorization = alice_api._credentials["HTTP_AUTHORIZATION"]

    async def fetch():
        response = await AsyncClient().get(
            STREAM_URL, {"recipient": "u1"}, headers={"Authorization": authorization, "Last-Event-ID": str(items[0].pk)}
        )
        assert response.is_async
        chunks = [chunk async for chunk in response.streaming_content]
        return response, b"".join(chunks).decode()

    response, text = async_to_sync(fetch)()
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert text.startswith("retry: 3000\n\n")
    assert [e["id"] for e in events(text)] == [items[1].pk, items[2].pk]


def test_the_stream_view_refuses_other_methods(alice, alice_api):
    response = alice_api.post(f"{STREAM_URL}?recipient=u1")
    assert response.status_code == 405
    assert response.json()["message"]


def test_stream_settings_have_defaults(settings):
    for name in ("BEACON_STREAM_TOKEN_SECONDS", "BEACON_STREAM_MAX_SECONDS", "BEACON_STREAM_HEARTBEAT_SECONDS"):
        if hasattr(settings, name):
            delattr(settings, name)
    assert inbox_api.stream_token_seconds() == 3600
    assert inbox_api.stream_max_seconds() == 300
    assert inbox_api.stream_heartbeat_seconds() == 15
