import zoneinfo

from django.conf import settings
from rest_framework import serializers

from accounts.inputs import DateTimeField, JSONObjectField
from providers.channels import CHANNELS, E164
from providers.urlguard import UnsafeTarget, check_url
from templates.models import Category, Channel
from templates.selectors import template_resolve
from templates.services import options_clean

from .models import Delivery, DeliveryAttempt, DeliveryEvent, Priority
from .receipts import AcceptedSerializer, BatchAcceptedSerializer, DeliveryBriefSerializer
from .services import Item
from .services.addresses import missing_addresses, reachable_channels, recipient_addresses_fill
from .services.webhooks import registered_urls

__all__ = ["AcceptedSerializer", "BatchAcceptedSerializer", "DeliveryBriefSerializer"]

LOCALE = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"


class OutboundURLField(serializers.URLField):
    """A URL Beacon will post to: http or https, to a public address only (the outbound
    URL guard, providers.urlguard; BEACON_ALLOW_PRIVATE_TARGETS lifts the address part)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 1000)
        super().__init__(**kwargs)

    def run_validation(self, data=serializers.empty):
        value = super().run_validation(data)
        if value:
            try:
                check_url(value)
            except UnsafeTarget as exc:
                raise serializers.ValidationError(exc.message) from None
        return value


class RecipientSerializer(serializers.Serializer):
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    phone = serializers.RegexField(
        E164,
        required=False,
        allow_blank=True,
        default="",
        error_messages={"invalid": "Enter the number in E.164 form, e.g. +14155550123."},
    )
    slack_webhook_url = OutboundURLField(required=False, allow_blank=True, default="")
    teams_webhook_url = OutboundURLField(required=False, allow_blank=True, default="")
    discord_webhook_url = OutboundURLField(required=False, allow_blank=True, default="")
    webhook_url = OutboundURLField(
        required=False,
        allow_blank=True,
        default="",
        help_text="The webhook channel's target: one of the account's enabled endpoints (/api/v1/webhooks/).",
    )
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    external_id = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    timezone = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    locale = serializers.RegexField(LOCALE, max_length=16, required=False, allow_blank=True, default="")

    def validate_timezone(self, value):
        if value and value not in zoneinfo.available_timezones():
            raise serializers.ValidationError(f"Unknown time zone {value!r}; use an IANA name such as Europe/Madrid.")
        return value

    def validate(self, attrs):
        # Who the recipient is: an email address or a phone number, or for a recipient
        # reached only by chat, an external id (whose stored webhook URL may serve).
        if not attrs.get("email") and not attrs.get("phone"):
            if not attrs.get("external_id"):
                raise serializers.ValidationError(
                    {"email": ["Give an email address or a phone number (or an external id and a chat webhook URL)."]}
                )
        return attrs


def unreachable(channels: list[str], recipient: dict, fallback: bool) -> dict[str, list[str]]:
    """The recipient fields a send lacks (as missing_addresses): with fallback, only when
    no channel has an address (a channel without one is recorded as skipped)."""
    if fallback and reachable_channels(channels, recipient):
        return {}
    return missing_addresses(channels, recipient)


def unregistered_webhooks(account, channels: list[str], recipients: list[dict]) -> dict[str, dict]:
    """By item index, the webhook URLs that are not one of the account's enabled webhook
    endpoints (the webhook channel posts only to those, signed with their secrets)."""
    if "webhook" not in channels:
        return {}
    urls = {item["webhook_url"] for item in recipients if item.get("webhook_url")}
    known = registered_urls(account=account, urls=urls) if urls else set()
    return {
        str(index): {
            "webhook_url": ["Not one of the account's enabled webhook endpoints; register it at /api/v1/webhooks/."]
        }
        for index, item in enumerate(recipients)
        if item.get("webhook_url") and item["webhook_url"] not in known
    }


class _MessageSerializer(serializers.Serializer):
    """What a send and a batch send share: channels, content, timing and kind."""

    channel = serializers.ChoiceField(choices=Channel.choices, required=False)
    channels = serializers.ListField(
        child=serializers.ChoiceField(choices=Channel.choices), required=False, min_length=1, max_length=len(Channel)
    )
    template = serializers.CharField(max_length=100, required=False)
    subject = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    message = serializers.CharField(required=False, trim_whitespace=False)
    scheduled_for = DateTimeField(required=False, allow_null=True, default=None)
    fallback = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Try the channels in order: each is used only when the recipient could not be reached on "
        "the ones before it (no address, suppressed or opted out, or the delivery failed). Needs two channels "
        "or more. Without it, every channel is sent.",
    )
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)
    category = serializers.ChoiceField(choices=Category.choices, required=False)
    push = JSONObjectField(
        required=False,
        default=dict,
        help_text="Push options (image_url, action_url, data, silent, android, apns, webpush); "
        "with a template they go over the template's, data key by key.",
    )

    def validate_push(self, value):
        cleaned, problems = options_clean(CHANNELS["push"], value)
        if problems:
            raise serializers.ValidationError(problems)
        return cleaned

    def validate_message(self, value):
        if len(value) > settings.BEACON_MAX_BODY_CHARS:
            raise serializers.ValidationError(
                f"Ensure this field has no more than {settings.BEACON_MAX_BODY_CHARS} characters."
            )
        return value

    def validate_template(self, value):
        template = template_resolve(account=self.context["account"], reference=value)
        if template is None or template.current_version_id is None:
            raise serializers.ValidationError(f"No active template with id or key {value!r}.")
        return template

    def validate(self, attrs):
        if "channel" in attrs and "channels" in attrs:
            raise serializers.ValidationError({"channels": ["Give channel or channels, not both."]})
        channels = attrs.pop("channels", None) or ([attrs.pop("channel")] if "channel" in attrs else None)
        if not channels:
            raise serializers.ValidationError({"channel": ["This field is required."]})
        if len(set(channels)) != len(channels):
            raise serializers.ValidationError({"channels": ["A channel may appear only once."]})
        attrs["channels"] = channels
        if attrs.get("fallback") and len(channels) < 2:
            raise serializers.ValidationError(
                {"fallback": ["Fallback tries the channels in order: give at least two channels."]}
            )
        if attrs.get("push") and "push" not in channels:
            raise serializers.ValidationError({"push": ["Push options need the push channel."]})
        self.validate_recipients_for(attrs)
        if "template" in attrs and "message" in attrs:
            raise serializers.ValidationError({"template": ["Give a template or a message, not both."]})
        if "template" not in attrs and "message" not in attrs:
            raise serializers.ValidationError({"template": ["Give a template (id or key) or a subject and message."]})
        return attrs

    def validate_recipients_for(self, attrs) -> None:  # pragma: no cover - each form says
        raise NotImplementedError


class SendSerializer(_MessageSerializer):
    recipient = RecipientSerializer()
    context = JSONObjectField(required=False, default=dict)

    def validate_recipients_for(self, attrs) -> None:
        # An address the request leaves out may be stored on the recipient (by external id).
        (attrs["recipient"],) = recipient_addresses_fill(
            account=self.context["account"], channels=attrs["channels"], details=[attrs["recipient"]]
        )
        missing = unreachable(attrs["channels"], attrs["recipient"], attrs["fallback"]) or unregistered_webhooks(
            self.context["account"], attrs["channels"], [attrs["recipient"]]
        ).get("0")
        if missing:
            raise serializers.ValidationError({"recipient": missing})


class IndexedListSerializer(serializers.ListSerializer):
    """A list validated by one child serializer (no copy per item), its errors keyed by the
    index of each bad item, and its length bounded by BEACON_BATCH_MAX_RECIPIENTS."""

    def to_internal_value(self, data):
        limit = settings.BEACON_BATCH_MAX_RECIPIENTS
        if isinstance(data, list) and len(data) > limit:
            raise serializers.ValidationError(f"At most {limit} recipients per request; this one has {len(data)}.")
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if isinstance(exc.detail, list) and len(exc.detail) == len(data):
                raise serializers.ValidationError(
                    {str(index): error for index, error in enumerate(exc.detail) if error}
                ) from None
            raise


class BatchRecipientSerializer(RecipientSerializer):
    context = JSONObjectField(required=False, default=dict)

    class Meta:
        list_serializer_class = IndexedListSerializer


class BatchSendSerializer(_MessageSerializer):
    """One message to many recipients, each with its own context. Refused as a whole: the
    errors are keyed by the index of each bad item."""

    recipients = BatchRecipientSerializer(many=True, allow_empty=False)

    def validate_recipients_for(self, attrs) -> None:
        attrs["recipients"] = recipient_addresses_fill(
            account=self.context["account"], channels=attrs["channels"], details=attrs["recipients"]
        )
        errors = unregistered_webhooks(self.context["account"], attrs["channels"], attrs["recipients"])
        for index, item in enumerate(attrs["recipients"]):
            missing = unreachable(attrs["channels"], item, attrs["fallback"])
            if missing:
                errors[str(index)] = missing
        if errors:
            raise serializers.ValidationError({"recipients": errors})


def accept_arguments(validated: dict) -> dict:
    """SendSerializer's output as notification_accept's keyword arguments."""
    return {
        "channels": validated["channels"],
        "recipient": validated["recipient"],
        "template": validated.get("template"),
        "context": validated["context"],
        "subject": validated["subject"],
        "message": validated.get("message", ""),
        "options": validated["push"],
        "scheduled_for": validated["scheduled_for"],
        "priority": validated["priority"],
        "category": validated.get("category"),
        "fallback": validated["fallback"],
    }


def batch_arguments(validated: dict) -> dict:
    """BatchSendSerializer's output as notifications_accept_batch's keyword arguments."""
    return {
        "channels": validated["channels"],
        "items": [
            Item(recipient={k: v for k, v in item.items() if k != "context"}, context=item["context"])
            for item in validated["recipients"]
        ],
        "template": validated.get("template"),
        "subject": validated["subject"],
        "message": validated.get("message", ""),
        "options": validated["push"],
        "scheduled_for": validated["scheduled_for"],
        "priority": validated["priority"],
        "category": validated.get("category"),
        "fallback": validated["fallback"],
    }


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = [
            "number",
            "provider",
            "outcome",
            "started_at",
            "finished_at",
            "duration_ms",
            "response_code",
            "provider_message_id",
            "error",
            "retry_after_seconds",
        ]


class DeliveryEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryEvent
        fields = ["from_status", "status", "source", "detail", "occurred_at", "created_at"]


class DeliveryLogSerializer(serializers.ModelSerializer):
    notification = serializers.UUIDField(source="notification_id", read_only=True)
    template = serializers.CharField(source="notification.template.key", default=None, read_only=True, allow_null=True)
    template_version = serializers.IntegerField(
        source="notification.template_version.number", default=None, read_only=True, allow_null=True
    )
    recipient = serializers.SerializerMethodField()
    priority = serializers.CharField(source="notification.priority", read_only=True)
    category = serializers.CharField(source="notification.category", read_only=True)
    fallback = serializers.BooleanField(
        source="notification.fallback",
        read_only=True,
        help_text="Whether the notification tries its channels in order (see fallback_rank).",
    )

    class Meta:
        model = Delivery
        fields = [
            "id",
            "notification",
            "channel",
            "to",
            "status",
            "subject",
            "template",
            "template_version",
            "recipient",
            "priority",
            "category",
            "fallback",
            "fallback_rank",
            "provider",
            "provider_message_id",
            "attempt_count",
            "max_attempts",
            "next_attempt_at",
            "error_code",
            "error_message",
            "encoding",
            "segments",
            "resent_from",
            "created_at",
            "sent_at",
            "delivered_at",
            "opened_at",
            "clicked_at",
            "failed_at",
        ]

    def get_recipient(self, delivery) -> dict:
        recipient = delivery.notification.recipient
        return {
            "id": recipient.pk,
            "name": recipient.name,
            "email": recipient.email,
            "phone": recipient.phone,
            "external_id": recipient.external_id,
        }


class DeliveryDetailSerializer(DeliveryLogSerializer):
    attempts = DeliveryAttemptSerializer(many=True, read_only=True)
    events = DeliveryEventSerializer(many=True, read_only=True)

    class Meta(DeliveryLogSerializer.Meta):
        fields = [*DeliveryLogSerializer.Meta.fields, "body", "html_body", "options", "attempts", "events"]


class TemplateTestSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices)
    to = serializers.CharField(
        max_length=1000,
        help_text="The address: an email, an E.164 number, a chat webhook URL; for push, the "
        "recipient's external id (its active devices are reached).",
    )
    locale = serializers.RegexField(LOCALE, max_length=16, required=False, allow_blank=True, default="")
    context = JSONObjectField(required=False, default=dict)

    def validate(self, attrs):
        channel = attrs["channel"]
        spec = CHANNELS[channel]
        field = "external_id" if spec.device_addressed else spec.address_field
        recipient = RecipientSerializer(data={field: attrs["to"], "locale": attrs["locale"]})
        if not recipient.is_valid():
            raise serializers.ValidationError({"to": recipient.errors.get(field, ["Invalid address."])})
        (attrs["recipient"],) = recipient_addresses_fill(
            account=self.context["account"], channels=[channel], details=[recipient.validated_data]
        )
        missing = missing_addresses([channel], attrs["recipient"]) or unregistered_webhooks(
            self.context["account"], [channel], [attrs["recipient"]]
        ).get("0")
        if missing:
            raise serializers.ValidationError(
                {"to": [problem for problems in missing.values() for problem in problems]}
            )
        return attrs
