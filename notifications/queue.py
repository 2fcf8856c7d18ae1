"""The one way work reaches the queue: after the surrounding transaction commits, in
batches of one channel."""

from __future__ import annotations

import logging
from itertools import groupby
from typing import NamedTuple

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)


class Dispatch(NamedTuple):
    """A delivery to dispatch, with the attempt count it is expected to have: a message
    that finds the count moved on is stale and claims nothing."""

    delivery_id: object
    channel: str
    attempts: int


def enqueue_dispatch(deliveries: list[Dispatch], *, countdown: float | None = None) -> None:
    """Once the current transaction commits, send dispatch tasks of up to
    BEACON_DISPATCH_BATCH_SIZE deliveries of one channel each."""
    size = settings.BEACON_DISPATCH_BATCH_SIZE
    batches = []
    for channel, group in groupby(sorted(deliveries, key=lambda d: d.channel), key=lambda d: d.channel):
        items = [[str(d.delivery_id), d.attempts] for d in group]
        batches += [(channel, items[start : start + size]) for start in range(0, len(items), size)]
    if not batches:
        return

    def publish():
        from .tasks import deliveries_dispatch

        for channel, items in batches:
            try:
                deliveries_dispatch.apply_async(args=[channel, items], countdown=countdown)
            except Exception:  # noqa: BLE001 - the rows are committed; the sweep re-enqueues them
                logger.exception("could not enqueue %d %s deliveries; the sweep will pick them up", len(items), channel)

    # robust: a broker outage after commit must not turn an accepted request into a 500
    # (a client would retry and send twice).
    transaction.on_commit(publish, robust=True)
