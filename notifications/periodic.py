"""Beacon's periodic work, registered with django-celery-beat's database scheduler after
every `migrate` (so `make run` has it with no extra step). Each entry is created once, by
name, and then belongs to the operator: an interval changed or a task disabled in the
admin (Periodic tasks) stays so across restarts and migrations."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Periodic:
    name: str
    task: str
    description: str
    every_seconds: int | None = None
    crontab: dict | None = None  # minute, hour (UTC)


# Entries of apps that build on this one (campaigns), added from their ready().
REGISTERED: dict[str, Periodic] = {}


def periodic_register(entry: Periodic) -> None:
    REGISTERED[entry.name] = entry


def periodic_tasks() -> list[Periodic]:
    return [*_own(), *REGISTERED.values()]


def _own() -> list[Periodic]:
    return [
        Periodic(
            "dispatch-due-deliveries",
            "notifications.tasks.deliveries_sweep",
            "Queue due and deferred deliveries and retries waiting in the database; heal what a dead worker left.",
            every_seconds=int(settings.BEACON_SWEEP_INTERVAL_SECONDS),
        ),
        Periodic(
            "process-scheduled-notifications",
            "notifications.tasks.schedules_process",
            "Send reminders and follow-ups that fell due (claimed with FOR UPDATE SKIP LOCKED).",
            every_seconds=int(settings.BEACON_SCHEDULE_INTERVAL_SECONDS),
        ),
        Periodic(
            "send-due-webhooks",
            "notifications.tasks.webhook_messages_due",
            "Post webhook messages that are due (a first try or a retry), claimed with FOR UPDATE SKIP LOCKED.",
            every_seconds=int(settings.BEACON_WEBHOOK_INTERVAL_SECONDS),
        ),
        Periodic(
            "send-daily-agendas",
            "notifications.tasks.daily_agendas_send",
            "Email each organizer the day's bookings at the account's agenda time, in its time zone.",
            every_seconds=300,
        ),
        Periodic(
            "watch-failure-rates",
            "notifications.tasks.failure_rates_watch",
            "Log and show on /health/ each account and channel whose failure rate is over the threshold.",
            every_seconds=300,
        ),
        Periodic(
            "cleanup-notifications",
            "notifications.tasks.notifications_cleanup",
            "Delete logs older than BEACON_LOG_RETENTION_DAYS.",
            crontab={"minute": "30", "hour": "3"},
        ),
    ]


def periodic_tasks_install(**kwargs) -> int:
    """Create the entries that do not exist yet; returns how many were created."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    existing = set(PeriodicTask.objects.values_list("name", flat=True))
    created = 0
    for entry in periodic_tasks():
        if entry.name in existing:
            continue
        if entry.crontab is not None:
            schedule, _ = CrontabSchedule.objects.get_or_create(
                day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC", **entry.crontab
            )
            kind = {"crontab": schedule}
        else:
            schedule, _ = IntervalSchedule.objects.get_or_create(
                every=entry.every_seconds, period=IntervalSchedule.SECONDS
            )
            kind = {"interval": schedule}
        PeriodicTask.objects.create(name=entry.name, task=entry.task, description=entry.description, **kind)
        created += 1
    return created
