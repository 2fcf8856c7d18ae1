"""The inbox stream on the real parts: an SSE client (sseclient-py over requests) on a
uvicorn process serving the ASGI app -> the send API -> PostgreSQL -> Redis -> a Celery
worker process -> the inbox provider -> Redis pub/sub -> the stream; and a reconnect with
Last-Event-ID that reads the backlog."""

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import redis
import requests
import sseclient
from django.conf import settings

from notifications.models import InboxItem
from notifications.services.inbox import stream_channel
from tests.conftest import client_for
from tests.factories import UserFactory
from tests.integration.conftest import ROOT, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SEND_URL = "/api/v1/notifications/send/"
STREAM_URL = "/api/v1/inbox/stream/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AsgiServer:
    """`uvicorn config.asgi:application` in a process of its own."""

    def __init__(self, env: dict, log_path):
        self.env, self.log_path = env, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> "AsgiServer":
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--lifespan",
                "off",
                "--timeout-graceful-shutdown",
                "2",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited ({self.process.returncode}):\n{self.log_text()[-3000:]}")
            try:
                requests.get(f"{self.url}{STREAM_URL}", timeout=2)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise TimeoutError(f"uvicorn did not answer:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def asgi_server(stack, tmp_path_factory):
    """uvicorn with the worker's environment: the test database, Redis, the test queue."""
    server = AsgiServer(stack.env, tmp_path_factory.mktemp("uvicorn") / "uvicorn.log").start()
    yield server
    server.stop()


class Listener:
    """An SSE client, read in the test's own thread (a read blocks at most the read
    timeout). It has read the stream's first bytes once built: the server sends them once
    it has subscribed, so an item sent after that reaches it."""

    def __init__(self, url: str, headers: dict):
        self.response = requests.get(
            url, headers={"Accept": "text/event-stream", **headers}, stream=True, timeout=(5, 20)
        )
        if self.response.status_code != 200:
            self.first = b""
            return
        chunks = self.response.iter_content(chunk_size=None)
        self.first = next(chunks)
        self.events = sseclient.SSEClient(itertools.chain([self.first], chunks)).events()

    def next_event(self):
        return next(self.events)

    def close(self):
        self.response.close()


def send_in_app(api, subject: str) -> str:
    response = api.post(
        SEND_URL,
        {"channel": "in_app", "recipient": {"external_id": "u1"}, "subject": subject, "message": f"{subject} body"},
        format="json",
    )
    assert response.status_code == 202, response.json()
    return response.json()["deliveries"][0]["id"]


def test_the_stream_passes_on_a_new_item_and_resumes_from_last_event_id(real_worker, asgi_server):
    # given: alice's recipient u1 exists (an earlier item), and a client follows its stream
    alice = UserFactory(username="alice")
    api = client_for(alice)
    token = api._credentials["HTTP_AUTHORIZATION"]
    first_delivery = send_in_app(api, "First")
    first = wait_for(
        lambda: InboxItem.objects.filter(delivery_id=first_delivery).first(), message="the first item stored"
    )
    listener = Listener(f"{asgi_server.url}{STREAM_URL}?recipient=u1", {"Authorization": token})
    try:
        assert listener.response.status_code == 200, listener.response.text
        assert listener.response.headers["Content-Type"].startswith("text/event-stream")
        assert listener.response.headers["Cache-Control"] == "no-cache"
        assert listener.first.startswith(b"retry: 3000\n\nid: "), listener.first
        assert subscribers(stream_channel(alice.pk, first.recipient_id)) == 1

        # when: a notification is sent through the API on the ASGI server itself
        sent = requests.post(
            f"{asgi_server.url}{SEND_URL}",
            json={
                "channel": "in_app",
                "recipient": {"external_id": "u1"},
                "subject": "Second",
                "message": "Second body",
            },
            headers={"Authorization": token},
            timeout=10,
        )
        assert sent.status_code == 202, sent.text
        delivery_id = sent.json()["deliveries"][0]["id"]

        # then: the client hears of it within a few seconds (and not of the earlier item)
        event = listener.next_event()
    finally:
        listener.close()
    second = InboxItem.objects.get(delivery_id=delivery_id)
    assert (event.event, event.id) == ("notification", str(second.pk))
    data = json.loads(event.data)
    assert (data["id"], data["delivery_id"], data["title"], data["body"]) == (
        second.pk,
        delivery_id,
        "Second",
        "Second body",
    )
    assert second.pk > first.pk

    # when: the client reconnects with the first item's id
    resumed = Listener(
        f"{asgi_server.url}{STREAM_URL}?recipient=u1", {"Authorization": token, "Last-Event-ID": str(first.pk)}
    )
    try:
        event = resumed.next_event()
        # then: the later item comes from the backlog, once
        assert (event.event, event.id, json.loads(event.data)["title"]) == ("notification", str(second.pk), "Second")
        third_delivery = send_in_app(api, "Third")
        event = resumed.next_event()
    finally:
        resumed.close()
    third = InboxItem.objects.get(delivery_id=third_delivery)
    assert (event.id, json.loads(event.data)["title"]) == (str(third.pk), "Third")
    # and a client that goes away leaves no subscription behind
    wait_for(lambda: subscribers(stream_channel(alice.pk, third.recipient_id)) == 0, timeout=10, message="unsubscribed")


def subscribers(channel: str) -> int:
    ((_, count),) = redis.Redis.from_url(settings.REDIS_URL).pubsub_numsub(channel)
    return count


def test_a_browser_style_stream_token_opens_the_stream(real_worker, asgi_server):
    # given: an EventSource has no headers: it uses the signed URL from stream-token/
    api = client_for(UserFactory(username="alice"))
    first = send_in_app(api, "Before")
    wait_for(lambda: InboxItem.objects.filter(delivery_id=first).exists(), message="the first item stored")
    url = api.post("/api/v1/inbox/stream-token/?recipient=u1").json()["url"]
    item = InboxItem.objects.get(delivery_id=first)
    listener = Listener(f"{asgi_server.url}{url}", {"Last-Event-ID": str(item.pk - 1)})
    try:
        assert listener.response.status_code == 200, listener.response.text
        event = listener.next_event()
    finally:
        listener.close()
    assert (event.id, json.loads(event.data)["title"]) == (str(item.pk), "Before")
    # and a forged token is refused with JSON, nothing streamed
    refused = requests.get(f"{asgi_server.url}{STREAM_URL}", params={"recipient": "u1", "token": "forged"}, timeout=10)
    assert refused.status_code == 401
    assert refused.headers["Content-Type"] == "application/json"
    assert refused.json()["message"] == "Invalid stream token."
