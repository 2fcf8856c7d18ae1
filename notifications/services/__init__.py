"""Writes for notifications: the send pipeline, one module per stage.

    accept   -> decide -> render -> dispatch -> track      (plus the sweep)

- `accept`: a send or a batch send becomes notifications and deliveries, in one transaction.
- `decide`: send now, defer or skip each delivery (the preferences seam).
- `render`: the pinned template version becomes each channel's text.
- `dispatch`: batches are claimed, handed to the provider and recorded in bulk.
- `track`: provider-reported statuses move deliveries forward.
- `sweep`: the periodic pass that queues what is due and heals what a crash left.
- `actions`: resend and cancel; `events`: the shared event trail.

Every way in (API, admin, management commands, tasks) calls these functions; they are the
only place the rules of a delivery's life live.
"""

from .accept import (
    Accepted,
    BatchInvalid,
    IdempotencyConflict,
    Item,
    notification_accept,
    notifications_accept_batch,
    recipients_resolve,
)
from .actions import delivery_cancel, delivery_resend
from .dispatch import deliveries_dispatch, delivery_dispatch, retry_delay, status_callback_url
from .events import InvalidTransition, can_move
from .sweep import deliveries_sweep
from .track import delivery_track

__all__ = [
    "Accepted",
    "BatchInvalid",
    "IdempotencyConflict",
    "InvalidTransition",
    "Item",
    "can_move",
    "deliveries_dispatch",
    "deliveries_sweep",
    "delivery_cancel",
    "delivery_dispatch",
    "delivery_resend",
    "delivery_track",
    "notification_accept",
    "notifications_accept_batch",
    "recipients_resolve",
    "retry_delay",
    "status_callback_url",
]
