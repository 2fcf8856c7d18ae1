"""Thin tasks: ids in, one service call, safe to run twice."""

from celery import shared_task

from . import services


@shared_task(name="notifications.tasks.delivery_dispatch", acks_late=True, reject_on_worker_lost=True)
def delivery_dispatch(delivery_id: str, attempts_before: int | None = None) -> str:
    return services.delivery_dispatch(delivery_id=delivery_id, attempts_before=attempts_before)


@shared_task(name="notifications.tasks.deliveries_sweep")
def deliveries_sweep() -> dict:
    return services.deliveries_sweep()
