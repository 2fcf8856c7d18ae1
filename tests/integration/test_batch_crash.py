"""A worker killed in the middle of a batch, on the real parts: send/batch/ -> PostgreSQL ->
Redis -> a Celery worker process -> the real twilio client -> the Twilio double. The sweep
settles what the dead worker held: at most one flush is held as worker_lost, the rest is
sent again by the sweep's tasks, and no number is ever sent to twice."""

import os
import signal
from collections import Counter

import pytest

from notifications.models import Delivery
from notifications.services import deliveries_sweep
from notifications.services.sweep import WORKER_LOST_MESSAGE
from tests.conftest import client_for
from tests.factories import UserFactory
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BATCH_URL = "/api/v1/notifications/send/batch/"
RECIPIENTS = 60
FLUSH_SIZE = 20  # BEACON_DISPATCH_FLUSH_SIZE: the worker runs with the default
KILL_AFTER_REQUESTS = 30  # in the middle of the second flush


def phone(n: int) -> str:
    return f"+1415555{n:04d}"


def test_a_worker_killed_mid_batch_sends_no_number_twice(real_worker, twilio_server, settings):
    # given: one batch of 60 SMS (one dispatch task), the provider answering slowly
    assert settings.BEACON_DISPATCH_FLUSH_SIZE == FLUSH_SIZE
    assert "BEACON_DISPATCH_FLUSH_SIZE" not in real_worker.env
    api = client_for(UserFactory(username="alice"))
    twilio_server.delay = 0.3
    response = api.post(
        BATCH_URL,
        {"channel": "sms", "message": "Once", "recipients": [{"phone": phone(n)} for n in range(RECIPIENTS)]},
        format="json",
    )
    assert response.status_code == 202, response.json()
    ids = [n["deliveries"][0]["id"] for n in response.json()["notifications"]]
    wait_for(
        lambda: twilio_server.sent_count() >= KILL_AFTER_REQUESTS,
        timeout=60,
        interval=0.01,
        message=f"{KILL_AFTER_REQUESTS} requests at the double",
    )
    not_claimed_before = real_worker.log_text().count("'not-claimed'")

    # when: the pool process is killed while the double stalls on a request of the second flush
    for pid in real_worker.pool_pids():
        os.kill(pid, signal.SIGKILL)
    # then: the task is redelivered (acks_late + reject_on_worker_lost) and claims nothing
    real_worker.wait_for_log("'not-claimed'", timeout=30, count=not_claimed_before + 1)
    twilio_server.delay = 0.0
    requested_before_kill = [r["To"] for r in twilio_server.requests]
    assert len(requested_before_kill) == KILL_AFTER_REQUESTS
    assert Delivery.objects.filter(pk__in=ids, status="sent").count() == FLUSH_SIZE
    assert Delivery.objects.filter(pk__in=ids, status="sending").count() == RECIPIENTS - FLUSH_SIZE

    # when: the sweep runs once the claims' lease is over
    settings.BEACON_SENDING_LEASE_SECONDS = 1
    swept = Counter()

    def sweep_settles_something():
        swept.update(deliveries_sweep())
        return swept["abandoned"] or swept["requeued"]

    wait_for(sweep_settles_something, timeout=15, interval=0.2, message="the sweep to settle the dead worker's batch")
    # then: the flush at the provider is held, the rest, never handed over, is queued again
    assert dict(swept) == {"due": 0, "requeued": RECIPIENTS - 2 * FLUSH_SIZE, "abandoned": FLUSH_SIZE}
    wait_for(
        lambda: Delivery.objects.filter(pk__in=ids, status__in=["sent", "failed"]).count() == RECIPIENTS,
        timeout=60,
        message="every delivery settled",
    )

    # no number was requested twice
    requested = [r["To"] for r in twilio_server.requests]
    assert Counter(requested).most_common(1)[0][1] == 1
    assert len(requested) == KILL_AFTER_REQUESTS + RECIPIENTS - 2 * FLUSH_SIZE
    # every delivery is sent, or failed as worker_lost: at most one flush of them
    deliveries = {d.to: d for d in Delivery.objects.filter(pk__in=ids)}
    sent = {to for to, d in deliveries.items() if d.status == "sent"}
    lost = {to for to, d in deliveries.items() if d.status == "failed"}
    assert len(sent) + len(lost) == RECIPIENTS
    assert {deliveries[to].error_code for to in lost} == {"worker_lost"}
    assert len(lost) == FLUSH_SIZE <= settings.BEACON_DISPATCH_FLUSH_SIZE
    # the lost flush holds the requests in flight at the kill and the rest of that flush;
    # the first flush was sent before it, and everything after went out once, after the sweep
    assert set(requested_before_kill[FLUSH_SIZE:]) <= lost
    assert set(requested_before_kill[:FLUSH_SIZE]) <= sent
    assert set(requested[KILL_AFTER_REQUESTS:]) == sent - set(requested_before_kill[:FLUSH_SIZE])
    assert not set(requested[KILL_AFTER_REQUESTS:]) & lost
    for to in lost:
        delivery = deliveries[to]
        assert (delivery.attempt_count, delivery.error_message) == (1, WORKER_LOST_MESSAGE)
        assert list(delivery.attempts.values_list("number", "outcome", "error")) == [
            (1, "permanent", "worker lost; outcome unknown")
        ]
    for to in sent:
        delivery = deliveries[to]
        assert delivery.attempt_count == 1
        assert list(delivery.attempts.values_list("number", "outcome", "response_code")) == [(1, "success", 201)]
    # and a later sweep finds nothing more to do
    assert deliveries_sweep() == {"due": 0, "requeued": 0, "abandoned": 0}
    assert twilio_server.sent_count() == len(requested)
    assert real_worker.exited() is None
