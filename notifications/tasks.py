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


@shared_task(name="notifications.tasks.schedules_process")
def schedules_process() -> dict:
    """Reminders and follow-ups that fell due (the due scan)."""
    from .services.schedules import schedules_process

    return schedules_process()


@shared_task(name="notifications.tasks.daily_agendas_send")
def daily_agendas_send() -> dict:
    from .services.agenda import daily_agendas_send

    return daily_agendas_send()


@shared_task(name="notifications.tasks.notifications_cleanup")
def notifications_cleanup() -> dict:
    """Delete logs older than BEACON_LOG_RETENTION_DAYS (safe to run twice: a second run finds less)."""
    from .services.upkeep import notifications_cleanup

    return notifications_cleanup()


@shared_task(name="notifications.tasks.failure_rates_watch")
def failure_rates_watch() -> dict:
    """Replace the failure alerts with the current window's (safe to run twice)."""
    from .services.upkeep import failure_rates_watch

    return failure_rates_watch()


@shared_task(name="notifications.tasks.webhook_messages_send", acks_late=True, reject_on_worker_lost=True)
def webhook_messages_send(ids: list) -> dict:
    """New webhook messages, posted now (a message already claimed or sent is left alone)."""
    from .services.webhooks import webhook_messages_send

    return webhook_messages_send(ids=ids)


@shared_task(name="notifications.tasks.webhook_messages_due")
def webhook_messages_due() -> dict:
    """The webhook due scan: first tries that missed their task, and retries that fell due."""
    from .services.webhooks import webhook_messages_due

    return webhook_messages_due()
