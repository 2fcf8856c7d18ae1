"""Thin tasks: ids in, one service call, safe to run twice."""

from celery import shared_task

from . import services


@shared_task(name="notifications.tasks.deliveries_dispatch", acks_late=True, reject_on_worker_lost=True)
def deliveries_dispatch(channel: str, items: list) -> dict:
    """A batch of one channel's deliveries: [[delivery id, attempts so far], ...]."""
    return services.deliveries_dispatch(items=[(delivery_id, attempts) for delivery_id, attempts in items])


@shared_task(name="notifications.tasks.delivery_dispatch", acks_late=True, reject_on_worker_lost=True)
def delivery_dispatch(delivery_id: str, attempts_before: int | None = None) -> str:
    """One delivery (messages published before batches existed still arrive under this name)."""
    return services.delivery_dispatch(delivery_id=delivery_id, attempts_before=attempts_before)


@shared_task(name="notifications.tasks.deliveries_sweep")
def deliveries_sweep() -> dict:
    return services.deliveries_sweep()
