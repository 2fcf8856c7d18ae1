"""The sweep: the periodic pass that drives every wait from the database.

It queues what has fallen due (scheduled sends, retries waiting out a long backoff),
re-enqueues queued deliveries whose task message was lost, and settles deliveries whose
worker died: those it had not handed to the provider are sent again, those it may have
handed are held as `worker_lost`. Rows are taken with SELECT ... FOR UPDATE SKIP LOCKED,
so two sweepers never take the same one; every pass is a few statements per batch.

A fallback channel's standby delivery is never taken: it has no task message on purpose,
and waits for notifications.services.fallback to release it (a worker_lost failure here
is one of the things that does).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from ..models import Delivery, DeliveryAttempt, DeliveryStatus, Heartbeat, NotificationSchedule, ScheduleStatus
from ..queue import Dispatch, enqueue_dispatch
from .events import StatusChange, events_record
from .fallback import fallbacks_settle

SWEEP_HEARTBEAT = "sweep"
WORKER_LOST_MESSAGE = "The worker stopped during the provider call; the outcome is unknown and it was not retried."


def deliveries_sweep(*, now: datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    counts = {"due": _queue_due(now), "requeued": _requeue_lost(now), "abandoned": 0}
    requeued, abandoned = _settle_abandoned(now)
    counts["requeued"] += requeued
    counts["abandoned"] = abandoned
    Heartbeat.objects.update_or_create(name=SWEEP_HEARTBEAT, defaults={"at": timezone.now()})
    return counts


def _take(queryset, now: datetime) -> list[tuple]:
    return list(
        queryset.select_for_update(skip_locked=True)
        .order_by("next_attempt_at")
        .values_list("pk", "channel", "attempt_count", "status")[: settings.BEACON_SWEEP_BATCH_SIZE]
    )


def _queue_due(now: datetime) -> int:
    """Scheduled sends and long retry waits whose time has come."""
    with transaction.atomic():
        due = _take(
            Delivery.objects.filter(
                Q(status=DeliveryStatus.SCHEDULED) | Q(status=DeliveryStatus.QUEUED, enqueued_at__isnull=True),
                next_attempt_at__lte=now,
            ),
            now,
        )
        if not due:
            return 0
        Delivery.objects.filter(pk__in=[pk for pk, *_ in due]).update(
            status=DeliveryStatus.QUEUED, next_attempt_at=now, enqueued_at=now, updated_at=now
        )
        went = [pk for pk, _, _, status in due if status == DeliveryStatus.SCHEDULED]
        events_record(
            [
                StatusChange(pk, DeliveryStatus.SCHEDULED, DeliveryStatus.QUEUED, "schedule", now, detail="due")
                for pk in went
            ]
        )
        if went:
            # A scheduled send's row in the schedule list goes with its delivery.
            NotificationSchedule.objects.filter(delivery_id__in=went, status=ScheduleStatus.SCHEDULED).update(
                status=ScheduleStatus.SENT, processed_at=now, updated_at=now
            )
        enqueue_dispatch([Dispatch(pk, channel, attempts) for pk, channel, attempts, _ in due])
    return len(due)


def _requeue_lost(now: datetime) -> int:
    """Queued deliveries whose task message never reached a worker (a broker outage)."""
    grace = now - timedelta(seconds=settings.BEACON_REQUEUE_GRACE_SECONDS)
    with transaction.atomic():
        stuck = _take(
            Delivery.objects.filter(status=DeliveryStatus.QUEUED, enqueued_at__lte=grace, next_attempt_at__lte=grace),
            now,
        )
        if not stuck:
            return 0
        Delivery.objects.filter(pk__in=[pk for pk, *_ in stuck]).update(
            next_attempt_at=now, enqueued_at=now, updated_at=now
        )
        enqueue_dispatch([Dispatch(pk, channel, attempts) for pk, channel, attempts, _ in stuck])
    return len(stuck)


def _settle_abandoned(now: datetime) -> tuple[int, int]:
    """Deliveries left in "sending" past their lease. One with an attempt still pending was
    handed to the provider and may have gone out: it fails as worker_lost and is not
    retried. One without was claimed but never handed over: it is queued again."""
    lease = now - timedelta(seconds=settings.BEACON_SENDING_LEASE_SECONDS)
    handed = DeliveryAttempt.objects.filter(
        delivery=OuterRef("pk"), number=OuterRef("attempt_count"), outcome=DeliveryAttempt.Outcome.PENDING
    )
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status=DeliveryStatus.SENDING, claimed_at__lte=lease)
            .order_by("claimed_at")
            .annotate(handed=Exists(handed))
            .values_list("pk", "channel", "attempt_count", "handed", "notification_id", "fallback_rank")[
                : settings.BEACON_SWEEP_BATCH_SIZE
            ]
        )
        lost = [pk for pk, _, _, was_handed, _, _ in rows if was_handed]
        unsent = [(pk, channel, attempts) for pk, channel, attempts, was_handed, _, _ in rows if not was_handed]
        if lost:
            Delivery.objects.filter(pk__in=lost).update(
                status=DeliveryStatus.FAILED,
                failed_at=now,
                next_attempt_at=None,
                enqueued_at=None,
                error_code="worker_lost",
                error_message=WORKER_LOST_MESSAGE,
                updated_at=now,
            )
            DeliveryAttempt.objects.filter(delivery_id__in=lost, outcome=DeliveryAttempt.Outcome.PENDING).update(
                outcome=DeliveryAttempt.Outcome.PERMANENT, finished_at=now, error="worker lost; outcome unknown"
            )
            events_record(
                [
                    StatusChange(pk, DeliveryStatus.SENDING, DeliveryStatus.FAILED, "sweep", now, WORKER_LOST_MESSAGE)
                    for pk in lost
                ]
            )
            # The outcome is unknown on this channel; a fallback notification tries its next one.
            fallbacks_settle(
                [
                    Delivery(
                        pk=pk,
                        notification_id=notification_id,
                        channel=channel,
                        fallback_rank=rank,
                        status=DeliveryStatus.FAILED,
                        error_message=WORKER_LOST_MESSAGE,
                    )
                    for pk, channel, _, was_handed, notification_id, rank in rows
                    if was_handed and rank is not None
                ]
            )
        if unsent:
            Delivery.objects.filter(pk__in=[pk for pk, _, _ in unsent]).update(
                status=DeliveryStatus.QUEUED,
                attempt_count=F("attempt_count") - 1,
                next_attempt_at=now,
                enqueued_at=now,
                updated_at=now,
            )
            enqueue_dispatch([Dispatch(pk, channel, attempts - 1) for pk, channel, attempts in unsent])
    return len(unsent), len(lost)
