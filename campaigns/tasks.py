"""Thin tasks: ids in, one service call, safe to run twice."""

from celery import shared_task

from . import services


@shared_task(name="campaigns.tasks.campaign_fan_out", acks_late=True, reject_on_worker_lost=True)
def campaign_fan_out(campaign_id: int) -> dict:
    """Fan out the campaign's audience for a while, then hand over to a new task."""
    result = services.campaign_fan_out(campaign_id)
    return {"pages": result.pages, "recipients": result.recipients, "skipped": result.skipped, "done": result.done}


@shared_task(name="campaigns.tasks.campaigns_watch")
def campaigns_watch() -> dict:
    return services.campaigns_watch()
