"""Campaigns: broadcasts to an audience through the same accept, decision and dispatch as
every other send.

An **audience** is an account's list of recipients: filled from a CSV upload (each row a
member, its extra columns kept as the member's attributes) or defined by a filter over
the recipients' fields, evaluated when the campaign starts. A **campaign** sends one
message (or A/B **variants** of it, assigned by a stable hash of the recipient) to an
audience. Fan-out walks the audience's members in id order from the campaign's `cursor`,
writing a **campaign recipient** per member, unique per campaign, in the same transaction
as the member's notification: however often fan-out is paused, resumed, killed or run
twice, no recipient is sent twice or skipped.
"""

from django.conf import settings
from django.db import models

from templates.models import Category


class AudienceKind(models.TextChoices):
    LIST = "list", "List (uploaded)"
    FILTER = "filter", "Filter over recipients"


class Audience(models.Model):
    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="audiences")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=AudienceKind.choices, default=AudienceKind.LIST)
    # A filter audience's conditions: {"tags": [...], "locale": "es", "timezone": "...",
    # "attributes": {"plan": "gold"}, "last_booking_after": ..., "last_booking_before": ...}
    filter = models.JSONField(default=dict, blank=True)
    member_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "name"], name="audience_name_unique")]

    def __str__(self) -> str:
        return self.name


class AudienceMember(models.Model):
    audience = models.ForeignKey(Audience, on_delete=models.CASCADE, related_name="members", db_index=False)
    recipient = models.ForeignKey("notifications.Recipient", on_delete=models.CASCADE, related_name="+")
    # The upload's other columns, by header: the campaign's context for this member.
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["audience", "recipient"], name="audience_member_unique"),
        ]
        # Fan-out's keyset pages: WHERE audience = %s AND id > cursor ORDER BY id.
        indexes = [models.Index(fields=["audience", "id"], name="audience_member_page_idx")]

    def __str__(self) -> str:
        return f"member {self.pk} of audience {self.audience_id}"


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SCHEDULED = "scheduled", "Scheduled"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


class Campaign(models.Model):
    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="campaigns")
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT)
    audience = models.ForeignKey(Audience, on_delete=models.PROTECT, related_name="campaigns")
    channels = models.JSONField(default=list)
    fallback = models.BooleanField(default=False)
    category = models.CharField(max_length=32, choices=Category.choices, default=Category.MARKETING)
    # Shared by every variant: the context the template is rendered with (a member's
    # attributes are laid over it).
    context = models.JSONField(default=dict, blank=True)
    scheduled_for = models.DateTimeField(null=True, blank=True)
    # Send at this time of day in each recipient's own time zone (on or after scheduled_for).
    local_send_time = models.TimeField(null=True, blank=True)
    throttle_per_minute = models.PositiveIntegerField(null=True, blank=True)
    # Fan-out's place in the audience: the last member id written.
    cursor = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Every member has its notification (or its reason for none); the campaign completes
    # when its last delivery has settled too.
    fanned_out_at = models.DateTimeField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["account", "-created_at"], name="campaign_account_idx")]

    def __str__(self) -> str:
        return self.name


class CampaignVariant(models.Model):
    """One version of the campaign's message: a template (pinned to the version current
    when the campaign was created) or a literal subject and message, sent to `split`
    per cent of the audience."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=50)
    template = models.ForeignKey(
        "templates.Template", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    template_version = models.ForeignKey(
        "templates.TemplateVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    subject = models.CharField(max_length=500, blank=True)
    message = models.TextField(blank=True)
    split = models.PositiveSmallIntegerField(default=100)  # per cent of the audience
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["campaign", "position"]
        constraints = [models.UniqueConstraint(fields=["campaign", "name"], name="campaign_variant_name_unique")]

    def __str__(self) -> str:
        return f"{self.name} ({self.split}%)"


class CampaignRecipient(models.Model):
    """A member the campaign has reached: its variant and notification, or why it was
    skipped before a notification was written. Unique per campaign: the guard that no
    recipient is sent twice."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="recipients", db_index=False)
    recipient = models.ForeignKey("notifications.Recipient", on_delete=models.CASCADE, related_name="+")
    variant = models.ForeignKey(CampaignVariant, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    notification = models.OneToOneField(
        "notifications.Notification",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="campaign_recipient",
    )
    skipped_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "recipient"], name="campaign_recipient_unique"),
        ]
        indexes = [models.Index(fields=["campaign", "id"], name="campaign_recipient_page_idx")]

    def __str__(self) -> str:
        return f"recipient {self.recipient_id} of campaign {self.campaign_id}"
