"""The one way work reaches the queue: after the surrounding transaction commits."""

from django.db import transaction


def enqueue_dispatch(delivery_ids, *, countdown: float | None = None) -> None:
    """Send each delivery's dispatch task once the current transaction commits."""
    ids = [str(pk) for pk in delivery_ids]
    if not ids:
        return

    def publish():
        from .tasks import delivery_dispatch

        for pk in ids:
            delivery_dispatch.apply_async(args=[pk], countdown=countdown)

    transaction.on_commit(publish)
