"""The sweep after a crash mid-batch: claimed deliveries never handed to the provider are
queued again and sent once; those that may have reached it are held as worker_lost; long
retry waits fall due; and everything the sweep queues goes out in dispatch batches."""

import uuid
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from notifications import tasks
from notifications.models import Delivery, DeliveryAttempt, DeliveryEvent, Notification
from notifications.services import deliveries_dispatch, deliveries_sweep
from notifications.services.sweep import WORKER_LOST_MESSAGE
from tests.notifications.factories import make_recipient

pytestmark = pytest.mark.django_db

QUIET = {"due": 0, "requeued": 0, "abandoned": 0}


def phone(n: int) -> str:
    return f"+1415555{n:04d}"


def deliveries(account, n: int, *, channel: str = "sms", start: int = 0, **fields) -> list[Delivery]:
    """n deliveries of one notification, written in one statement; ids ascend in order."""
    recipient = make_recipient(account)
    notification = Notification.objects.create(account=account, recipient=recipient, channels=[channel])
    fields.setdefault("max_attempts", 4)
    rows = [
        Delivery(
            id=uuid.UUID(int=(1 if channel == "sms" else 2) << 64 | (start + i)),
            account=account,
            notification=notification,
            channel=channel,
            to=phone(start + i) if channel == "sms" else f"r{start + i}@example.com",
            subject="Hello" if channel == "email" else "",
            body="Hello there",
            **fields,
        )
        for i in range(n)
    ]
    return Delivery.objects.bulk_create(rows)


def claimed(account, n: int, *, ago: timedelta, attempt_count: int = 1, **fields) -> list[Delivery]:
    """Deliveries a worker claimed `ago` and then died holding."""
    now = timezone.now()
    return deliveries(
        account,
        n,
        status="sending",
        attempt_count=attempt_count,
        claimed_at=now - ago,
        next_attempt_at=now - ago,
        **fields,
    )


def pending_attempt(delivery, number: int, *, started_at) -> DeliveryAttempt:
    return DeliveryAttempt.objects.create(delivery=delivery, number=number, provider="twilio", started_at=started_at)


def publications():
    """Patch the batch task's apply_async, still publishing (eager in unit tests)."""
    return mock.patch.object(tasks.deliveries_dispatch, "apply_async", wraps=tasks.deliveries_dispatch.apply_async)


def published(publish) -> list[tuple[str, list]]:
    return [tuple(call.kwargs["args"]) for call in publish.call_args_list]


def attempts_of(delivery) -> list[tuple]:
    return list(delivery.attempts.values_list("number", "outcome", "response_code", "error"))


@pytest.fixture
def past_lease(settings):
    return timedelta(seconds=settings.BEACON_SENDING_LEASE_SECONDS + 1)


# --- Crash recovery ----------------------------------------------------------------------


def test_a_claimed_delivery_never_handed_over_is_requeued_and_sent_once(
    alice, twilio, past_lease, django_capture_on_commit_callbacks
):
    # given: claimed (attempt 1) by a worker that died before handing it to the provider
    (delivery,) = claimed(alice, 1, ago=past_lease)
    # when
    with publications() as publish, django_capture_on_commit_callbacks(execute=True) as callbacks:
        counts = deliveries_sweep()
    # then: queued again at its attempt count before the claim, and sent once
    assert counts == {"due": 0, "requeued": 1, "abandoned": 0}
    assert len(callbacks) == 1
    assert published(publish) == [("sms", [[str(delivery.pk), 0]])]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count, delivery.error_code) == ("sent", 1, "")
    assert attempts_of(delivery) == [(1, "success", 201, "")]
    assert list(delivery.events.values_list("from_status", "status", "source")) == [
        ("queued", "sending", "dispatch"),
        ("sending", "sent", "dispatch"),
    ]
    assert [r["To"] for r in twilio.requests] == [delivery.to]
    # and the dead worker's own message, redelivered, claims nothing
    assert deliveries_dispatch(items=[(delivery.pk, 0)]) == {str(delivery.pk): "not-claimed"}
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep() == QUIET
    assert twilio.sent_count() == 1


def test_the_dead_workers_message_and_the_sweeps_both_arriving_send_once(
    alice, twilio, past_lease, django_capture_on_commit_callbacks
):
    # given: the sweep has queued it again, and its task is not published yet
    (delivery,) = claimed(alice, 1, ago=past_lease)
    with django_capture_on_commit_callbacks() as callbacks:
        assert deliveries_sweep()["requeued"] == 1
    # when: the dead worker's message is redelivered first, then the sweep's is published
    first = deliveries_dispatch(items=[(delivery.pk, 0)])
    results = []
    publish = tasks.deliveries_dispatch.apply_async

    def publish_and_keep_result(*args, **kwargs):
        result = publish(*args, **kwargs)
        results.append(result.get())
        return result

    with mock.patch.object(tasks.deliveries_dispatch, "apply_async", side_effect=publish_and_keep_result):
        callbacks[0]()
    # then
    assert first == {str(delivery.pk): "sent"}
    assert results == [{str(delivery.pk): "not-claimed"}]
    assert twilio.sent_count() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count) == ("sent", 1)


def test_a_claimed_delivery_with_a_pending_attempt_is_held_as_worker_lost(
    alice, twilio, past_lease, django_capture_on_commit_callbacks
):
    # given: the flush that was at the provider (attempts pending), and the rest of the
    # batch, claimed but never handed over
    batch = claimed(alice, 5, ago=past_lease)
    started = batch[0].claimed_at
    for delivery in batch[:2]:
        pending_attempt(delivery, 1, started_at=started)
    # when
    before = timezone.now()
    with publications() as publish, django_capture_on_commit_callbacks(execute=True):
        counts = deliveries_sweep()
    # then
    assert counts == {"due": 0, "requeued": 3, "abandoned": 2}
    ((channel, items),) = published(publish)
    assert (channel, sorted(items)) == ("sms", [[str(d.pk), 0] for d in batch[2:]])
    lost = Delivery.objects.filter(pk__in=[d.pk for d in batch[:2]])
    for delivery in lost:
        assert (delivery.status, delivery.error_code, delivery.error_message) == (
            "failed",
            "worker_lost",
            WORKER_LOST_MESSAGE,
        )
        assert delivery.failed_at >= before
        assert (delivery.attempt_count, delivery.next_attempt_at, delivery.enqueued_at) == (1, None, None)
        attempt = delivery.attempts.get()
        assert (attempt.outcome, attempt.error, attempt.finished_at) == (
            "permanent",
            "worker lost; outcome unknown",
            delivery.failed_at,
        )
        assert list(delivery.events.values_list("from_status", "status", "source", "detail")) == [
            ("sending", "failed", "sweep", WORKER_LOST_MESSAGE)
        ]
    # the never-handed ones were sent, once each; the lost ones were not sent again
    assert sorted(r["To"] for r in twilio.requests) == [d.to for d in batch[2:]]
    assert Delivery.objects.filter(pk__in=[d.pk for d in batch[2:]], status="sent", attempt_count=1).count() == 3
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_sweep() == QUIET
    assert twilio.sent_count() == 3


def test_only_a_pending_attempt_at_the_current_count_means_handed_over(
    alice, twilio, past_lease, django_capture_on_commit_callbacks
):
    # given: two deliveries on their second attempt, the first attempt a finished 503;
    # one died before handing the second attempt over, the other during it
    earlier = timezone.now() - past_lease - timedelta(minutes=5)
    unsent, lost = claimed(alice, 2, ago=past_lease, attempt_count=2)
    for delivery in (unsent, lost):
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=1,
            provider="twilio",
            outcome="retryable",
            response_code=503,
            started_at=earlier,
            finished_at=earlier,
        )
    pending_attempt(lost, 2, started_at=lost.claimed_at)
    # when
    with django_capture_on_commit_callbacks(execute=True):
        counts = deliveries_sweep()
    # then
    assert counts == {"due": 0, "requeued": 1, "abandoned": 1}
    unsent.refresh_from_db()
    lost.refresh_from_db()
    assert (unsent.status, unsent.attempt_count) == ("sent", 2)
    assert attempts_of(unsent) == [(1, "retryable", 503, ""), (2, "success", 201, "")]
    assert (lost.status, lost.error_code, lost.attempt_count) == ("failed", "worker_lost", 2)
    assert attempts_of(lost) == [(1, "retryable", 503, ""), (2, "permanent", None, "worker lost; outcome unknown")]
    assert [r["To"] for r in twilio.requests] == [unsent.to]


def test_deliveries_still_within_their_lease_are_left_alone(
    alice, twilio, settings, django_capture_on_commit_callbacks
):
    within = timedelta(seconds=settings.BEACON_SENDING_LEASE_SECONDS - 5)
    handed, waiting = claimed(alice, 2, ago=within)
    pending_attempt(handed, 1, started_at=handed.claimed_at)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert deliveries_sweep() == QUIET
    assert callbacks == []
    assert set(Delivery.objects.values_list("status", "attempt_count")) == {("sending", 1)}
    assert DeliveryAttempt.objects.get().outcome == "pending"
    assert twilio.sent_count() == 0


# --- Long retry waits --------------------------------------------------------------------


def test_a_long_retry_wait_is_kept_in_the_database_and_sent_when_due(alice, twilio, django_capture_on_commit_callbacks):
    # given: a 503 asking for a minute, longer than a sweep interval
    (delivery,) = deliveries(alice, 1, status="queued", enqueued_at=timezone.now(), next_attempt_at=timezone.now())
    twilio.script = [(503, {"Retry-After": "60"}, {"code": 20500, "message": "down", "status": 503})]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert deliveries_dispatch(items=[(delivery.pk, 0)]) == {str(delivery.pk): "queued"}
    # then: no task countdown; it waits in the database
    assert callbacks == []
    delivery.refresh_from_db()
    finished = delivery.attempts.get().finished_at
    assert (delivery.status, delivery.attempt_count, delivery.enqueued_at) == ("queued", 1, None)
    assert delivery.next_attempt_at == finished + timedelta(seconds=60)
    # when: the sweep runs before the wait is over, and after it
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert deliveries_sweep(now=delivery.next_attempt_at - timedelta(seconds=1)) == QUIET
    assert callbacks == []
    with publications() as publish, django_capture_on_commit_callbacks(execute=True):
        counts = deliveries_sweep(now=delivery.next_attempt_at + timedelta(seconds=1))
    # then: it is due (not "requeued": its task was never lost) and sent on attempt 2
    assert counts == {"due": 1, "requeued": 0, "abandoned": 0}
    assert published(publish) == [("sms", [[str(delivery.pk), 1]])]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count) == ("sent", 2)
    assert attempts_of(delivery) == [
        (1, "retryable", 503, "Twilio answered HTTP 503, error 20500"),
        (2, "success", 201, ""),
    ]
    assert list(delivery.events.values_list("from_status", "status", "source")) == [
        ("queued", "sending", "dispatch"),
        ("sending", "queued", "dispatch"),
        ("queued", "sending", "dispatch"),
        ("sending", "sent", "dispatch"),
    ]
    assert twilio.sent_count() == 2


def test_a_queued_delivery_with_a_task_is_not_due_twice(alice, twilio, django_capture_on_commit_callbacks):
    # a short retry rides on a task countdown (enqueued_at set): the due pass leaves it
    now = timezone.now()
    deliveries(alice, 1, status="queued", attempt_count=1, enqueued_at=now, next_attempt_at=now - timedelta(seconds=5))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert deliveries_sweep() == QUIET
    assert callbacks == []
    assert twilio.sent_count() == 0


# --- Batches -----------------------------------------------------------------------------


@pytest.fixture
def console(settings):
    settings.BEACON_SMS_PROVIDER = "console"
    settings.BEACON_EMAIL_PROVIDER = "console"
    settings.BEACON_DISPATCH_BATCH_SIZE = 100


def test_the_sweep_enqueues_in_batches_of_one_channel(alice, console, past_lease, django_capture_on_commit_callbacks):
    # given: due scheduled sends on two channels, and a dead worker's claimed batch
    due_at = timezone.now() - timedelta(seconds=1)
    scheduled_sms = deliveries(alice, 120, status="scheduled", next_attempt_at=due_at)
    scheduled_email = deliveries(alice, 30, channel="email", status="scheduled", next_attempt_at=due_at)
    unsent = claimed(alice, 130, ago=past_lease, start=500)
    # when
    with publications() as publish, django_capture_on_commit_callbacks(execute=True) as callbacks:
        counts = deliveries_sweep()
    # then: one publication after each pass's commit, in tasks of at most 100 of one channel
    assert counts == {"due": 150, "requeued": 130, "abandoned": 0}
    assert len(callbacks) == 2
    assert [(channel, len(items)) for channel, items in published(publish)] == [
        ("email", 30),
        ("sms", 100),
        ("sms", 20),
        ("sms", 100),
        ("sms", 30),
    ]
    due_ids = sorted(str(d.pk) for d in scheduled_sms + scheduled_email)
    requeued_ids = sorted(str(d.pk) for d in unsent)
    assert sorted(pk for _, items in published(publish)[:3] for pk, _ in items) == due_ids
    assert sorted(pk for _, items in published(publish)[3:] for pk, _ in items) == requeued_ids
    assert {attempts for _, items in published(publish) for _, attempts in items} == {0}
    assert Delivery.objects.filter(status="sent", attempt_count=1).count() == 280
    assert DeliveryEvent.objects.filter(from_status="scheduled", status="queued", source="schedule").count() == 150


def test_each_pass_takes_at_most_a_sweep_batch(alice, console, settings, django_capture_on_commit_callbacks):
    settings.BEACON_SWEEP_BATCH_SIZE = 150
    deliveries(alice, 250, status="scheduled", next_attempt_at=timezone.now() - timedelta(seconds=1))
    with publications() as publish, django_capture_on_commit_callbacks(execute=True):
        first = deliveries_sweep()
    assert first == {"due": 150, "requeued": 0, "abandoned": 0}
    assert [len(items) for _, items in published(publish)] == [100, 50]
    with publications() as publish, django_capture_on_commit_callbacks(execute=True):
        second = deliveries_sweep()
    assert second == {"due": 100, "requeued": 0, "abandoned": 0}
    assert [len(items) for _, items in published(publish)] == [100]
    assert Delivery.objects.filter(status="sent").count() == 250


def test_lost_task_messages_are_requeued_in_batches(alice, console, settings, django_capture_on_commit_callbacks):
    # given: queued long ago, their task messages lost (a broker outage)
    long_ago = timezone.now() - timedelta(seconds=settings.BEACON_REQUEUE_GRACE_SECONDS + 1)
    lost = deliveries(alice, 201, status="queued", enqueued_at=long_ago, next_attempt_at=long_ago)
    # when
    with publications() as publish, django_capture_on_commit_callbacks(execute=True):
        counts = deliveries_sweep()
    # then
    assert counts == {"due": 0, "requeued": 201, "abandoned": 0}
    assert [(channel, len(items)) for channel, items in published(publish)] == [("sms", 100), ("sms", 100), ("sms", 1)]
    assert sorted(pk for _, items in published(publish) for pk, _ in items) == sorted(str(d.pk) for d in lost)
    assert Delivery.objects.filter(status="sent", attempt_count=1).count() == 201
