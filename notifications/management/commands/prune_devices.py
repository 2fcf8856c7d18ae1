from django.core.management.base import BaseCommand

from notifications.services.devices import devices_prune


class Command(BaseCommand):
    help = (
        "Delete push devices not seen for --days (default 270), and deactivated ones (a provider said the "
        "token is gone) deactivated that long ago."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=270, help="Days without a sighting (default 270).")
        parser.add_argument("--dry-run", action="store_true", help="Count them; delete nothing.")

    def handle(self, *args, days=270, dry_run=False, **options):
        count = devices_prune(inactive_days=max(days, 1), dry_run=dry_run)
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(f"{verb} {count} device(s) inactive for {days} days or more.")
