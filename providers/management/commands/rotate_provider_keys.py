from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from providers.services import provider_keys_pending, provider_keys_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every provider record's credentials under the first of BEACON_ENCRYPTION_KEYS "
        "(each is read with whichever listed key encrypted it). List the new key first and keep the "
        "old ones until this has run; then the old ones can go."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Read and count them; write nothing.")

    def handle(self, *args, dry_run=False, **options):
        try:
            count = provider_keys_rotate(dry_run=dry_run)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        if dry_run:
            pending = provider_keys_pending()
            self.stdout.write(
                f"Would re-encrypt {count} provider record(s); {pending} of them not yet under the first key."
            )
        else:
            self.stdout.write(f"Re-encrypted {count} provider record(s) under the first key.")
