import zoneinfo

from django.conf import settings
from rest_framework import serializers

from templates.models import Category, Channel
from templates.selectors import template_resolve

from .models import Delivery, DeliveryAttempt, DeliveryEvent, Priority
from .services import ADDRESS_FIELD

E164 = r"^\+[1-9]\d{6,14}$"
LOCALE = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"


class RecipientSerializer(serializers.Serializer):
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    phone = serializers.RegexField(
        E164,
        required=False,
        allow_blank=True,
        default="",
        error_messages={"invalid": "Enter the number in E.164 form, e.g. +14155550123."},
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
        if not attrs.get("email") and not attrs.get("phone"):
            raise serializers.ValidationError({"email": ["Give an email address or a phone number."]})
        return attrs


class SendSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices, required=False)
    channels = serializers.ListField(
        child=serializers.ChoiceField(choices=Channel.choices), required=False, min_length=1, max_length=len(Channel)
    )
    recipient = RecipientSerializer()
    template = serializers.CharField(max_length=100, required=False)
    context = serializers.DictField(required=False, default=dict)
    subject = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    message = serializers.CharField(required=False, trim_whitespace=False)
    scheduled_for = serializers.DateTimeField(required=False, allow_null=True, default=None)
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)
    category = serializers.ChoiceField(choices=Category.choices, required=False)

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
        missing = {
            ADDRESS_FIELD[channel]: [f"Required to send on the {channel} channel."]
            for channel in channels
            if not attrs["recipient"].get(ADDRESS_FIELD[channel])
        }
        if missing:
            raise serializers.ValidationError({"recipient": missing})
        if "template" in attrs and "message" in attrs:
            raise serializers.ValidationError({"template": ["Give a template or a message, not both."]})
        if "template" not in attrs and "message" not in attrs:
            raise serializers.ValidationError({"template": ["Give a template (id or key) or a subject and message."]})
        return attrs


def accept_arguments(validated: dict) -> dict:
    """SendSerializer's output as notification_accept's keyword arguments."""
    return {
        "channels": validated["channels"],
        "recipient": validated["recipient"],
        "template": validated.get("template"),
        "context": validated["context"],
        "subject": validated["subject"],
        "message": validated.get("message", ""),
        "scheduled_for": validated["scheduled_for"],
        "priority": validated["priority"],
        "category": validated.get("category"),
    }


class DeliveryBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Delivery
        fields = ["id", "channel", "to", "status", "encoding", "segments"]


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
    template = serializers.CharField(source="notification.template.key", default=None, read_only=True)
    template_version = serializers.IntegerField(
        source="notification.template_version.number", default=None, read_only=True
    )
    recipient = serializers.SerializerMethodField()
    priority = serializers.CharField(source="notification.priority", read_only=True)
    category = serializers.CharField(source="notification.category", read_only=True)

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
        fields = [*DeliveryLogSerializer.Meta.fields, "body", "html_body", "attempts", "events"]


class AcceptedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    scheduled_for = serializers.DateTimeField(allow_null=True)
    deliveries = DeliveryBriefSerializer(many=True)


class TemplateTestSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices)
    to = serializers.CharField(max_length=254)
    locale = serializers.RegexField(LOCALE, max_length=16, required=False, allow_blank=True, default="")
    context = serializers.DictField(required=False, default=dict)

    def validate(self, attrs):
        field = "email" if attrs["channel"] == Channel.EMAIL else "phone"
        recipient = RecipientSerializer(data={field: attrs["to"], "locale": attrs["locale"]})
        if not recipient.is_valid():
            raise serializers.ValidationError({"to": recipient.errors.get(field, ["Invalid address."])})
        attrs["recipient"] = recipient.validated_data
        return attrs
