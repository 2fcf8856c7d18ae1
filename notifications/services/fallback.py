"""Channel fallback: a notification sent with `fallback` tries its channels in order, each
only when the recipient could not be reached on the ones before it.

Accept writes every channel's delivery, rendered and decided, with its channel's place in
the order as `fallback_rank`: the first rank the decision lets through is live, the later
ranks wait as `standby` (a channel with no address is recorded as a skipped, suppressed
delivery, so that the chain shows). Every stage that moves a fallback delivery to a status
that settles its rank hands it to `fallbacks_settle`, in the same transaction:

- sent or beyond: the notification's standby deliveries are not needed, and end cancelled;
- cancelled (by the user, or by the provider): the rest of the chain is cancelled with it;
- failed, undelivered, bounced, suppressed or expired: once no delivery below the lowest
  standby rank is still live (scheduled, queued, sending) or sent, that rank's standby
  deliveries are released: queued and enqueued, or scheduled when the time decided at
  accept is still ahead (the sweep queues them then).

A released delivery keeps what accept decided for it (quiet hours, caps, suppression were
weighed then); dispatch still drops it if its address was suppressed meanwhile.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from ..bulk import rows_update
from ..models import Delivery, DeliveryStatus, Notification
from ..queue import Dispatch, enqueue_dispatch
from .events import StatusChange, events_record

SENT_STATUSES = frozenset(
    {DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.OPENED, DeliveryStatus.CLICKED}
)
# A status that means the delivery did not reach the recipient and never will.
FAILURE_STATUSES = frozenset(
    {
        DeliveryStatus.FAILED,
        DeliveryStatus.UNDELIVERED,
        DeliveryStatus.BOUNCED,
        DeliveryStatus.SUPPRESSED,
        DeliveryStatus.EXPIRED,
    }
)
LIVE_STATUSES = frozenset({DeliveryStatus.SCHEDULED, DeliveryStatus.QUEUED, DeliveryStatus.SENDING})
SETTLING_STATUSES = SENT_STATUSES | FAILURE_STATUSES | {DeliveryStatus.CANCELLED}

NOT_NEEDED = "not_needed"
CHAIN_CANCELLED = "fallback_cancelled"
WRITTEN_FIELDS = ["status", "next_attempt_at", "enqueued_at", "error_code", "error_message", "updated_at"]


@dataclass
class _Row:
    pk: object
    notification_id: object
    channel: str
    rank: int
    status: str
    next_attempt_at: datetime | None
    attempt_count: int
    error_message: str


def fallbacks_settle(
    deliveries: Iterable[Delivery], *, changes: list[StatusChange] | None = None, source: str = "fallback"
) -> dict[str, int]:
    """Release or cancel the standby deliveries of the notifications of `deliveries`:
    fallback deliveries (`fallback_rank` set) whose new `status` was just written, in the
    caller's transaction. Their events are added to `changes` when given (the caller
    records them with its own), else recorded here. A few statements whatever the number
    of deliveries; safe to run twice or concurrently: the notifications are locked while
    their chain is read, and a standby row moves only while it is still standby.
    Returns how many deliveries were released and cancelled."""
    settling = [d for d in deliveries if d.fallback_rank is not None and d.status in SETTLING_STATUSES]
    counts = {"released": 0, "cancelled": 0}
    if not settling:
        return counts
    now = timezone.now()
    notification_ids = sorted({d.notification_id for d in settling}, key=str)
    with transaction.atomic():
        # One settle per notification at a time: two deliveries of one rank (two push
        # devices) failing in two workers at once must not each see the other still
        # sending and release nothing. FOR NO KEY UPDATE, so that a resend's insert
        # (which takes a key-share lock on its notification) is not held up.
        list(
            Notification.objects.select_for_update(no_key=True)
            .filter(pk__in=notification_ids)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        chains: dict[object, list[_Row]] = defaultdict(list)
        for values in Delivery.objects.filter(
            notification_id__in=notification_ids, fallback_rank__isnull=False
        ).values_list(
            "pk",
            "notification_id",
            "channel",
            "fallback_rank",
            "status",
            "next_attempt_at",
            "attempt_count",
            "error_message",
        ):
            row = _Row(*values)
            chains[row.notification_id].append(row)
        triggers: dict[object, list[Delivery]] = defaultdict(list)
        for delivery in settling:
            triggers[delivery.notification_id].append(delivery)
        moves: list[tuple[_Row, str, str]] = []  # (standby row, new status, detail)
        for notification_id in notification_ids:
            moves += _chain_moves(chains[notification_id], triggers[notification_id], now)
        if not moves:
            return counts
        written = [_written(row, status, detail, now) for row, status, detail in moves]
        moved = rows_update(Delivery, written, WRITTEN_FIELDS, only_where={"status": DeliveryStatus.STANDBY})
        done = [(row, status, detail) for row, status, detail in moves if row.pk in moved]
        new = [
            StatusChange(row.pk, DeliveryStatus.STANDBY, status, source, now, detail) for row, status, detail in done
        ]
        if changes is not None:
            changes += new
        else:
            events_record(new)
        enqueue_dispatch(
            [
                Dispatch(row.pk, row.channel, row.attempt_count)
                for row, status, _ in done
                if status == DeliveryStatus.QUEUED
            ]
        )
    for _, status, _ in done:
        counts["cancelled" if status == DeliveryStatus.CANCELLED else "released"] += 1
    return counts


def _chain_moves(chain: list[_Row], triggers: list[Delivery], now: datetime) -> list[tuple[_Row, str, str]]:
    """What becomes of one notification's standby deliveries, given its chain as stored
    and the deliveries of it that just settled."""
    standby = [row for row in chain if row.status == DeliveryStatus.STANDBY]
    if not standby:
        return []
    sent = [d for d in triggers if d.status in SENT_STATUSES] or [r for r in chain if r.status in SENT_STATUSES]
    if sent:
        detail = f"not needed: sent on {sent[0].channel}"
        return [(row, DeliveryStatus.CANCELLED, detail) for row in standby]
    cancelled = [d for d in triggers if d.status == DeliveryStatus.CANCELLED]
    if cancelled:
        detail = f"cancelled: the fallback chain was cancelled with its {cancelled[0].channel} delivery"
        return [(row, DeliveryStatus.CANCELLED, detail) for row in standby]
    lowest = min(row.rank for row in standby)
    before = [row for row in chain if row.rank < lowest]
    if not before or any(row.status in LIVE_STATUSES for row in before):
        return []
    # Everything before the lowest standby rank is over, and nothing of it was sent: the
    # nearest rank before it is the one that just could not reach the recipient.
    last = max(row.rank for row in before)
    failed = [row for row in before if row.rank == last]
    reasons = "; ".join(dict.fromkeys(_reason(row) for row in failed))
    moves = []
    for row in standby:
        if row.rank != lowest:
            continue
        status = (
            DeliveryStatus.SCHEDULED
            if row.next_attempt_at is not None and row.next_attempt_at > now
            else DeliveryStatus.QUEUED
        )
        detail = f"fallback: {failed[0].channel} could not reach the recipient ({reasons}); trying {row.channel}"
        if status == DeliveryStatus.SCHEDULED:
            detail += f" at {row.next_attempt_at.isoformat()}"
        moves.append((row, status, detail))
    return moves


def _reason(row: _Row) -> str:
    """Why a delivery did not reach the recipient, as its log says it."""
    if row.status == DeliveryStatus.SUPPRESSED:
        return row.error_message or "suppressed"
    if row.status == DeliveryStatus.CANCELLED:
        return "cancelled"
    return f"{row.status}: {row.error_message}" if row.error_message else str(row.status)


def _written(row: _Row, status: str, detail: str, now: datetime) -> Delivery:
    """The fields a standby delivery's move writes, on an unsaved Delivery of its key."""
    delivery = Delivery(pk=row.pk, status=status, updated_at=now, error_code="", error_message="")
    if status == DeliveryStatus.CANCELLED:
        delivery.next_attempt_at, delivery.enqueued_at = None, None
        delivery.error_code = NOT_NEEDED if detail.startswith("not needed") else CHAIN_CANCELLED
        delivery.error_message = detail
    elif status == DeliveryStatus.SCHEDULED:
        delivery.next_attempt_at, delivery.enqueued_at = row.next_attempt_at, None
    else:
        delivery.next_attempt_at, delivery.enqueued_at = now, now
    return delivery


def standby_cancel(*, delivery: Delivery, source: str = "api") -> int:
    """A user's cancel of one delivery of a fallback notification: the rest of its chain
    (its standby deliveries) is cancelled with it. Returns how many were."""
    if delivery.fallback_rank is None:
        return 0
    cancelled = Delivery(
        pk=delivery.pk,
        notification_id=delivery.notification_id,
        channel=delivery.channel,
        fallback_rank=delivery.fallback_rank,
        status=DeliveryStatus.CANCELLED,
    )
    return fallbacks_settle([cancelled], source=source)["cancelled"]
