"""Upkeep: the periodic housekeeping that keeps the tables small and the operator told.

- `notifications_cleanup`: logs older than BEACON_LOG_RETENTION_DAYS go: notifications
  whose deliveries are all done (with those deliveries, their attempts and events and the
  idempotency keys that answered them), finished schedules and booking events; daily
  reminder counts go after a few days. Recipients stay (their preferences and consent
  outlive their logs). Deleted in batches of BEACON_CLEANUP_BATCH_SIZE ids per DELETE.
- `failure_rates_watch`: each account's channel whose deliveries failed at or above
  BEACON_FAILURE_RATE_THRESHOLD over the last BEACON_FAILURE_WATCH_MINUTES (with at least
  BEACON_FAILURE_WATCH_MIN_VOLUME finished) is logged as a warning and kept as a
  FailureAlert, which /health/ shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from preferences.models import DailyCount

from ..models import (
    BookingEvent,
    Delivery,
    DeliveryAttempt,
    DeliveryEvent,
    DeliveryStatus,
    FailureAlert,
    Heartbeat,
    IdempotencyKey,
    Notification,
    NotificationSchedule,
    ScheduleStatus,
)

logger = logging.getLogger("beacon.upkeep")

# A notification with a delivery in one of these is still on its way: never deleted (a
# standby delivery waits for the channels before it).
IN_FLIGHT_STATUSES = (
    DeliveryStatus.STANDBY,
    DeliveryStatus.PAUSED,
    DeliveryStatus.SCHEDULED,
    DeliveryStatus.QUEUED,
    DeliveryStatus.SENDING,
)
FINISHED_SCHEDULE_STATUSES = (
    ScheduleStatus.SENT,
    ScheduleStatus.FAILED,
    ScheduleStatus.SKIPPED,
    ScheduleStatus.CANCELLED,
)
# The daily cap reads counts from the day before the earliest send on; a few days is ample.
DAILY_COUNT_KEEP_DAYS = 3
# What each kind of row is called in the counts, by the model label Django's delete() gives.
CLEANUP_KINDS = {
    "notifications.Notification": "notifications",
    "notifications.Delivery": "deliveries",
    "notifications.DeliveryAttempt": "attempts",
    "notifications.DeliveryEvent": "events",
    "notifications.IdempotencyKey": "idempotency_keys",
    "notifications.NotificationSchedule": "schedules",
    "notifications.BookingEvent": "booking_events",
    "preferences.DailyCount": "daily_counts",
}

FAILED_STATUSES = (DeliveryStatus.FAILED, DeliveryStatus.UNDELIVERED, DeliveryStatus.BOUNCED)
SENT_STATUSES = (DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.OPENED, DeliveryStatus.CLICKED)
FAILURE_WATCH_HEARTBEAT = "failure-watch"


# --- Cleanup --------------------------------------------------------------------------


def retention_cutoff(*, now: datetime | None = None, days: int | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(days=days or settings.BEACON_LOG_RETENTION_DAYS)


def notifications_expired(*, before: datetime) -> QuerySet[Notification]:
    """Notifications created before `before` none of whose deliveries is still on its way."""
    return Notification.objects.filter(created_at__lt=before).exclude(deliveries__status__in=IN_FLIGHT_STATUSES)


def notifications_cleanup(
    *,
    now: datetime | None = None,
    days: int | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Delete what is older than the retention period (`days`, else the setting) and
    return how many rows of each kind went; with `dry_run`, count them and delete nothing.
    `progress` is told how many notifications each batch covered."""
    now = now or timezone.now()
    cutoff = retention_cutoff(now=now, days=days)
    counts = dict.fromkeys(CLEANUP_KINDS.values(), 0)

    def rows(queryset: QuerySet) -> None:
        _add(counts, _rows_count(queryset) if dry_run else _rows_delete(queryset))

    # Schedules first: the notifications after them then have fewer references to clear.
    rows(NotificationSchedule.objects.filter(status__in=FINISHED_SCHEDULE_STATUSES, scheduled_for__lt=cutoff))
    for ids in _batches(notifications_expired(before=cutoff)):
        _add(counts, _notifications_count(ids) if dry_run else _notifications_delete(ids, cutoff))
        if progress is not None:
            progress(len(ids))
    rows(BookingEvent.objects.filter(received_at__lt=cutoff))
    rows(DailyCount.objects.filter(day__lt=(now - timedelta(days=DAILY_COUNT_KEEP_DAYS)).date()))
    logger.info(
        "cleanup of logs before %s%s: %s", cutoff.isoformat(), " (dry run, nothing deleted)" if dry_run else "", counts
    )
    return counts


def _add(counts: dict[str, int], by_label: dict[str, int]) -> None:
    for label, count in by_label.items():
        if label in CLEANUP_KINDS:
            counts[CLEANUP_KINDS[label]] += count


def _batches(queryset: QuerySet) -> Iterator[list]:
    """The queryset's primary keys, a batch at a time, in key order: each batch is read
    after the one before was dealt with (keyset pagination, so a dry run moves on too)."""
    size = settings.BEACON_CLEANUP_BATCH_SIZE
    last = None
    while True:
        page = queryset.order_by("pk")
        if last is not None:
            page = page.filter(pk__gt=last)
        ids = list(page.values_list("pk", flat=True)[:size])
        if not ids:
            return
        yield ids
        last = ids[-1]


def _notifications_delete(ids: list, cutoff: datetime) -> dict[str, int]:
    """One batch, with its deliveries, attempts, events and idempotency keys: Django's
    cascade, a few statements over the whole batch. Eligibility is checked again in the
    DELETE itself, so a delivery resent meanwhile keeps its notification."""
    with transaction.atomic():
        _, by_label = notifications_expired(before=cutoff).filter(pk__in=ids).only("pk").delete()
    return by_label


def _notifications_count(ids: list) -> dict[str, int]:
    return {
        "notifications.Notification": len(ids),
        "notifications.Delivery": Delivery.objects.filter(notification_id__in=ids).count(),
        "notifications.DeliveryAttempt": DeliveryAttempt.objects.filter(delivery__notification_id__in=ids).count(),
        "notifications.DeliveryEvent": DeliveryEvent.objects.filter(delivery__notification_id__in=ids).count(),
        "notifications.IdempotencyKey": IdempotencyKey.objects.filter(notification_id__in=ids).count(),
    }


def _rows_count(queryset: QuerySet) -> dict[str, int]:
    return {queryset.model._meta.label: queryset.count()}


def _rows_delete(queryset: QuerySet) -> dict[str, int]:
    """Rows nothing else points at, deleted a batch of ids per DELETE."""
    model = queryset.model
    deleted = 0
    while ids := list(queryset.order_by("pk").values_list("pk", flat=True)[: settings.BEACON_CLEANUP_BATCH_SIZE]):
        count, _ = model.objects.filter(pk__in=ids).delete()
        deleted += count
    return {model._meta.label: deleted}


# --- Failure watch --------------------------------------------------------------------


FAILURE_WATCH_CREATED_DAYS = 2


def failure_rates_watch(*, now: datetime | None = None) -> dict[str, int]:
    """Replace the failure alerts with this window's: one aggregate over the deliveries
    that finished in it (sent or further, or failed, undelivered, bounced), by account and
    channel. Returns how many account/channel pairs had enough volume and how many alert."""
    now = now or timezone.now()
    window = settings.BEACON_FAILURE_WATCH_MINUTES
    since = now - timedelta(minutes=window)
    failed = Q(status__in=FAILED_STATUSES)
    rows = list(
        # Bounded by creation too (BRIN-indexed on PostgreSQL), so the watch never reads the
        # whole table: a delivery created more than two days before
        # the window (a send scheduled far ahead) is left out of the rate.
        Delivery.objects.filter(created_at__gte=since - timedelta(days=FAILURE_WATCH_CREATED_DAYS))
        .filter(
            Q(failed, failed_at__gt=since, failed_at__lte=now)
            | Q(status__in=SENT_STATUSES, sent_at__gt=since, sent_at__lte=now)
        )
        .values("account_id", "channel")
        .annotate(total=Count("pk"), failed=Count("pk", filter=failed))
        .filter(total__gte=settings.BEACON_FAILURE_WATCH_MIN_VOLUME)
        .order_by("account_id", "channel")
    )
    alerts = [
        FailureAlert(
            account_id=row["account_id"],
            channel=row["channel"],
            failed=row["failed"],
            total=row["total"],
            rate=round(row["failed"] / row["total"], 4),
            window_minutes=window,
            detected_at=now,
        )
        for row in rows
        if row["failed"] / row["total"] >= settings.BEACON_FAILURE_RATE_THRESHOLD
    ]
    with transaction.atomic():
        # The heartbeat's row lock comes first, so two watches replace the alerts in turn.
        Heartbeat.objects.update_or_create(name=FAILURE_WATCH_HEARTBEAT, defaults={"at": now})
        FailureAlert.objects.all().delete()
        FailureAlert.objects.bulk_create(alerts)
    for alert in alerts:
        logger.warning(
            "failure rate %.0f%% on %s for account %s: %d of %d deliveries failed in the last %d minutes",
            alert.rate * 100,
            alert.channel,
            alert.account_id,
            alert.failed,
            alert.total,
            window,
        )
    return {"watched": len(rows), "alerts": len(alerts)}


def failure_rates_summary() -> dict:
    """What /health/ shows of the last watch. The endpoint is open to monitors, so the
    alerts are summed per channel: how many accounts, and their failures over their total,
    never which accounts (those are in the log and in the FailureAlert rows)."""
    rows = (
        FailureAlert.objects.values("channel")
        .annotate(accounts=Count("account_id", distinct=True), failed=Sum("failed"), total=Sum("total"))
        .order_by("channel")
    )
    last = Heartbeat.objects.filter(name=FAILURE_WATCH_HEARTBEAT).values_list("at", flat=True).first()
    alerts = [{**row, "rate": round(row["failed"] / row["total"], 4) if row["total"] else 0.0} for row in rows]
    return {
        "alerting": bool(alerts),
        "last_run": last.isoformat() if last else None,
        "window_minutes": settings.BEACON_FAILURE_WATCH_MINUTES,
        "threshold": settings.BEACON_FAILURE_RATE_THRESHOLD,
        "alerts": alerts,
    }
