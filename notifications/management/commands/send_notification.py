import json

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from notifications.serializers import SendSerializer, accept_arguments
from notifications.services import notification_accept


class Command(BaseCommand):
    help = "Accept a notification for an account, as POST /api/v1/notifications/send/ does."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--channel", action="append", required=True, help="Repeat for several, in order.")
        parser.add_argument("--email", default="")
        parser.add_argument("--phone", default="")
        parser.add_argument("--name", default="")
        parser.add_argument("--locale", default="")
        parser.add_argument("--template", help="Template id or key.")
        parser.add_argument("--context", default="{}", help="JSON object of template data.")
        parser.add_argument("--subject", default="")
        parser.add_argument("--message")
        parser.add_argument(
            "--fallback",
            action="store_true",
            help="Try the channels in order, each only when the ones before it cannot reach the recipient.",
        )

    def handle(self, *args, **opts):
        try:
            account = get_user_model().objects.get(username=opts["username"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No account named {opts['username']!r}.") from None
        try:
            context = json.loads(opts["context"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--context is not JSON: {exc}") from None
        data = {
            "channels": opts["channel"],
            "recipient": {
                "email": opts["email"],
                "phone": opts["phone"],
                "name": opts["name"],
                "locale": opts["locale"],
            },
            "context": context,
            "subject": opts["subject"],
            "fallback": opts["fallback"],
        }
        if opts["template"]:
            data["template"] = opts["template"]
        if opts["message"] is not None:
            data["message"] = opts["message"]
        serializer = SendSerializer(data=data, context={"account": account})
        if not serializer.is_valid():
            raise CommandError(json.dumps(serializer.errors))
        try:
            accepted = notification_accept(
                account=account, source="command", **accept_arguments(serializer.validated_data)
            )
        except ValidationError as exc:
            raise CommandError(json.dumps(exc.message_dict)) from None
        notification = accepted.notification
        # In the order the channels were given, as the API answers (not newest first).
        for delivery in sorted(notification.deliveries.all(), key=lambda d: notification.channels.index(d.channel)):
            self.stdout.write(f"{delivery.pk} {delivery.channel} {delivery.status}")
