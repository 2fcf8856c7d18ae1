"""The one way work reaches the queue: after the surrounding transaction commits."""

import logging

from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue_dispatch(deliveries, *, countdown: float | None = None) -> None:
    """Send a dispatch task for each (delivery id, attempts so far) once the current
    transaction commits."""
    items = [(str(pk), attempts) for pk, attempts in deliveries]
    if not items:
        return

    def publish():
        from .tasks import delivery_dispatch

        for pk, attempts in items:
            try:
                delivery_dispatch.apply_async(args=[pk, attempts], countdown=countdown)
            except Exception:  # noqa: BLE001 - the rows are committed; the sweep re-enqueues them
                logger.exception("could not enqueue delivery %s; the sweep will pick it up", pk)

    # robust: a broker outage after commit must not turn an accepted request into a 500
    # (a client would retry and send twice).
    transaction.on_commit(publish, robust=True)
