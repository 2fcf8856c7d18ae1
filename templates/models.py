import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from providers.channels import CHANNELS

# Channels come from the channel spec (providers/channels.py): Channel.EMAIL, Channel.SMS, ...
Channel = models.TextChoices("Channel", [(spec.name.upper(), (spec.name, spec.label)) for spec in CHANNELS.values()])


class TemplateType(models.TextChoices):
    BOOKING_CONFIRMATION = "booking_confirmation", "Booking confirmation"
    BOOKING_REMINDER = "booking_reminder", "Booking reminder"
    BOOKING_CANCELLATION = "booking_cancellation", "Booking cancellation"
    BOOKING_RESCHEDULED = "booking_rescheduled", "Booking rescheduled"
    FOLLOW_UP = "follow_up", "Follow-up"
    DAILY_AGENDA = "daily_agenda", "Daily agenda"
    CUSTOM = "custom", "Custom"


class Category(models.TextChoices):
    TRANSACTIONAL = "transactional", "Transactional"
    MARKETING = "marketing", "Marketing"
    SYSTEM = "system", "System"


class Template(models.Model):
    """A named message. Its content lives in immutable versions; `current_version` is live.

    A template without an account is a system default: every account can use it by key,
    and an account's own template with the same key takes precedence.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="templates"
    )
    key = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    template_type = models.CharField(max_length=32, choices=TemplateType.choices, default=TemplateType.CUSTOM)
    category = models.CharField(max_length=32, choices=Category.choices, default=Category.TRANSACTIONAL)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    current_version = models.ForeignKey(
        "TemplateVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.UniqueConstraint(fields=["account", "key"], name="template_key_unique_per_account"),
            models.UniqueConstraint(
                fields=["key"], condition=Q(account__isnull=True), name="template_key_unique_system"
            ),
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def is_system(self) -> bool:
        return self.account_id is None


class TemplateVersion(models.Model):
    """One immutable state of a template: its placeholders and its content per channel/locale."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    template = models.ForeignKey(Template, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    required_placeholders = models.JSONField(default=list, blank=True)
    defaults = models.JSONField(default=dict, blank=True, help_text="Fallbacks for optional placeholders.")
    sample_context = models.JSONField(default=dict, blank=True, help_text="Data used by previews and tests.")
    note = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["template", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["template", "number"], name="template_version_number_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.template.key} v{self.number}"


class TemplateContent(models.Model):
    """The text of a version for one channel and locale ('' is the default locale)."""

    version = models.ForeignKey(TemplateVersion, on_delete=models.CASCADE, related_name="contents")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    locale = models.CharField(max_length=16, blank=True, default="")
    subject = models.CharField(max_length=500, blank=True)
    body = models.TextField()
    html_body = models.TextField(blank=True)
    # Structured content of channels that have it (push: image_url, action_url, data,
    # silent, android, apns, webpush); its texts are templates too.
    options = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["channel", "locale"]
        constraints = [
            models.UniqueConstraint(fields=["version", "channel", "locale"], name="template_content_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.channel}/{self.locale or 'default'}"
