"""deliveries_dispatch over a batch: one claim, flushes handed to the provider, outcomes
written in bulk; a 429 puts the unsent rest back; a batch run twice sends nothing twice;
one message's failure stays its own; and the statements do not grow with the batch."""

import math
import uuid
from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.db import connection

from notifications import tasks
from notifications.models import Delivery, DeliveryAttempt, DeliveryEvent
from notifications.services import deliveries_dispatch, deliveries_sweep, dispatch
from providers.base import Provider, SendResult
from providers.registry import provider_for_channel, reset_providers
from tests.doubles.twilio import INVALID_NUMBER
from tests.notifications.factories import make_delivery
from tests.notifications.statements import Statements, real_parameter_limit

pytestmark = pytest.mark.django_db

UNAVAILABLE = (503, {}, {"code": 20500, "message": "down", "status": 503})
THROTTLED = (429, {"Retry-After": "30"}, {"code": 20429, "message": "slow down", "status": 429})
# A `None` in the double's script pops without answering for it: the request gets the
# double's normal answer (201, or 21211 for the invalid number).
NORMAL = None


def phone(n: int) -> str:
    return f"+1415555{n:04d}"


def queued_sms(account, phones: list[str]) -> list[Delivery]:
    """Queued SMS deliveries whose ids ascend in the order given, as they are inserted:
    the claim's UPDATE ... RETURNING hands them to the provider in that order, whether
    the database walks the table or the primary key."""
    return [
        make_delivery(account, status="queued", id=uuid.UUID(int=n + 1), to=number, max_attempts=4)
        for n, number in enumerate(phones)
    ]


def ids(deliveries) -> list[tuple[str, int]]:
    return [(str(d.pk), 0) for d in deliveries]


def events_of(delivery) -> list[tuple[str, str, str, str]]:
    return list(delivery.events.values_list("from_status", "status", "source", "detail"))


def attempts_of(delivery) -> list[tuple]:
    return list(delivery.attempts.values_list("number", "provider", "outcome", "response_code", "retry_after_seconds"))


def fresh(deliveries) -> list[Delivery]:
    by_id = Delivery.objects.in_bulk([d.pk for d in deliveries])
    return [by_id[d.pk] for d in deliveries]


# --- A batch with every kind of answer ---------------------------------------------------


def dispatch_throttled_batch(alice, twilio, settings, callbacks_fixture):
    """Ten deliveries in flushes of four: 201, 21211, 503, 201 | 201, 429 (Retry-After 30),
    then two unsent in that flush | and two in a flush never handed over."""
    settings.BEACON_DISPATCH_FLUSH_SIZE = 4
    phones = [phone(n) for n in range(10)]
    phones[1] = INVALID_NUMBER
    deliveries = queued_sms(alice, phones)
    twilio.script = [NORMAL, NORMAL, UNAVAILABLE, NORMAL, NORMAL, THROTTLED]
    with callbacks_fixture() as callbacks:
        result = deliveries_dispatch(items=ids(deliveries))
    return deliveries, result, callbacks


def test_a_batch_records_each_answer_and_a_429_puts_the_unsent_rest_back(
    alice, twilio, settings, django_capture_on_commit_callbacks
):
    # when
    deliveries, result, callbacks = dispatch_throttled_batch(
        alice, twilio, settings, django_capture_on_commit_callbacks
    )
    d = fresh(deliveries)
    # then: the provider saw the first six, in order, and nothing after the 429
    assert [r["To"] for r in twilio.requests] == [d[n].to for n in range(6)]
    assert twilio.sent_count() == 6
    assert result == {
        str(d[0].pk): "sent",
        str(d[1].pk): "failed",
        str(d[2].pk): "queued",
        str(d[3].pk): "sent",
        str(d[4].pk): "sent",
        str(d[5].pk): "queued",
        **{str(d[n].pk): "queued" for n in range(6, 10)},
    }
    assert [x.status for x in d] == ["sent", "failed", "queued", "sent", "sent", "queued"] + ["queued"] * 4
    assert [x.attempt_count for x in d] == [1] * 6 + [0] * 4
    # attempts: one per delivery that reached the provider, none for the rest
    assert [attempts_of(x) for x in d] == [
        [(1, "twilio", "success", 201, None)],
        [(1, "twilio", "permanent", 400, None)],
        [(1, "twilio", "retryable", 503, None)],
        [(1, "twilio", "success", 201, None)],
        [(1, "twilio", "success", 201, None)],
        [(1, "twilio", "retryable", 429, 30.0)],
        [],
        [],
        [],
        [],
    ]
    assert DeliveryAttempt.objects.count() == 6
    assert not DeliveryAttempt.objects.filter(outcome="pending").exists()
    # the successes
    for x in (d[0], d[3], d[4]):
        assert x.provider == "twilio"
        assert x.provider_message_id.startswith("SM")
        assert x.sent_at == x.attempts.get().finished_at
        assert (x.error_code, x.error_message, x.next_attempt_at, x.enqueued_at) == ("", "", None, None)
        assert events_of(x) == [
            ("queued", "sending", "dispatch", "attempt 1 via twilio"),
            ("sending", "sent", "dispatch", "accepted by twilio"),
        ]
    # the permanent error: failed, never retried
    assert (d[1].error_code, d[1].error_message) == ("21211", "Twilio answered HTTP 400, error 21211")
    assert d[1].failed_at == d[1].attempts.get().finished_at
    assert (d[1].next_attempt_at, d[1].enqueued_at, d[1].sent_at) == (None, None, None)
    assert events_of(d[1]) == [
        ("queued", "sending", "dispatch", "attempt 1 via twilio"),
        ("sending", "failed", "dispatch", "permanent error: Twilio answered HTTP 400, error 21211"),
    ]
    # the 503: queued again with a short backoff, riding on a task countdown
    finished = d[2].attempts.get().finished_at
    backoff = (d[2].next_attempt_at - finished).total_seconds()
    assert settings.BEACON_RETRY_BASE_SECONDS / 2 <= backoff <= settings.BEACON_RETRY_BASE_SECONDS
    assert d[2].enqueued_at == finished
    assert (d[2].error_code, d[2].error_message) == ("20500", "Twilio answered HTTP 503, error 20500")
    (_, (from_status, status, source, detail)) = events_of(d[2])
    assert (from_status, status, source) == ("sending", "queued", "dispatch")
    # the event rounds the exact delay to a tenth; the stored time, to a microsecond
    said, rest = detail.removeprefix("retry in ").split("s: ", 1)
    assert (float(said), rest) == (pytest.approx(backoff, abs=0.05 + 1e-6), "Twilio answered HTTP 503, error 20500")
    # the 429: queued again after Retry-After, a wait the sweep keeps (no task countdown)
    finished = d[5].attempts.get().finished_at
    assert d[5].next_attempt_at == finished + timedelta(seconds=30)
    assert d[5].enqueued_at is None
    assert (d[5].error_code, d[5].error_message) == ("20429", "Twilio answered HTTP 429, error 20429")
    assert events_of(d[5]) == [
        ("queued", "sending", "dispatch", "attempt 1 via twilio"),
        ("sending", "queued", "dispatch", "retry in 30.0s: Twilio answered HTTP 429, error 20429"),
    ]
    # the rest of the 429's flush: handed over (event) but not sent, and put back
    for x in (d[6], d[7]):
        assert events_of(x) == [
            ("queued", "sending", "dispatch", "attempt 1 via twilio"),
            ("sending", "queued", "dispatch", "not sent: twilio is throttling; retry in 30.0s"),
        ]
    # the flush never handed over: no trace but the wait
    assert events_of(d[8]) == events_of(d[9]) == []
    for x in d[6:]:
        assert x.next_attempt_at == x.updated_at + timedelta(seconds=30)
        assert x.enqueued_at is None
        assert (x.error_code, x.error_message, x.sent_at, x.failed_at) == ("", "", None, None)
    # one task is published after commit: the 503's retry, with its countdown
    assert len(callbacks) == 1
    with mock.patch.object(tasks.deliveries_dispatch, "apply_async") as publish:
        callbacks[0]()
    # (the stored next_attempt_at is rounded to the microsecond; the countdown is not)
    publish.assert_called_once_with(args=["sms", [[str(d[2].pk), 1]]], countdown=pytest.approx(backoff, abs=1e-6))


def test_the_throttled_deliveries_are_sent_by_the_sweep_after_retry_after(
    alice, twilio, settings, django_capture_on_commit_callbacks
):
    # given
    deliveries, _, _ = dispatch_throttled_batch(alice, twilio, settings, django_capture_on_commit_callbacks)
    throttled = fresh(deliveries[5:])
    due_at = max(x.next_attempt_at for x in throttled)
    # when: before Retry-After nothing is due; after it the sweep queues the five
    with django_capture_on_commit_callbacks(execute=True):
        early = deliveries_sweep(now=min(x.next_attempt_at for x in throttled) - timedelta(seconds=1))
    assert early == {"due": 0, "requeued": 0, "abandoned": 0}
    assert twilio.sent_count() == 6
    # (the provider's pause, shared by every worker, has ended by then too)
    with time_machine.travel(due_at + timedelta(seconds=1)), django_capture_on_commit_callbacks(execute=True):
        late = deliveries_sweep(now=due_at + timedelta(seconds=1))
    # then: each is sent once, on the attempt it was due for
    assert late == {"due": 5, "requeued": 0, "abandoned": 0}
    assert [r["To"] for r in twilio.requests[6:]] == [x.to for x in throttled]
    d = fresh(deliveries)
    assert [x.status for x in d[5:]] == ["sent"] * 5
    assert [x.attempt_count for x in d[5:]] == [2, 1, 1, 1, 1]
    assert attempts_of(d[5]) == [(1, "twilio", "retryable", 429, 30.0), (2, "twilio", "success", 201, None)]
    assert [attempts_of(x) for x in d[6:]] == [[(1, "twilio", "success", 201, None)]] * 4
    # the 503 is not the sweep's: it rides on its own task countdown
    assert (d[2].status, d[2].attempt_count) == ("queued", 1)


# --- Safe to run twice -------------------------------------------------------------------


def test_a_batch_task_run_twice_sends_once(alice, twilio):
    # given
    deliveries = queued_sms(alice, [phone(n) for n in range(3)])
    items = [[str(d.pk), 0] for d in deliveries]
    # when
    first = tasks.deliveries_dispatch.delay("sms", items).get()
    events_after_first = DeliveryEvent.objects.count()
    second = tasks.deliveries_dispatch.delay("sms", items).get()
    # then
    assert first == {str(d.pk): "sent" for d in deliveries}
    assert second == {str(d.pk): "not-claimed" for d in deliveries}
    assert twilio.sent_count() == 3
    assert [r["To"] for r in twilio.requests] == [phone(n) for n in range(3)]
    for x in fresh(deliveries):
        assert (x.status, x.attempt_count) == ("sent", 1)
        assert attempts_of(x) == [(1, "twilio", "success", 201, None)]
    assert DeliveryEvent.objects.count() == events_after_first == 6


def test_a_stale_item_is_not_claimed_while_its_batchmates_are(alice, twilio):
    # given: b's message is stale (it expects one attempt already made); c was sent
    # already; the last id is unknown
    a, b, c, d = queued_sms(alice, [phone(n) for n in range(4)])
    Delivery.objects.filter(pk=c.pk).update(status="sent")
    unknown = uuid.uuid4()
    # when
    result = deliveries_dispatch(items=[(a.pk, 0), (b.pk, 1), (c.pk, 0), (d.pk, 0), (unknown, 0)])
    # then
    assert result == {
        str(a.pk): "sent",
        str(b.pk): "not-claimed",
        str(c.pk): "not-claimed",
        str(d.pk): "sent",
        str(unknown): "not-claimed",
    }
    assert [r["To"] for r in twilio.requests] == [a.to, d.to]
    a, b, c, d = fresh([a, b, c, d])
    assert [(x.status, x.attempt_count) for x in (a, b, c, d)] == [("sent", 1), ("queued", 0), ("sent", 0), ("sent", 1)]
    assert (b.attempts.count(), b.events.count(), b.claimed_at) == (0, 0, None)
    assert (c.attempts.count(), c.events.count(), c.claimed_at) == (0, 0, None)


# --- One message's failure is its own ----------------------------------------------------


def explode_for(number):
    provider = provider_for_channel("sms")
    real_post = provider.post_request

    def post_request(params):
        if params["to"] == number:
            raise RuntimeError("adapter bug")
        return real_post(params)

    return provider, post_request


@pytest.mark.parametrize(
    ("failure", "middle", "requests"),
    [
        ("invalid number", ("failed", "21211", "Twilio answered HTTP 400, error 21211"), 3),
        ("provider unavailable", ("queued", "20500", "Twilio answered HTTP 503, error 20500"), 3),
        ("adapter exception", ("queued", "", "Unexpected error: RuntimeError"), 2),
    ],
)
def test_one_messages_failure_does_not_fail_its_batchmates(alice, twilio, monkeypatch, failure, middle, requests):
    # given
    phones = [phone(0), INVALID_NUMBER if failure == "invalid number" else phone(1), phone(2)]
    deliveries = queued_sms(alice, phones)
    if failure == "provider unavailable":
        twilio.script = [NORMAL, UNAVAILABLE]
    if failure == "adapter exception":
        provider, post_request = explode_for(phone(1))
        monkeypatch.setattr(provider, "post_request", post_request)
    # when
    result = deliveries_dispatch(items=ids(deliveries))
    # then
    first, failed, last = fresh(deliveries)
    assert result == {str(first.pk): "sent", str(failed.pk): middle[0], str(last.pk): "sent"}
    assert (failed.status, failed.error_code, failed.error_message) == middle
    assert failed.attempt_count == 1
    for x in (first, last):
        assert (x.status, x.attempt_count, x.error_code, x.error_message) == ("sent", 1, "", "")
        assert attempts_of(x) == [(1, "twilio", "success", 201, None)]
    assert twilio.sent_count() == requests
    assert [r["To"] for r in twilio.requests] == [p for p in phones if requests == 3 or p != phone(1)]


class HalfwayProvider(Provider):
    """An adapter whose own send_many breaks after the first message."""

    kind = "halfway"
    channels = ("sms",)

    def send_many(self, messages):
        self.handed = [messages[0].to]
        yield SendResult(provider_message_id="halfway-1")
        raise RuntimeError("adapter bug")


def test_a_send_many_that_breaks_strands_no_delivery(alice, monkeypatch):
    # given
    provider = HalfwayProvider(timeout=1)
    monkeypatch.setattr("providers.registry.provider_build", lambda kind, config=None: provider)
    deliveries = queued_sms(alice, [phone(n) for n in range(3)])
    # when
    result = deliveries_dispatch(items=ids(deliveries))
    # then: the first is sent; the breaking one and the one after it are retried later
    a, b, c = fresh(deliveries)
    assert provider.handed == [a.to]
    assert result == {str(a.pk): "sent", str(b.pk): "queued", str(c.pk): "queued"}
    assert (a.provider, a.provider_message_id) == ("halfway", "halfway-1")
    assert [attempts_of(x) for x in (a, b, c)] == [
        [(1, "halfway", "success", None, None)],
        [(1, "halfway", "retryable", None, None)],
        [(1, "halfway", "retryable", None, None)],
    ]
    assert (b.error_message, c.error_message) == (
        "Unexpected error: RuntimeError",
        "halfway returned no result for this message.",
    )
    assert not Delivery.objects.filter(status="sending").exists()


# --- Statements --------------------------------------------------------------------------

# What dispatch runs, not counting the SAVEPOINT / RELEASE pair of each atomic block:
#   the claim: one UPDATE ... RETURNING, in its own transaction, and one SELECT of the
#   suppressions among the claimed addresses (a STOP or bounce since they were accepted);
#   then one transaction per flush that records the flush before (UPDATE the deliveries
#   still sending), hands this one off, writes the attempts of both (one INSERT ... ON
#   CONFLICT: the outcomes of the last, the pending attempts of this one) and the events
#   of both (one COPY / INSERT); and a last one that records the last flush.
# On PostgreSQL the UPDATE is one UPDATE ... FROM (VALUES ...) RETURNING; on SQLite it is
# a SELECT of the rows and a bulk_update, two statements.
CLAIM_AND_LAST_RECORD = 4
PER_FLUSH = {"postgresql": 3, "sqlite": 4}


def expected_statements(flushes: int) -> tuple[int, int]:
    """(statements, savepoint statements): transactions are the claim, one per flush and
    the last record."""
    return CLAIM_AND_LAST_RECORD + flushes * PER_FLUSH[connection.vendor], 2 * (1 + flushes + 1)


@pytest.fixture
def console_sms(settings):
    settings.BEACON_SMS_PROVIDER = "console"
    reset_providers()
    with real_parameter_limit():
        yield
    reset_providers()


def measure_dispatch(account, n: int) -> tuple[int, int]:
    """(statements, savepoint statements) to dispatch n queued deliveries, all sent."""
    deliveries = [make_delivery(account, status="queued", to=phone(i), max_attempts=4) for i in range(n)]
    with Statements() as statements:
        result = deliveries_dispatch(items=ids(deliveries))
    assert result == {str(d.pk): "sent" for d in deliveries}
    assert Delivery.objects.filter(pk__in=[d.pk for d in deliveries], status="sent").count() == n
    assert DeliveryAttempt.objects.filter(delivery__in=deliveries, outcome="success").count() == n
    return len(statements.executed), len(statements.savepoints)


def test_dispatching_10_or_100_in_one_flush_runs_the_same_statements(alice, console_sms, settings):
    settings.BEACON_DISPATCH_FLUSH_SIZE = 100
    ten = measure_dispatch(alice, 10)
    hundred = measure_dispatch(alice, 100)
    assert ten == hundred == expected_statements(flushes=1)
    assert ten == {"postgresql": (7, 6), "sqlite": (8, 6)}[connection.vendor]


@pytest.mark.parametrize(("n", "flush"), [(1, 10), (10, 3), (100, 7), (100, 10), (100, 100)])
def test_statements_are_the_claim_plus_a_constant_per_flush(alice, console_sms, settings, n, flush):
    settings.BEACON_DISPATCH_FLUSH_SIZE = flush
    assert measure_dispatch(alice, n) == expected_statements(flushes=math.ceil(n / flush))


def test_a_hundred_in_flushes_of_ten_with_django_assert_num_queries(
    alice, console_sms, settings, django_assert_num_queries
):
    settings.BEACON_DISPATCH_FLUSH_SIZE = 10
    deliveries = [make_delivery(alice, status="queued", to=phone(i), max_attempts=4) for i in range(100)]
    # 4 + 10 flushes x 3 (PostgreSQL) or x 4 (SQLite), and 2 x 12 savepoint statements
    expected = {"postgresql": 34 + 24, "sqlite": 44 + 24}[connection.vendor]
    with django_assert_num_queries(expected):
        deliveries_dispatch(items=ids(deliveries))


# --- The claim's lease -------------------------------------------------------------------


def test_a_long_batch_renews_the_claim_of_what_it_has_not_sent_yet(alice, console_sms, settings, monkeypatch):
    # given: a lease of 4 s and a batch whose flushes each take 2 s of the worker's clock
    settings.BEACON_SENDING_LEASE_SECONDS = 4
    settings.BEACON_DISPATCH_FLUSH_SIZE = 1
    clock = iter(range(0, 1000, 2))
    monkeypatch.setattr(dispatch.time, "monotonic", lambda: next(clock))
    deliveries = [make_delivery(alice, status="queued", to=phone(i), max_attempts=4) for i in range(3)]
    # when
    assert set(deliveries_dispatch(items=ids(deliveries)).values()) == {"sent"}
    # then: the claim of the deliveries still waiting was renewed as the batch went on
    first, second, third = (d.claimed_at for d in fresh(deliveries))
    assert first < second < third


def test_a_short_batch_keeps_its_claim_time(alice, console_sms, settings):
    settings.BEACON_DISPATCH_FLUSH_SIZE = 1
    deliveries = [make_delivery(alice, status="queued", to=phone(i), max_attempts=4) for i in range(3)]
    deliveries_dispatch(items=ids(deliveries))
    assert len({d.claimed_at for d in fresh(deliveries)}) == 1
