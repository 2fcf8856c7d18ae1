"""The delivery event trail, shared by every stage: each status change appends one row.

Stages call `event_record` for one change and `events_record` for a batch (one INSERT).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..bulk import rows_insert
from ..models import FINAL_STATUSES, PROGRESS_RANK, Delivery, DeliveryEvent, DeliveryStatus

# The timestamp column each status sets on its delivery.
TIMESTAMP_FIELD = {
    DeliveryStatus.SENT: "sent_at",
    DeliveryStatus.DELIVERED: "delivered_at",
    DeliveryStatus.OPENED: "opened_at",
    DeliveryStatus.CLICKED: "clicked_at",
    DeliveryStatus.FAILED: "failed_at",
    DeliveryStatus.UNDELIVERED: "failed_at",
    DeliveryStatus.BOUNCED: "failed_at",
}


class InvalidTransition(Exception):
    """The delivery's status does not allow the requested action."""


def can_move(current: str, new: str) -> bool:
    """Status only moves forward; a final status never changes."""
    if current in FINAL_STATUSES or current == new:
        return False
    if new in FINAL_STATUSES:
        return True
    return PROGRESS_RANK[new] > PROGRESS_RANK[current]


@dataclass
class StatusChange:
    delivery_id: object
    from_status: str
    status: str
    source: str
    occurred_at: datetime
    detail: str = ""
    payload: dict = field(default_factory=dict)

    def as_row(self) -> dict:
        return {
            "delivery_id": self.delivery_id,
            "from_status": self.from_status,
            "status": self.status,
            "source": self.source,
            "detail": self.detail[:500],
            "payload": self.payload,
            "occurred_at": self.occurred_at,
        }


def events_record(changes: list[StatusChange]) -> None:
    """Append the events of a batch of status changes in one statement, and hand them to
    the account's webhook endpoints (notifications.services.webhooks)."""
    rows_insert(DeliveryEvent, [change.as_row() for change in changes])
    events_published(changes)


def events_published(changes: list[StatusChange]) -> None:
    """The changes, as webhook messages for the endpoints that listen (none: no query)."""
    from .webhooks import deliveries_changed

    deliveries_changed(changes)


def event_record(
    delivery, from_status: str, status: str, source: str, occurred_at: datetime, *, detail: str = "", payload=None
) -> None:
    """Append one event; `delivery` is a Delivery or its id."""
    delivery_id = delivery.pk if isinstance(delivery, Delivery) else delivery
    events_record([StatusChange(delivery_id, from_status, status, source, occurred_at, detail, payload or {})])
