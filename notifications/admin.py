import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from accounts.admin_scoping import AccountScopedAdmin, action_confirmation
from providers.channels import CHANNELS
from providers.urlguard import UnsafeTarget, check_url
from templates.admin import ImmutableAdmin

from .models import (
    Booking,
    BookingEvent,
    Delivery,
    DeliveryAttempt,
    DeliveryEvent,
    Device,
    FailureAlert,
    IdempotencyKey,
    InboxItem,
    Notification,
    NotificationSchedule,
    Recipient,
    ScheduleStatus,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
)
from .services import InvalidTransition, delivery_cancel, delivery_resend
from .services.schedules import schedule_cancel
from .services.webhooks import SUBSCRIBABLE, endpoint_test, endpoint_update, webhook_messages_retry_now


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None):
        return False


class DeliveryAttemptInline(ReadOnlyInline):
    model = DeliveryAttempt
    fields = (
        "number",
        "provider",
        "outcome",
        "started_at",
        "duration_ms",
        "response_code",
        "provider_message_id",
        "error",
    )


class DeliveryEventInline(ReadOnlyInline):
    model = DeliveryEvent
    fields = ("occurred_at", "from_status", "status", "source", "detail")


class DeliveryInline(ReadOnlyInline):
    model = Delivery
    fields = (
        "channel",
        "fallback_rank",
        "to",
        "status",
        "attempt_count",
        "provider_message_id",
        "error_message",
        "created_at",
    )
    ordering = ("fallback_rank", "-created_at")
    show_change_link = True


def _apply(modeladmin, request, queryset, service, verb):
    done, refused = 0, []
    for delivery in queryset:
        try:
            service(delivery=delivery, source="admin")
            done += 1
        except InvalidTransition as exc:
            refused.append(f"{delivery.pk}: {exc}")
    if done:
        modeladmin.message_user(request, f"{verb} {done} deliver{'y' if done == 1 else 'ies'}.", messages.SUCCESS)
    for line in refused[:10]:
        modeladmin.message_user(request, line, messages.WARNING)


@admin.register(Delivery)
class DeliveryAdmin(AccountScopedAdmin, admin.ModelAdmin):
    list_display = (
        "id",
        "account",
        "channel",
        "address",
        "status",
        "fallback_rank",
        "attempt_count",
        "provider",
        "created_at",
        "sent_at",
    )
    list_filter = ("status", "channel", "provider", "created_at")
    search_fields = ("=id", "to", "provider_message_id", "notification__recipient__external_id", "account__username")
    date_hierarchy = "created_at"
    list_select_related = ("account",)
    inlines = [DeliveryAttemptInline, DeliveryEventInline]
    actions = ["resend", "cancel"]

    @admin.display(description="to", ordering="to")
    def address(self, delivery):
        """The address with the recipient field it came from (the channel spec's)."""
        spec = CHANNELS[delivery.channel]
        return f"{'device' if spec.device_addressed else spec.address_field}: {delivery.to}"

    def get_readonly_fields(self, request, obj=None):
        # Status and content change only through services (actions, workers, callbacks).
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # Deliveries are the audit trail; cancel or resend instead.
        return False

    @admin.action(description="Resend selected failed deliveries")
    def resend(self, request, queryset):
        _apply(self, request, queryset, delivery_resend, "Resent")

    @admin.action(description="Cancel selected scheduled, queued or standby deliveries")
    def cancel(self, request, queryset):
        _apply(self, request, queryset, delivery_cancel, "Cancelled")


@admin.register(Notification)
class NotificationAdmin(AccountScopedAdmin, admin.ModelAdmin):
    list_display = (
        "id",
        "account",
        "recipient",
        "template",
        "channels",
        "priority",
        "category",
        "fallback",
        "scheduled_for",
        "created_at",
    )
    list_filter = ("priority", "category", "fallback", "is_test", "created_at")
    search_fields = ("=id", "recipient__email", "recipient__phone", "recipient__external_id", "template__key")
    list_select_related = ("account", "recipient", "template")
    date_hierarchy = "created_at"
    inlines = [DeliveryInline]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Recipient)
class RecipientAdmin(AccountScopedAdmin, admin.ModelAdmin):
    list_display = ("id", "account", "name", "email", "phone", "external_id", "timezone", "locale", "created_at")
    list_filter = ("locale", "timezone")
    search_fields = ("name", "email", "phone", "external_id", "account__username")
    list_select_related = ("account",)


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(AccountScopedAdmin, ImmutableAdmin):
    account_path = "delivery__account"
    list_display = ("delivery", "number", "provider", "outcome", "response_code", "duration_ms", "started_at")
    list_filter = ("outcome", "provider")
    search_fields = ("=delivery__id", "provider_message_id", "error")
    list_select_related = ("delivery",)


@admin.register(DeliveryEvent)
class DeliveryEventAdmin(AccountScopedAdmin, ImmutableAdmin):
    account_path = "delivery__account"
    list_display = ("delivery", "from_status", "status", "source", "occurred_at")
    list_filter = ("status", "source")
    search_fields = ("=delivery__id", "detail")
    list_select_related = ("delivery",)


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(AccountScopedAdmin, admin.ModelAdmin):
    list_display = ("key", "account", "notification", "response_status", "created_at")
    search_fields = ("key", "account__username")
    readonly_fields = (
        "account",
        "key",
        "request_hash",
        "notification",
        "response_status",
        "response_body",
        "created_at",
    )

    def has_add_permission(self, request):
        return False


def _change_link(obj, text=None):
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text if text is not None else obj)


@admin.register(NotificationSchedule)
class NotificationScheduleAdmin(AccountScopedAdmin, admin.ModelAdmin):
    list_display = ("scheduled_for", "schedule_type", "channel", "recipient", "booking", "status", "short_id")
    list_filter = ("status", "schedule_type", "channel")
    search_fields = ("=id", "booking__external_id", "recipient__email", "recipient__phone")
    date_hierarchy = "scheduled_for"
    list_select_related = ("recipient", "booking")
    actions = ["cancel_schedules"]

    @admin.display(description="id")
    def short_id(self, schedule):
        return str(schedule.pk)[:8]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        # Schedules come from sends and bookings; they are cancelled, never edited by hand.
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_cancel_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.{get_permission_codename('change', self.opts)}")

    @admin.action(description="Cancel selected schedules", permissions=["cancel"])
    def cancel_schedules(self, request, queryset):
        schedules = list(queryset.select_related("recipient", "booking"))
        page = action_confirmation(
            self,
            request,
            schedules,
            action="cancel_schedules",
            heading="Cancel schedules",
            question="Are you sure you want to cancel these schedules? A cancelled schedule is never sent; "
            "only those still scheduled can be cancelled.",
            confirm="Yes, cancel them",
            describe=lambda s: (
                f"{s.get_schedule_type_display()} by {s.get_channel_display()} to {s.recipient} at {s.scheduled_for}"
                + (f" for {s.booking}" if s.booking else "")
                + f": {s.get_status_display()}"
            ),
        )
        if page is not None:
            return page
        cancelled, refused = 0, []
        for schedule in schedules:
            try:
                schedule_cancel(schedule=schedule, source="admin")
                cancelled += 1
            except InvalidTransition as exc:
                refused.append(f"{self.short_id(schedule)}: {exc}")
        if cancelled:
            plural = "" if cancelled == 1 else "s"
            self.message_user(request, f"Cancelled {cancelled} schedule{plural}.", messages.SUCCESS)
        for line in refused[:10]:
            self.message_user(request, line, messages.WARNING)
        if len(refused) > 10:
            self.message_user(request, f"{len(refused) - 10} more could not be cancelled.", messages.WARNING)
        return None


class BookingNotificationInline(ReadOnlyInline):
    model = Notification
    verbose_name_plural = "notifications"
    fields = ("notification", "template", "channels", "category", "created_at", "deliveries")
    ordering = ("created_at",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("template").prefetch_related("deliveries")

    @admin.display(description="notification")
    def notification(self, notification):
        return _change_link(notification, str(notification.pk)[:8])

    @admin.display(description="deliveries")
    def deliveries(self, notification):
        return format_html_join(
            ", ",
            '<a href="{}">{}: {}</a>',
            (
                (reverse("admin:notifications_delivery_change", args=[d.pk]), d.channel, d.get_status_display())
                for d in notification.deliveries.all()
            ),
        )


class PendingScheduleInline(ReadOnlyInline):
    model = NotificationSchedule
    verbose_name_plural = "pending reminders and follow-ups"
    fields = ("schedule", "schedule_type", "channel", "scheduled_for", "minutes_before", "recipient")

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .filter(status=ScheduleStatus.SCHEDULED)
            .select_related("recipient")
            .order_by("scheduled_for")
        )

    @admin.display(description="schedule")
    def schedule(self, schedule):
        return _change_link(schedule, str(schedule.pk)[:8])


class BookingEventInline(ReadOnlyInline):
    model = BookingEvent
    verbose_name_plural = "history"
    fields = ("type", "occurred_at", "key", "result", "received_at")


@admin.register(Booking)
class BookingAdmin(AccountScopedAdmin, ImmutableAdmin):
    """A booking as its events left it, with what was sent about it and what is still due."""

    list_display = ("external_id", "event_name", "start_time", "status", "invitee", "account")
    list_filter = ("status",)
    search_fields = ("external_id", "event_name", "invitee__email", "invitee__phone", "invitee__name")
    date_hierarchy = "start_time"
    list_select_related = ("invitee", "account")
    readonly_fields = (
        "account",
        "external_id",
        "status",
        "event_name",
        "start_time",
        "end_time",
        "invitee",
        "details",
        "last_event_at",
        "created_at",
        "updated_at",
    )
    inlines = [BookingNotificationInline, PendingScheduleInline, BookingEventInline]


@admin.register(FailureAlert)
class FailureAlertAdmin(AccountScopedAdmin, ImmutableAdmin):
    list_display = ("account", "channel", "failed", "total", "failure_rate", "window_minutes", "detected_at")
    list_filter = ("channel",)
    list_select_related = ("account",)

    @admin.display(description="rate", ordering="rate")
    def failure_rate(self, alert):
        return f"{alert.rate:.0%}"


@admin.register(Device)
class DeviceAdmin(AccountScopedAdmin, ImmutableAdmin):
    """Push devices as their apps registered them: registered through the API, removed by
    the provider's answer or prune_devices, not edited by hand."""

    list_display = ("id", "account", "recipient", "platform", "token_end", "active", "last_seen_at", "deactivated_at")
    list_filter = ("platform", "active")
    search_fields = ("recipient__external_id", "recipient__email", "account__username")
    list_select_related = ("account", "recipient")
    date_hierarchy = "last_seen_at"

    @admin.display(description="token")
    def token_end(self, device):
        return f"…{device.token[-12:]}"


class WebhookEndpointForm(forms.ModelForm):
    """What an operator may change on an endpoint: its URL (through the outbound URL
    guard, as the API does), description, event types and whether it is enabled. The
    signing secrets are never on the form."""

    url = forms.URLField(max_length=1000, assume_scheme="https")
    event_types = forms.JSONField(
        help_text=f'A list of event types, or ["*"] for all. Known: {", ".join(SUBSCRIBABLE)}.'
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "description", "event_types", "enabled"]

    def clean_url(self):
        url = self.cleaned_data["url"]
        try:
            check_url(url)
        except UnsafeTarget as exc:
            raise ValidationError(exc.message) from None
        taken = WebhookEndpoint.objects.filter(account_id=self.instance.account_id, url=url).exclude(
            pk=self.instance.pk
        )
        if taken.exists():
            raise ValidationError("The account already has an endpoint with this URL.")
        return url

    def clean_event_types(self):
        value = self.cleaned_data["event_types"]
        if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
            raise ValidationError('Give a list of event types, or ["*"] for all.')
        unknown = sorted(set(value) - {"*", *SUBSCRIBABLE})
        if unknown:
            raise ValidationError(f"Unknown event type(s): {', '.join(unknown)}.")
        return value


def _may_change(modeladmin, request) -> bool:
    opts = modeladmin.opts
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(AccountScopedAdmin, admin.ModelAdmin):
    """Endpoints are registered through the API (their secret is shown there once); here
    an operator enables or disables one, edits its URL, description and event types, and
    sends it a test event. Saving goes through the service."""

    form = WebhookEndpointForm
    list_display = ("id", "account", "url", "enabled", "events", "failing_since", "disabled_reason", "created_at")
    list_filter = ("enabled",)
    search_fields = ("url", "description", "account__username")
    list_select_related = ("account",)
    fields = (
        "account",
        "url",
        "description",
        "event_types",
        "enabled",
        "disabled_at",
        "disabled_reason",
        "failing_since",
        "previous_secret_expires_at",
        "messages_link",
        "created_at",
        "updated_at",
    )
    readonly_fields = (
        "account",
        "disabled_at",
        "disabled_reason",
        "failing_since",
        "previous_secret_expires_at",
        "messages_link",
        "created_at",
        "updated_at",
    )
    actions = ["send_test_event"]

    @admin.display(description="event types")
    def events(self, endpoint):
        return ", ".join(endpoint.event_types)

    @admin.display(description="messages")
    def messages_link(self, endpoint):
        url = reverse("admin:notifications_webhookmessage_changelist")
        return format_html('<a href="{}?endpoint__id__exact={}">Messages sent to it</a>', url, endpoint.pk)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # Removed by the account through the API; an operator disables it instead.
        return False

    def save_model(self, request, obj, form, change):
        current = WebhookEndpoint.objects.get(pk=obj.pk)
        endpoint_update(endpoint=current, **{name: form.cleaned_data[name] for name in form.changed_data})

    @admin.action(description="Send a test event", permissions=["change"])
    def send_test_event(self, request, queryset):
        endpoints = list(queryset)
        page = action_confirmation(
            self,
            request,
            endpoints,
            action="send_test_event",
            heading="Send a test event",
            question="Send a webhook.test event to these endpoints now? Each gets one signed POST; "
            "a disabled endpoint is skipped.",
            confirm="Yes, send them",
            describe=lambda e: f"{e.url} ({'enabled' if e.enabled else 'disabled'}) of {e.account}",
        )
        if page is not None:
            return page
        for endpoint in endpoints:
            if not endpoint.enabled:
                self.message_user(request, f"{endpoint.url}: disabled, not sent; enable it first.", messages.WARNING)
                continue
            message = endpoint_test(endpoint=endpoint)
            if message.status == "delivered":
                self.message_user(request, f"{endpoint.url}: the test event was delivered.", messages.SUCCESS)
            else:
                self.message_user(
                    request,
                    f"{endpoint.url}: the test event was not delivered ({message.last_error}); "
                    f"it is {message.get_status_display().lower()}.",
                    messages.WARNING,
                )
        return None


class WebhookAttemptInline(ReadOnlyInline):
    model = WebhookAttempt
    fields = ("number", "started_at", "duration_ms", "response_status", "succeeded", "error", "response_body")


@admin.register(WebhookMessage)
class WebhookMessageAdmin(AccountScopedAdmin, ImmutableAdmin):
    """Events as posted to endpoints, with every attempt; a pending or failed one can be
    sent again now."""

    list_display = (
        "webhook_id",
        "account",
        "endpoint",
        "event_type",
        "status",
        "attempt_count",
        "next_attempt_at",
        "created_at",
    )
    list_filter = ("status", "event_type", "created_at")
    search_fields = ("=id", "endpoint__url", "last_error")
    list_select_related = ("account", "endpoint")
    date_hierarchy = "created_at"
    inlines = [WebhookAttemptInline]
    actions = ["retry_now"]

    def get_search_results(self, request, queryset, search_term):
        # The webhook-id a receiver saw (msg_<hex>) finds its message.
        term = search_term.strip()
        if term.startswith("msg_"):
            try:
                return queryset.filter(pk=uuid.UUID(term.removeprefix("msg_"))), False
            except ValueError:
                return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)

    def has_retry_permission(self, request):
        return _may_change(self, request)

    @admin.action(description="Retry now", permissions=["retry"])
    def retry_now(self, request, queryset):
        chosen = list(queryset.select_related("endpoint"))
        page = action_confirmation(
            self,
            request,
            chosen,
            action="retry_now",
            heading="Retry now",
            question="Send these messages again now? Only pending and failed messages are sent again "
            "(a failed one gets one more attempt); delivered ones are left alone.",
            confirm="Yes, send them now",
            describe=lambda m: f"{m.webhook_id}: {m.event_type} to {m.endpoint.url}, {m.get_status_display()}",
        )
        if page is not None:
            return page
        done = webhook_messages_retry_now([m.pk for m in chosen])
        if done:
            self.message_user(
                request, f"Put {done} message{'' if done == 1 else 's'} back to be sent now.", messages.SUCCESS
            )
        if len(chosen) > done:
            left = len(chosen) - done
            self.message_user(
                request,
                f"{left} message{' was' if left == 1 else 's were'} delivered or being sent, and left alone.",
                messages.WARNING,
            )
        return None


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(AccountScopedAdmin, ImmutableAdmin):
    account_path = "message__account"
    list_display = ("message", "number", "response_status", "succeeded", "duration_ms", "started_at")
    list_filter = ("succeeded",)
    search_fields = ("=message__id", "error")
    list_select_related = ("message",)


@admin.register(InboxItem)
class InboxItemAdmin(AccountScopedAdmin, ImmutableAdmin):
    """In-app inbox items as their recipients see them: written by the in-app channel, read
    and archived by the recipients; shown here, never edited."""

    list_display = ("id", "account", "recipient", "title", "category", "created_at", "read_at", "archived_at")
    list_filter = ("category", "created_at")
    search_fields = ("=id", "recipient__external_id", "title", "account__username")
    list_select_related = ("account", "recipient")
    date_hierarchy = "created_at"
