"""The due scan: schedules whose time has come become notifications.

A pass claims due rows in batches, `scheduled -> processing`, with one
`UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n) RETURNING` on
PostgreSQL: a second beat or worker scanning at the same moment skips the rows this one
holds and takes the next ones, so no row is claimed twice. Each claimed batch is then
rendered from its booking as it stands now and accepted through the pipeline (decide
applies: quiet hours, caps, suppression), and the rows are marked `sent`, `skipped` or
`failed` in the same transaction as the notifications they made. So a processing row
never has a notification: one a dead worker left is put back to `scheduled` after
BEACON_SCHEDULE_LEASE_SECONDS and sent then, once.

A scheduled send's row (its delivery written at accept) is not claimed here: the sweep
queues that delivery when it falls due and marks the row.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from preferences.models import AccountPreference
from templates.models import Template

from ..bulk import rows_update
from ..models import BookingStatus, DeliveryStatus, NotificationSchedule, ScheduleStatus
from .accept import BatchInvalid, Item, notifications_accept_batch
from .bookings import booking_context, invitee_details

logger = logging.getLogger("beacon.schedules")


def schedules_process(
    *,
    now: datetime | None = None,
    max_batches: int | None = None,
    batch_size: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Claim and send what is due, batch after batch, until nothing due is left (or
    `max_batches` were done); `on_batch` hears how many each batch claimed."""
    now = now or timezone.now()
    batch_size = max(batch_size or settings.BEACON_SCHEDULE_BATCH_SIZE, 1)
    counts = {"released": schedules_release(now=now), "claimed": 0, "sent": 0, "skipped": 0, "failed": 0}
    batches = 0
    while max_batches is None or batches < max_batches:
        claimed = schedules_claim(now=now, limit=batch_size)
        if not claimed:
            break
        batches += 1
        counts["claimed"] += len(claimed)
        for outcome, n in schedules_send(claimed, now=now).items():
            counts[outcome] += n
        if on_batch is not None:
            on_batch(len(claimed))
    return counts


def schedules_claim(*, now: datetime, limit: int) -> list:
    """Up to `limit` due rows, oldest first, moved to processing; their ids."""
    table = NotificationSchedule._meta.db_table
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"""
                UPDATE {table} SET status = %s, claimed_at = %s, updated_at = %s
                WHERE id IN (
                    SELECT id FROM {table}
                    WHERE status = %s AND delivery_id IS NULL AND scheduled_for <= %s
                    ORDER BY scheduled_for
                    LIMIT %s
                    FOR UPDATE SKIP LOCKED
                )
                RETURNING id
                """,
                [ScheduleStatus.PROCESSING, now, now, ScheduleStatus.SCHEDULED, now, limit],
            )
            return [row[0] for row in cursor.fetchall()]
    with transaction.atomic():
        ids = list(
            NotificationSchedule.objects.select_for_update(skip_locked=True)
            .filter(status=ScheduleStatus.SCHEDULED, delivery__isnull=True, scheduled_for__lte=now)
            .order_by("scheduled_for")
            .values_list("pk", flat=True)[:limit]
        )
        NotificationSchedule.objects.filter(pk__in=ids).update(
            status=ScheduleStatus.PROCESSING, claimed_at=now, updated_at=now
        )
    return ids


def schedules_release(*, now: datetime) -> int:
    """Rows a dead worker left in processing go back to scheduled (none has a notification)."""
    stale = now - timedelta(seconds=settings.BEACON_SCHEDULE_LEASE_SECONDS)
    return NotificationSchedule.objects.filter(status=ScheduleStatus.PROCESSING, claimed_at__lte=stale).update(
        status=ScheduleStatus.SCHEDULED, claimed_at=None, updated_at=now
    )


def schedules_send(ids: list, *, now: datetime) -> dict[str, int]:
    """Send claimed rows: one accept per (template, channel, priority, category), and the
    rows marked in the same transaction."""
    rows = list(
        NotificationSchedule.objects.filter(pk__in=ids, status=ScheduleStatus.PROCESSING).select_related(
            "booking__invitee", "recipient"
        )
    )
    # A batch shares a few templates and accounts: each is loaded once, not joined per row.
    templates = Template.objects.select_related("current_version").in_bulk({row.template_id for row in rows} - {None})
    accounts = get_user_model().objects.in_bulk({row.account_id for row in rows})
    # A reader with no time zone of their own reads times in the account's.
    zones = dict(AccountPreference.objects.filter(account_id__in=accounts).values_list("account_id", "timezone"))
    for row in rows:
        row.template = templates.get(row.template_id)
        row.account = accounts[row.account_id]
        row.account_zone = zones.get(row.account_id) or "UTC"
    groups: dict[tuple, list[NotificationSchedule]] = defaultdict(list)
    done: list[NotificationSchedule] = []
    for row in rows:
        reason = _not_sendable(row)
        if reason:
            _finish(row, ScheduleStatus.SKIPPED if reason[0] == "skip" else ScheduleStatus.FAILED, now, reason[1])
            done.append(row)
            continue
        groups[(row.account_id, row.template_id, row.channel, row.priority, row.category)].append(row)
    with transaction.atomic():
        for group in groups.values():
            done.extend(_send_group(group, now))
        rows_update(
            NotificationSchedule,
            done,
            ["status", "notification_id", "delivery_id", "processed_at", "error_message", "updated_at"],
        )
    counts = {"sent": 0, "skipped": 0, "failed": 0}
    for row in done:
        counts[row.status] += 1
    return counts


def _not_sendable(row: NotificationSchedule) -> tuple[str, str] | None:
    booking = row.booking
    if booking is not None:
        if booking.status == BookingStatus.CANCELLED:
            return ("skip", "The booking was cancelled.")
        if row.schedule_type == "reminder" and booking.start_time <= row.claimed_at:
            return ("skip", "The booking had started when the reminder fell due.")
    if row.template is None or row.template.current_version_id is None:
        return ("fail", "The template has no active version.")
    return None


def _finish(row: NotificationSchedule, status: str, now: datetime, message: str = "") -> None:
    row.status, row.processed_at, row.updated_at, row.error_message = status, now, now, message
    if status != ScheduleStatus.SENT:
        logger.info("schedule %s (%s, %s) %s: %s", row.pk, row.schedule_type, row.channel, status, message)


def _item(row: NotificationSchedule) -> Item:
    if row.booking is not None:
        recipient = invitee_details(row.booking)
        zone = recipient.get("timezone") or row.account_zone
        context = {**row.context, **booking_context(row.booking, reader_zone=zone)}
        return Item(recipient=recipient, context=context)
    person = row.recipient
    fields = ("email", "phone", "name", "timezone", "locale")
    return Item(recipient={f: getattr(person, f) for f in fields}, context=row.context)


def _send_group(rows: list[NotificationSchedule], now: datetime) -> list[NotificationSchedule]:
    """Accept one group; a row the template cannot render for fails alone, with its reason."""
    first = rows[0]
    pending = list(rows)
    finished = []
    while pending:
        items = [_item(row) for row in pending]
        try:
            with transaction.atomic():
                accepted = notifications_accept_batch(
                    account=first.account,
                    channels=[first.channel],
                    items=items,
                    template=first.template,
                    priority=first.priority,
                    category=first.category,
                    source="schedule",
                    bookings=[row.booking for row in pending],
                )
        except BatchInvalid as exc:
            bad = {int(index) for index in exc.errors}
            for index in sorted(bad):
                _finish(pending[index], ScheduleStatus.FAILED, now, _errors_text(exc.errors[str(index)]))
                finished.append(pending[index])
            pending = [row for index, row in enumerate(pending) if index not in bad]
            continue
        except ValidationError as exc:
            for row in pending:
                _finish(row, ScheduleStatus.FAILED, now, "; ".join(exc.messages))
            return finished + pending
        for row, notification in zip(pending, accepted.notifications, strict=True):
            delivery = accepted.deliveries[notification.pk][0]
            row.notification_id, row.delivery_id = notification.pk, delivery.pk
            if delivery.status == DeliveryStatus.SUPPRESSED:
                _finish(row, ScheduleStatus.SKIPPED, now, delivery.error_message)
            else:
                _finish(row, ScheduleStatus.SENT, now)
        finished.extend(pending)
        break
    return finished


def _errors_text(errors: dict) -> str:
    return "; ".join(f"{field}: {' '.join(map(str, messages))}" for field, messages in errors.items())[:2000]


def schedule_cancel(*, schedule: NotificationSchedule, source: str = "api") -> NotificationSchedule:
    """Cancel a schedule that has not gone out; a scheduled send's delivery is cancelled with it."""
    from .actions import delivery_cancel
    from .events import InvalidTransition

    now = timezone.now()
    with transaction.atomic():
        moved = NotificationSchedule.objects.filter(pk=schedule.pk, status=ScheduleStatus.SCHEDULED).update(
            status=ScheduleStatus.CANCELLED, processed_at=now, updated_at=now, error_message=f"Cancelled ({source})."
        )
        if not moved:
            current = NotificationSchedule.objects.values_list("status", flat=True).get(pk=schedule.pk)
            raise InvalidTransition(f"Only a scheduled item can be cancelled; this one is {current}.")
        if schedule.delivery_id is not None:
            from ..models import Delivery

            delivery = Delivery.objects.filter(pk=schedule.delivery_id, status=DeliveryStatus.SCHEDULED).first()
            if delivery is not None:
                delivery_cancel(delivery=delivery, source=source)
    schedule.refresh_from_db()
    return schedule
