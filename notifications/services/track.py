"""Track: provider-reported statuses (Twilio callbacks, ESP events) move a delivery forward."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from ..models import Delivery, DeliveryAttempt
from .events import TIMESTAMP_FIELD, can_move, event_record
from .fallback import fallbacks_settle
from .inbound import unsubscribed_errors_suppress


def delivery_track(
    *,
    delivery: Delivery,
    status: str,
    source: str,
    occurred_at: datetime | None = None,
    payload: dict | None = None,
    error_code: str = "",
    error_message: str = "",
) -> bool:
    """Apply a provider-reported status. Moves only forward: late, repeated or
    out-of-order reports change nothing. Returns whether the delivery changed. An error
    saying the recipient unsubscribed (Twilio 21610) suppresses the address, whatever
    the status did. A fallback delivery's change may release or cancel the standby
    deliveries of its notification (notifications.services.fallback)."""
    if error_code:
        unsubscribed_errors_suppress(reports=[(delivery.account_id, delivery.channel, delivery.to, error_code)])
    occurred_at = occurred_at or timezone.now()
    for _ in range(5):
        current = Delivery.objects.values_list("status", flat=True).get(pk=delivery.pk)
        if not can_move(current, status):
            return False
        fields = {"status": status, "updated_at": timezone.now()}
        if status in TIMESTAMP_FIELD:
            fields[TIMESTAMP_FIELD[status]] = occurred_at
        if error_code or error_message:
            fields.update(error_code=error_code[:64], error_message=error_message[:2000])
        with transaction.atomic():
            # Conditional on the status we read: a concurrent callback makes this a no-op
            # and we read again.
            if Delivery.objects.filter(pk=delivery.pk, status=current).update(**fields):
                event_record(
                    delivery, current, status, source, occurred_at, payload=payload, detail=error_message[:500]
                )
                if delivery.fallback_rank is not None:
                    delivery.status = status
                    if error_code or error_message:
                        delivery.error_code, delivery.error_message = fields["error_code"], fields["error_message"]
                    fallbacks_settle([delivery])
                return True
    return False


def record_credentials(*, delivery_id: str) -> dict | None:
    """The credentials of the provider record the delivery's last attempt went through
    (a callback from it is signed with them), or None: the platform's provider."""
    try:
        delivery_id = uuid.UUID(str(delivery_id))
    except ValueError:
        return None
    attempt = (
        DeliveryAttempt.objects.filter(delivery_id=delivery_id, provider_config__isnull=False)
        .select_related("provider_config")
        .order_by("-number")
        .first()
    )
    if attempt is None:
        return None
    from providers.services import credentials_of

    return credentials_of(attempt.provider_config)
