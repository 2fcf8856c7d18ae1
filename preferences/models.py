"""Who wants what, when: account and recipient preferences, suppression and consent.

This app imports no other app of ours (notifications depends on it). Rows about a
recipient point at `notifications.Recipient` by name only; the decision service takes
plain values (recipient ids, addresses, time zones) and reads only these tables.
"""

import datetime
import hashlib

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


def default_reminder_minutes() -> list[int]:
    return [1440, 120]


class NotificationMethod(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    BOTH = "both", "Email and SMS"


# The account toggles, per notification type (a template's template_type) and channel:
# (type, channel) -> the AccountPreference field that switches it.
TOGGLE_PREFIXES = {
    "booking_confirmation": "booking_confirmations",
    "booking_reminder": "booking_reminders",
    "booking_cancellation": "booking_cancellations",
    "booking_rescheduled": "booking_rescheduled",
    "daily_agenda": "daily_agenda",
    "follow_up": "follow_ups",
}
TOGGLE_FIELDS = {
    (kind, channel): f"{prefix}_{channel}" for kind, prefix in TOGGLE_PREFIXES.items() for channel in ("email", "sms")
}


class AccountPreference(models.Model):
    """One per account, created with the defaults on first read: what the account's
    booking notifications go out on, and when."""

    account = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference")
    booking_confirmations_email = models.BooleanField(default=True)
    booking_reminders_email = models.BooleanField(default=True)
    booking_cancellations_email = models.BooleanField(default=True)
    booking_rescheduled_email = models.BooleanField(default=True)
    daily_agenda_email = models.BooleanField(default=True)
    follow_ups_email = models.BooleanField(default=True)
    booking_confirmations_sms = models.BooleanField(default=False)
    booking_reminders_sms = models.BooleanField(default=False)
    booking_cancellations_sms = models.BooleanField(default=False)
    booking_rescheduled_sms = models.BooleanField(default=False)
    daily_agenda_sms = models.BooleanField(default=False)
    follow_ups_sms = models.BooleanField(default=False)
    reminder_minutes_before = models.JSONField(default=default_reminder_minutes)
    follow_up_minutes_after = models.PositiveIntegerField(
        default=60, help_text="Minutes after a completed booking's end that the follow-up goes out."
    )
    daily_agenda_time = models.TimeField(default=datetime.time(8, 0))
    dnd_enabled = models.BooleanField(default=False)
    dnd_start_time = models.TimeField(default=datetime.time(22, 0))
    dnd_end_time = models.TimeField(default=datetime.time(7, 0))
    exclude_weekends_reminders = models.BooleanField(default=False)
    exclude_weekends_agenda = models.BooleanField(default=True)
    preferred_notification_method = models.CharField(
        max_length=8, choices=NotificationMethod.choices, default=NotificationMethod.EMAIL
    )
    max_reminders_per_day = models.PositiveSmallIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(50)]
    )
    timezone = models.CharField(max_length=64, default="UTC")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"preferences of {self.account}"

    def channel_enabled(self, kind: str, channel: str) -> bool:
        field = TOGGLE_FIELDS.get((kind, channel))
        return True if field is None else getattr(self, field)

    def method_channels(self) -> list[str]:
        if self.preferred_notification_method == NotificationMethod.BOTH:
            return ["email", "sms"]
        return [self.preferred_notification_method]


class RecipientPreference(models.Model):
    """A recipient's own say: quiet hours in their time zone, a preferred channel, and
    opt-outs as {category, channel} pairs (either may be "*")."""

    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    recipient = models.OneToOneField("notifications.Recipient", on_delete=models.CASCADE, related_name="preference")
    preferred_channel = models.CharField(max_length=16, blank=True)
    quiet_hours_enabled = models.BooleanField(default=False)
    quiet_hours_start = models.TimeField(default=datetime.time(22, 0))
    quiet_hours_end = models.TimeField(default=datetime.time(7, 0))
    opt_outs = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"preferences of recipient {self.recipient_id}"


def address_hash(channel: str, address: str) -> str:
    """The key a suppression is found by: a SHA-256 of the normalised address, kept after
    the address itself is erased so that an erased address that said STOP stays unreachable."""
    normalised = address.strip().lower() if channel == "email" else address.strip()
    return hashlib.sha256(f"{channel}:{normalised}".encode()).hexdigest()


class SuppressionReason(models.TextChoices):
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
    BOUNCED = "bounced", "Hard bounce"
    COMPLAINED = "complained", "Spam complaint"
    STOP = "stop_keyword", "STOP keyword"
    MANUAL = "manual", "Added by hand"


class Suppression(models.Model):
    """An address on a channel that gets nothing from the account, whatever the priority."""

    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="suppressions")
    channel = models.CharField(max_length=16)
    # An email, a number, a chat webhook URL or a push token: as long as a delivery's address.
    address = models.CharField(max_length=1000, blank=True, help_text="Blank once the recipient was erased.")
    address_hash = models.CharField(max_length=64)
    reason = models.CharField(max_length=16, choices=SuppressionReason.choices)
    detail = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["account", "channel", "address_hash"], name="suppression_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.address or self.address_hash[:12]} ({self.reason})"


class ConsentMethod(models.TextChoices):
    API = "api", "API"
    ADMIN = "admin", "Admin"
    KEYWORD = "keyword", "SMS keyword"
    LINK = "link", "Unsubscribe link"
    ESP = "esp", "ESP event"


class ConsentRecord(models.Model):
    """The consent ledger: who agreed to, or withdrew, what, when and how. Appended, never
    changed; the latest record for a recipient, channel and category is in force."""

    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="consent_records")
    recipient = models.ForeignKey(
        "notifications.Recipient", on_delete=models.CASCADE, null=True, blank=True, related_name="consent_records"
    )
    address_hash = models.CharField(max_length=64, blank=True)
    channel = models.CharField(max_length=16, default="*")
    category = models.CharField(max_length=32, default="marketing")
    granted = models.BooleanField()
    method = models.CharField(max_length=16, choices=ConsentMethod.choices)
    detail = models.CharField(max_length=500, blank=True)
    recorded_at = models.DateTimeField()

    class Meta:
        ordering = ["-recorded_at", "-id"]
        indexes = [models.Index(fields=["recipient", "-recorded_at"])]

    def __str__(self) -> str:
        verb = "granted" if self.granted else "withdrew"
        return f"{verb} {self.category}/{self.channel} by {self.method}"


class DailyCount(models.Model):
    """Reminders decided for a recipient on one local day, for the daily cap. Counted when
    the decision is made (a deferred reminder counts on the day it goes)."""

    recipient = models.ForeignKey("notifications.Recipient", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["recipient", "day"], name="daily_count_unique")]

    def __str__(self) -> str:
        return f"{self.count} on {self.day}"
