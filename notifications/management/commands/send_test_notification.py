import json

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from notifications.models import Delivery
from notifications.serializers import TemplateTestSerializer
from notifications.services import notification_accept
from notifications.services.addresses import channel_addresses
from notifications.services.render import messages_render
from providers.channels import CHANNELS
from templates.selectors import template_resolve


class Command(BaseCommand):
    help = (
        "Send a test of a template to one address, filled with the template's sample data, as "
        "POST /api/v1/notifications/templates/{id}/test/ does: it goes through the same accept "
        "(preferences, suppression, provider) and is marked as a test. With --dry-run, only render "
        "and print it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--account", required=True, help="Username of the account that sends.")
        parser.add_argument("--channel", required=True, choices=list(CHANNELS), help="The channel to send on.")
        parser.add_argument(
            "--to",
            required=True,
            help="The address: an email, a phone number in E.164 form, a chat webhook URL; for push, "
            "the recipient's external id (each of its active devices is reached).",
        )
        parser.add_argument(
            "--template",
            default="booking_confirmation",
            help="Template key or id; the account's own wins over a default (default: booking_confirmation).",
        )
        parser.add_argument("--locale", default="", help="Render in this locale (e.g. es), with the usual fallback.")
        parser.add_argument("--dry-run", action="store_true", help="Render and print the message; send nothing.")

    def handle(self, *args, **opts):
        try:
            account = get_user_model().objects.get(username=opts["account"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No account named {opts['account']!r}.") from None
        template = template_resolve(account=account, reference=opts["template"])
        if template is None or template.current_version is None:
            raise CommandError(
                f"No usable template {opts['template']!r} for {account.username} "
                "(the shared defaults come with `manage.py load_default_templates`)."
            )
        serializer = TemplateTestSerializer(
            data={"channel": opts["channel"], "to": opts["to"], "locale": opts["locale"]},
            context={"account": account},
        )
        if not serializer.is_valid():
            raise CommandError(json.dumps(serializer.errors))
        recipient = serializer.validated_data["recipient"]
        context = template.current_version.sample_context
        if opts["dry_run"]:
            self._render(template, opts["channel"], recipient, context)
            return
        try:
            accepted = notification_accept(
                account=account,
                channels=[opts["channel"]],
                recipient=recipient,
                template=template,
                context=context,
                category="system",
                is_test=True,
                source="command",
            )
        except ValidationError as exc:
            raise CommandError(json.dumps(exc.message_dict)) from None
        notification = accepted.notification
        # Read again: with eager tasks (or a fast worker) the delivery may already be sent.
        deliveries = Delivery.objects.filter(notification=notification).order_by("created_at")
        statuses = ", ".join(
            f"{d.channel} {d.status}{f' ({d.error_message})' if d.error_message else ''} (delivery {d.pk})"
            for d in deliveries
        )
        self.stdout.write(f"Test notification {notification.pk} to {opts['to']}: {statuses}")

    def _render(self, template, channel: str, recipient: dict, context: dict) -> None:
        try:
            (message,) = messages_render(
                channels=[channel], recipient=recipient, template=template, context=context, subject="", message=""
            )
        except ValidationError as exc:
            raise CommandError(json.dumps(exc.message_dict)) from None
        version = template.current_version
        addresses = ", ".join(channel_addresses(recipient, channel))
        if CHANNELS[channel].device_addressed:  # tokens are the devices' secrets: counted, not shown
            addresses = f"{len(channel_addresses(recipient, channel))} device(s) of {recipient['external_id']}"
        self.stdout.write(
            f"Template {template.key} v{version.number}, {channel} to {addresses} (locale {message.locale or 'default'}):"
        )
        if message.subject:
            self.stdout.write(f"Subject: {message.subject}")
        self.stdout.write(message.body.rstrip("\n"))
        if message.options:
            self.stdout.write(f"Options: {json.dumps(message.options, sort_keys=True)}")
        if message.segments:
            self.stdout.write(f"({message.encoding}, {message.segments} segment(s))")
        self.stdout.write("Dry run: nothing was sent.")
