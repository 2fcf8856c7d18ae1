from django.db.models import Prefetch, Q, QuerySet

from .models import Delivery, DeliveryAttempt, DeliveryEvent, DeliveryStatus


def delivery_list(*, account) -> QuerySet[Delivery]:
    """The account's deliveries, newest first, with what the log shows joined in."""
    return (
        Delivery.objects.filter(account=account)
        .select_related("notification__recipient", "notification__template", "notification__template_version")
        .order_by("-created_at", "-pk")
    )


def delivery_detail(*, account, delivery_id) -> Delivery | None:
    return (
        delivery_list(account=account)
        .prefetch_related(
            Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("number")),
            Prefetch("events", queryset=DeliveryEvent.objects.order_by("created_at", "pk")),
        )
        .filter(pk=delivery_id)
        .first()
    )


def delivery_by_provider_message(*, channel: str, provider_message_id: str) -> Delivery | None:
    if not provider_message_id:
        return None
    return (
        Delivery.objects.filter(channel=channel, provider_message_id=provider_message_id)
        .filter(~Q(status__in=[DeliveryStatus.SCHEDULED, DeliveryStatus.QUEUED]))
        .order_by("-created_at")
        .first()
    )
