from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from notifications.services.agenda import daily_agendas_send


class Command(BaseCommand):
    help = (
        "Email each organizer today's bookings where the account's daily_agenda_time has come, in the "
        "account's time zone (what beat runs every few minutes). An agenda goes once per organizer and day: "
        "running this again sends nothing new."
    )

    def add_arguments(self, parser):
        parser.add_argument("--account", help="Only this account (username).")
        parser.add_argument("--dry-run", action="store_true", help="Count the agendas that are due; send nothing.")

    def handle(self, *args, account=None, dry_run=False, **options):
        user = None
        if account:
            user = get_user_model().objects.filter(username=account).first()
            if user is None:
                raise CommandError(f"No account {account!r}.")
        counts = daily_agendas_send(dry_run=dry_run, account=user)
        verb = "Would send" if dry_run else "Sent"
        self.stdout.write(
            f"{verb} {counts['sent']} agenda(s) over {counts['accounts']} account(s); "
            f"{counts['already_sent']} already sent today, {counts['skipped']} skipped (no template)."
        )
