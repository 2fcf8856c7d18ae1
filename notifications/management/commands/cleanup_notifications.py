from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from notifications.management.progress import Progress
from notifications.services.upkeep import notifications_cleanup, notifications_expired, retention_cutoff

# The summary's order and words, by the service's count names.
KINDS = {
    "notifications": "notifications",
    "deliveries": "deliveries",
    "attempts": "attempts",
    "events": "delivery events",
    "idempotency_keys": "idempotency keys",
    "schedules": "finished schedules",
    "booking_events": "booking events",
    "daily_counts": "daily counts",
}


class Command(BaseCommand):
    help = (
        "Delete logs older than the retention period (BEACON_LOG_RETENTION_DAYS, default 90): "
        "notifications none of whose deliveries is still scheduled, queued or sending, with their "
        "deliveries, attempts, events and idempotency keys; finished schedules; booking events; and "
        "daily reminder counts older than a few days. Recipients are kept. What beat runs nightly."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument(
            "--days",
            type=int,
            help="Delete what is older than this many days instead of BEACON_LOG_RETENTION_DAYS.",
        )
        parser.add_argument("--quiet", action="store_true", help="No progress bar on stderr.")

    def handle(self, *args, dry_run=False, days=None, quiet=False, **options):
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1.")
        days = days or settings.BEACON_LOG_RETENTION_DAYS
        now = timezone.now()
        progress = None
        if not quiet:
            total = notifications_expired(before=retention_cutoff(now=now, days=days)).count()
            progress = Progress(total, label="notifications", stream=self.stderr)
        counts = notifications_cleanup(
            now=now, days=days, dry_run=dry_run, progress=progress.advance if progress else None
        )
        if progress:
            progress.close()
        verb = "Would delete" if dry_run else "Deleted"
        listed = ", ".join(f"{counts[name]} {words}" for name, words in KINDS.items())
        self.stdout.write(f"{verb} {listed} (older than {days} days).")
