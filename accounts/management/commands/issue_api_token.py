from django.core.management.base import BaseCommand, CommandError

from accounts.services import AccountNotFound, api_token_issue


class Command(BaseCommand):
    help = "Issue an API token for an account; the token is printed as the last line."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--create", action="store_true", help="Create the account if missing.")
        parser.add_argument("--name", default="", help="A label for the token.")

    def handle(self, *args, username, create, name, **options):
        try:
            token, raw = api_token_issue(username=username, create=create, name=name)
        except AccountNotFound:
            raise CommandError(f"No account named {username!r}; pass --create to create it.") from None
        self.stdout.write(f"Issued token {token.prefix}… for {token.account.username}:")
        self.stdout.write(raw)
