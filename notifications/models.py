import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from templates.models import Category, Channel


class DeliveryStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    DELIVERED = "delivered", "Delivered"
    OPENED = "opened", "Opened"
    CLICKED = "clicked", "Clicked"
    FAILED = "failed", "Failed"
    UNDELIVERED = "undelivered", "Undelivered"
    BOUNCED = "bounced", "Bounced"
    CANCELLED = "cancelled", "Cancelled"
    SUPPRESSED = "suppressed", "Suppressed"
    EXPIRED = "expired", "Expired"
    # A fallback channel's delivery, rendered and decided at accept, held until the
    # channels before it have failed (then queued) or one has been sent (then cancelled).
    STANDBY = "standby", "Standby"
    # A campaign's delivery held while its campaign is paused (queued again on resume).
    PAUSED = "paused", "Paused"


# Progress only moves up this order; a final status never changes. A standby delivery
# comes before all of them: it is released (queued or scheduled) or it ends cancelled.
PROGRESS_RANK = {
    DeliveryStatus.STANDBY: -1,
    DeliveryStatus.PAUSED: 0,
    DeliveryStatus.SCHEDULED: 0,
    DeliveryStatus.QUEUED: 1,
    DeliveryStatus.SENDING: 2,
    DeliveryStatus.SENT: 3,
    DeliveryStatus.DELIVERED: 4,
    DeliveryStatus.OPENED: 5,
    DeliveryStatus.CLICKED: 6,
}
FINAL_STATUSES = frozenset(
    {
        DeliveryStatus.FAILED,
        DeliveryStatus.UNDELIVERED,
        DeliveryStatus.BOUNCED,
        DeliveryStatus.CANCELLED,
        DeliveryStatus.SUPPRESSED,
        DeliveryStatus.EXPIRED,
    }
)
RESENDABLE_STATUSES = frozenset({DeliveryStatus.FAILED, DeliveryStatus.UNDELIVERED, DeliveryStatus.EXPIRED})
# Not yet claimed by a worker: a standby delivery has not even been released.
CANCELLABLE_STATUSES = frozenset(
    {DeliveryStatus.STANDBY, DeliveryStatus.PAUSED, DeliveryStatus.SCHEDULED, DeliveryStatus.QUEUED}
)


class Priority(models.TextChoices):
    LOW = "low", "Low"
    NORMAL = "normal", "Normal"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


class Recipient(models.Model):
    """Someone an account sends to; matched by external_id, else by email, else by phone."""

    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="recipients")
    external_id = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=16, blank=True, help_text="E.164")
    # Chat channels' incoming webhooks (as Knock and Novu keep chat channel data per recipient).
    slack_webhook_url = models.URLField(max_length=1000, blank=True)
    teams_webhook_url = models.URLField(max_length=1000, blank=True)
    discord_webhook_url = models.URLField(max_length=1000, blank=True)
    # The webhook channel's target: one of the account's registered webhook endpoints.
    webhook_url = models.URLField(max_length=1000, blank=True)
    name = models.CharField(max_length=200, blank=True)
    timezone = models.CharField(max_length=64, blank=True)
    locale = models.CharField(max_length=16, blank=True)
    # What campaigns' audiences filter on: tags, and the account's own attributes.
    tags = models.JSONField(default=list, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "external_id"], condition=~Q(external_id=""), name="recipient_external_id_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["account", "email"]),
            models.Index(fields=["account", "phone"]),
            # An inbound STOP names a phone, not an account: every account that has it is found.
            models.Index(fields=["phone"], condition=~Q(phone=""), name="recipient_phone_idx"),
        ]

    def __str__(self) -> str:
        return self.name or self.email or self.phone or self.external_id


class Notification(models.Model):
    """The intent: one message for one recipient, delivered on one or more channels."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by (account, -created_at) below, which also serves lookups by account alone.
    account = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications", db_index=False
    )
    recipient = models.ForeignKey(Recipient, on_delete=models.PROTECT, related_name="notifications")
    template = models.ForeignKey(
        "templates.Template", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    template_version = models.ForeignKey(
        "templates.TemplateVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    context = models.JSONField(default=dict, blank=True)
    channels = models.JSONField(default=list)
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.NORMAL)
    category = models.CharField(max_length=32, choices=Category.choices, default=Category.TRANSACTIONAL)
    scheduled_for = models.DateTimeField(null=True, blank=True)
    is_test = models.BooleanField(default=False)
    # The channels are tried in order, each only when those before it could not reach
    # the recipient, rather than all at once.
    fallback = models.BooleanField(default=False)
    booking = models.ForeignKey(
        "Booking", on_delete=models.SET_NULL, null=True, blank=True, related_name="notifications", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["account", "-created_at"]),
            models.Index(fields=["booking"], condition=Q(booking__isnull=False), name="notification_booking_idx"),
        ]

    def __str__(self) -> str:
        return str(self.id)


class Delivery(models.Model):
    """One channel's attempt to get a notification to its recipient, with the rendered text."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # A delivery row is rewritten twice on its way out (claimed, then sent), and every index
    # is written each time: so only what the hot queries need is indexed (see Meta).
    account = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries")
    resent_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="resends", db_index=False
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    to = models.CharField(max_length=1000)  # an address, a number, or a chat webhook URL
    locale = models.CharField(max_length=16, blank=True)
    subject = models.CharField(max_length=500, blank=True)
    body = models.TextField()
    html_body = models.TextField(blank=True)
    options = models.JSONField(default=dict, blank=True)  # the channel's structured content (push)
    encoding = models.CharField(max_length=8, blank=True)
    segments = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED)
    provider = models.CharField(max_length=32, blank=True)
    provider_message_id = models.CharField(max_length=200, blank=True)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=1)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When its dispatch task was last published; null while it waits in the database for
    # the sweep (a scheduled send, a long retry backoff).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    cost = models.CharField(max_length=32, blank=True)
    # The providers of the channel's chain that failed this delivery in the current round
    # (record ids, or "kind" for the platform's): the next attempt goes to the next one.
    providers_tried = models.JSONField(default=list, blank=True)
    # Its channel's place in a fallback notification's order (None: not a fallback send).
    fallback_rank = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["account", "-created_at"]),
            # The sweep's: what waits for its time (scheduled, queued), and what a worker
            # holds. The NOT NULL terms keep the planner from taking them for a claim by id
            # ("status = 'queued'" alone does not imply them; the sweep's "<= now" does).
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=["scheduled", "queued"], next_attempt_at__isnull=False),
                name="delivery_waiting_idx",
            ),
            models.Index(
                fields=["claimed_at"],
                condition=Q(status="sending", claimed_at__isnull=False),
                name="delivery_sending_idx",
            ),
            models.Index(
                fields=["provider_message_id"], condition=~Q(provider_message_id=""), name="delivery_provider_msg_idx"
            ),
            models.Index(
                fields=["resent_from"], condition=Q(resent_from__isnull=False), name="delivery_resent_from_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.to} ({self.status})"


class DeliveryAttempt(models.Model):
    """One call to a provider and what came of it."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCESS = "success", "Success"
        RETRYABLE = "retryable", "Retryable error"
        PERMANENT = "permanent", "Permanent error"

    # Looked up by the (delivery, number) unique index.
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts", db_index=False)
    number = models.PositiveSmallIntegerField()
    provider = models.CharField(max_length=32)
    # The account's provider record it went through (none: the platform's, from settings).
    provider_config = models.ForeignKey(
        "providers.ProviderConfig", on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.PENDING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    response_code = models.IntegerField(null=True, blank=True)
    provider_message_id = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    retry_after_seconds = models.FloatField(null=True, blank=True)
    # What this attempt cost, when known (the provider record's price, per SMS segment).
    cost = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="attempt_number_unique")]

    def __str__(self) -> str:
        return f"attempt {self.number} ({self.outcome})"


class DeliveryEvent(models.Model):
    """An appended record of a status change: the audit trail and the source of analytics."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=16, choices=DeliveryStatus.choices, blank=True)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices)
    source = models.CharField(max_length=32)
    detail = models.CharField(max_length=500, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["delivery", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.from_status or '-'} -> {self.status} ({self.source})"


class IdempotencyKey(models.Model):
    """The first answer to a send request carrying this key, returned to its retries."""

    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, null=True, related_name="+")
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "key"], name="idempotency_key_unique")]

    def __str__(self) -> str:
        return self.key


class Heartbeat(models.Model):
    """When a periodic job last ran (the sweep), for /health/ to tell a live beat from a
    stopped one."""

    name = models.CharField(max_length=50, primary_key=True)
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} at {self.at:%Y-%m-%d %H:%M:%S}"


class BookingStatus(models.TextChoices):
    CONFIRMED = "confirmed", "Confirmed"
    CANCELLED = "cancelled", "Cancelled"
    COMPLETED = "completed", "Completed"


class Booking(models.Model):
    """A booking as the sender's lifecycle events describe it; its fields are the template
    context of every message about it, read when each message goes out."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bookings")
    external_id = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=BookingStatus.choices, default=BookingStatus.CONFIRMED)
    start_time = models.DateTimeField()
    end_time = models.DateTimeField()
    event_name = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="The booking as the last event gave it.")
    invitee = models.ForeignKey(Recipient, on_delete=models.SET_NULL, null=True, blank=True, related_name="bookings")
    last_event_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-start_time"]
        constraints = [models.UniqueConstraint(fields=["account", "external_id"], name="booking_external_id_unique")]
        indexes = [models.Index(fields=["account", "start_time"])]

    def __str__(self) -> str:
        return f"{self.event_name or 'booking'} {self.external_id}"


class BookingEvent(models.Model):
    """A lifecycle event as received: the same event twice (by id, else by type, booking
    and start time) is found by its key and changes nothing."""

    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    booking = models.ForeignKey(Booking, on_delete=models.CASCADE, related_name="events")
    key = models.CharField(max_length=300)
    type = models.CharField(max_length=32)
    occurred_at = models.DateTimeField()
    payload = models.JSONField(default=dict)
    result = models.JSONField(default=dict)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["booking", "occurred_at", "id"]
        constraints = [models.UniqueConstraint(fields=["account", "key"], name="booking_event_key_unique")]

    def __str__(self) -> str:
        return f"{self.type} at {self.occurred_at:%Y-%m-%d %H:%M}"


class ScheduleType(models.TextChoices):
    SEND = "send", "Scheduled send"
    REMINDER = "reminder", "Reminder"
    FOLLOW_UP = "follow_up", "Follow-up"


class ScheduleStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    PROCESSING = "processing", "Processing"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


class NotificationSchedule(models.Model):
    """One message due at a time. A scheduled send's delivery is written (and rendered) at
    accept and waits here; a booking's reminder or follow-up is rendered from the booking
    as it stands when it falls due."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="schedules", db_index=False
    )
    schedule_type = models.CharField(max_length=16, choices=ScheduleType.choices)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="schedules")
    booking = models.ForeignKey(Booking, on_delete=models.CASCADE, null=True, blank=True, related_name="schedules")
    template = models.ForeignKey(
        "templates.Template", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    minutes_before = models.PositiveIntegerField(null=True, blank=True)
    context = models.JSONField(default=dict, blank=True, help_text="Template context; a booking's fields go over it.")
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.NORMAL)
    category = models.CharField(max_length=32, choices=Category.choices, default=Category.TRANSACTIONAL)
    scheduled_for = models.DateTimeField()
    status = models.CharField(max_length=16, choices=ScheduleStatus.choices, default=ScheduleStatus.SCHEDULED)
    notification = models.ForeignKey(
        Notification, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    delivery = models.ForeignKey(
        Delivery, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scheduled_for"]
        indexes = [
            models.Index(fields=["account", "scheduled_for"]),
            # The due scan's: only what still waits is in it, so a million sent rows cost nothing.
            models.Index(
                fields=["scheduled_for"],
                condition=Q(status="scheduled", delivery__isnull=True),
                name="schedule_due_idx",
            ),
            models.Index(
                fields=["claimed_at"],
                condition=Q(status="processing", claimed_at__isnull=False),
                name="schedule_claimed_idx",
            ),
            models.Index(fields=["delivery"], condition=Q(delivery__isnull=False), name="schedule_delivery_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.schedule_type} {self.channel} at {self.scheduled_for:%Y-%m-%d %H:%M} ({self.status})"


class FailureAlert(models.Model):
    """An account's channel whose failure rate crossed the threshold in the last watch;
    replaced by each watch, shown on /health/."""

    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=16)
    failed = models.PositiveIntegerField()
    total = models.PositiveIntegerField()
    rate = models.FloatField()
    window_minutes = models.PositiveIntegerField()
    detected_at = models.DateTimeField()

    class Meta:
        ordering = ["-rate"]

    def __str__(self) -> str:
        return f"{self.channel}: {self.rate:.0%} failed"


class DevicePlatform(models.TextChoices):
    IOS = "ios", "iOS"
    ANDROID = "android", "Android"
    WEB = "web", "Web"


class Device(models.Model):
    """A recipient's push target: an FCM registration token (iOS, Android) or a browser's
    Web Push subscription (its endpoint as the token, its keys in `subscription`).
    Registering the same token again is the same device; a provider's "unregistered"
    answer deactivates it."""

    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="devices")
    platform = models.CharField(max_length=8, choices=DevicePlatform.choices)
    token = models.TextField()
    # Found by (account, token_hash): a token may be longer than an index entry allows.
    token_hash = models.CharField(max_length=64)
    subscription = models.JSONField(default=dict, blank=True, help_text="Web Push keys (p256dh, auth).")
    active = models.BooleanField(default=True)
    last_seen_at = models.DateTimeField()
    deactivated_at = models.DateTimeField(null=True, blank=True)
    deactivation_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-last_seen_at"]
        constraints = [models.UniqueConstraint(fields=["account", "token_hash"], name="device_token_unique")]
        indexes = [models.Index(fields=["recipient"], condition=Q(active=True), name="device_active_idx")]

    def __str__(self) -> str:
        return f"{self.platform} device …{self.token[-8:]} ({'active' if self.active else 'inactive'})"


class InboxItem(models.Model):
    """An in-app delivery as the recipient's inbox shows it. Its id orders the inbox and
    is the stream's event id (Last-Event-ID resumes after it)."""

    id = models.BigAutoField(primary_key=True)
    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="inbox")
    delivery = models.OneToOneField(Delivery, on_delete=models.CASCADE, related_name="inbox_item")
    category = models.CharField(max_length=16, choices=Category.choices, default=Category.TRANSACTIONAL)
    title = models.CharField(max_length=500, blank=True)
    body = models.TextField()
    action_url = models.CharField(max_length=1000, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    read_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["recipient", "-id"], name="inbox_recipient_idx"),
            models.Index(
                fields=["recipient"],
                condition=Q(read_at__isnull=True, archived_at__isnull=True),
                name="inbox_unread_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"inbox item {self.pk} ({'read' if self.read_at else 'unread'})"


class WebhookEndpoint(models.Model):
    """An account's URL that hears about its deliveries' status changes (and the target of
    the webhook channel), signed per Standard Webhooks with its secret. The secrets are
    kept encrypted (config.encryption); a rotated-out one still signs for a while."""

    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=1000)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list, help_text='Event types such as "delivery.sent", or "*" for all.')
    secret = models.TextField(help_text="Encrypted.")
    previous_secret = models.TextField(blank=True, help_text="Encrypted; signs until previous_secret_expires_at.")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    # When the current run of failures began (null while it succeeds).
    failing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"webhook {self.pk} ({'enabled' if self.enabled else 'disabled'})"


class WebhookMessageStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookMessage(models.Model):
    """One event for one endpoint. Its id is the `webhook-id` every attempt carries."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="messages")
    event_type = models.CharField(max_length=64)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=WebhookMessageStatus.choices, default=WebhookMessageStatus.PENDING)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="webhook_message_endpoint_idx"),
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending", next_attempt_at__isnull=False),
                name="webhook_message_due_idx",
            ),
            models.Index(
                fields=["claimed_at"],
                condition=Q(status="sending", claimed_at__isnull=False),
                name="webhook_message_sending_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} to webhook {self.endpoint_id} ({self.status})"

    @property
    def webhook_id(self) -> str:
        return f"msg_{self.pk.hex}"


class WebhookAttempt(models.Model):
    """One POST of a message and what came of it."""

    message = models.ForeignKey(WebhookMessage, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.CharField(max_length=1000, blank=True)
    error = models.CharField(max_length=500, blank=True)
    succeeded = models.BooleanField(default=False)

    class Meta:
        ordering = ["message", "number"]
        constraints = [models.UniqueConstraint(fields=["message", "number"], name="webhook_attempt_unique")]

    def __str__(self) -> str:
        return f"attempt {self.number} ({self.response_status or self.error or '-'})"
