from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from notifications.management.progress import Progress
from notifications.models import NotificationSchedule, ScheduleStatus
from notifications.services.schedules import schedules_process


class Command(BaseCommand):
    help = (
        "Send the reminders and follow-ups that have fallen due (what beat runs every "
        "BEACON_SCHEDULE_INTERVAL_SECONDS). Rows are claimed with FOR UPDATE SKIP LOCKED, so "
        "this is safe to run beside beat or a second copy of itself."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what is due; claim and send nothing.")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=settings.BEACON_SCHEDULE_BATCH_SIZE,
            help="Rows claimed per batch (default BEACON_SCHEDULE_BATCH_SIZE).",
        )
        parser.add_argument("--quiet", action="store_true", help="No progress bar.")

    def handle(self, *args, dry_run=False, batch_size=500, quiet=False, **options):
        now = timezone.now()
        due = NotificationSchedule.objects.filter(
            status=ScheduleStatus.SCHEDULED, delivery__isnull=True, scheduled_for__lte=now
        ).count()
        if dry_run:
            self.stdout.write(f"{due} scheduled notification(s) due; nothing sent (dry run).")
            return
        progress = None if quiet else Progress(due, label="schedules")
        counts = schedules_process(now=now, batch_size=batch_size, on_batch=progress.advance if progress else None)
        if progress:
            progress.close()
        self.stdout.write(
            f"Processed {counts['claimed']} due schedule(s): {counts['sent']} sent, {counts['skipped']} skipped, "
            f"{counts['failed']} failed; {counts['released']} released from a stopped worker."
        )
