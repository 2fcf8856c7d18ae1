"""An operator's or a client's actions on one delivery: resend, cancel."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import (
    CANCELLABLE_STATUSES,
    RESENDABLE_STATUSES,
    Delivery,
    DeliveryStatus,
    NotificationSchedule,
    ScheduleStatus,
)
from ..queue import Dispatch, enqueue_dispatch
from .events import InvalidTransition, event_record
from .fallback import standby_cancel
from .rights import ERASED

# What a delivery sends: a resend copies exactly these.
MESSAGE_FIELDS = ("channel", "to", "locale", "subject", "body", "html_body", "options", "encoding", "segments")


@transaction.atomic
def delivery_resend(*, delivery: Delivery, source: str = "api") -> Delivery:
    """Send a failed delivery again as a new delivery; the failed one keeps its history.
    A fallback delivery's copy is that one delivery only: it has no rank, and its outcome
    releases or cancels nothing."""
    # Lock the original so two concurrent resends of it queue one copy.
    delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
    pending = delivery.resends.exclude(status__in=RESENDABLE_STATUSES).first()
    if pending is not None:
        raise InvalidTransition(f"This delivery was already resent as {pending.pk} ({pending.status}).")
    if delivery.to == ERASED:
        raise InvalidTransition("This delivery's recipient was erased; it cannot be resent.")
    if delivery.status not in RESENDABLE_STATUSES:
        raise InvalidTransition(
            f"Only a delivery that is {', '.join(sorted(RESENDABLE_STATUSES))} can be resent; this one is {delivery.status}."
        )
    now = timezone.now()
    copy = Delivery.objects.create(
        account_id=delivery.account_id,
        notification_id=delivery.notification_id,
        resent_from=delivery,
        **{field: getattr(delivery, field) for field in MESSAGE_FIELDS},
        status=DeliveryStatus.QUEUED,
        max_attempts=settings.BEACON_MAX_ATTEMPTS,
        next_attempt_at=now,
        enqueued_at=now,
    )
    event_record(copy, "", DeliveryStatus.QUEUED, source, now, detail=f"resend of {delivery.pk}")
    enqueue_dispatch([Dispatch(copy.pk, copy.channel, 0)])
    return copy


def delivery_cancel(*, delivery: Delivery, source: str = "api") -> Delivery:
    """Cancel a delivery that no worker has claimed yet (or a standby one). A fallback
    notification's standby deliveries are cancelled with it: the chain stops there."""
    now = timezone.now()
    current = Delivery.objects.values_list("status", flat=True).get(pk=delivery.pk)
    with transaction.atomic():
        moved = current in CANCELLABLE_STATUSES and Delivery.objects.filter(pk=delivery.pk, status=current).update(
            status=DeliveryStatus.CANCELLED, next_attempt_at=None, enqueued_at=None, updated_at=now
        )
        if not moved:
            raise InvalidTransition(f"Only a scheduled or queued delivery can be cancelled; this one is {current}.")
        event_record(delivery, current, DeliveryStatus.CANCELLED, source, now, detail="cancelled")
        NotificationSchedule.objects.filter(delivery_id=delivery.pk, status=ScheduleStatus.SCHEDULED).update(
            status=ScheduleStatus.CANCELLED, processed_at=now, updated_at=now
        )
        standby_cancel(delivery=delivery, source=source)
    delivery.refresh_from_db()
    return delivery
