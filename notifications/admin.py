from django.contrib import admin, messages

from providers.channels import CHANNELS
from templates.admin import ImmutableAdmin

from .models import Delivery, DeliveryAttempt, DeliveryEvent, IdempotencyKey, Notification, Recipient
from .services import InvalidTransition, delivery_cancel, delivery_resend


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
    fields = ("channel", "to", "status", "attempt_count", "provider_message_id", "error_message", "created_at")
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
class DeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "account",
        "channel",
        "address",
        "status",
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
        return f"{CHANNELS[delivery.channel].address_field}: {delivery.to}"

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

    @admin.action(description="Cancel selected scheduled or queued deliveries")
    def cancel(self, request, queryset):
        _apply(self, request, queryset, delivery_cancel, "Cancelled")


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "account",
        "recipient",
        "template",
        "channels",
        "priority",
        "category",
        "scheduled_for",
        "created_at",
    )
    list_filter = ("priority", "category", "is_test", "created_at")
    search_fields = ("=id", "recipient__email", "recipient__phone", "recipient__external_id", "template__key")
    list_select_related = ("account", "recipient", "template")
    date_hierarchy = "created_at"
    inlines = [DeliveryInline]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Recipient)
class RecipientAdmin(admin.ModelAdmin):
    list_display = ("id", "account", "name", "email", "phone", "external_id", "timezone", "locale", "created_at")
    list_filter = ("locale", "timezone")
    search_fields = ("name", "email", "phone", "external_id", "account__username")
    list_select_related = ("account",)


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(ImmutableAdmin):
    list_display = ("delivery", "number", "provider", "outcome", "response_code", "duration_ms", "started_at")
    list_filter = ("outcome", "provider")
    search_fields = ("=delivery__id", "provider_message_id", "error")
    list_select_related = ("delivery",)


@admin.register(DeliveryEvent)
class DeliveryEventAdmin(ImmutableAdmin):
    list_display = ("delivery", "from_status", "status", "source", "occurred_at")
    list_filter = ("status", "source")
    search_fields = ("=delivery__id", "detail")
    list_select_related = ("delivery",)


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(admin.ModelAdmin):
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
