import uuid

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


def delivery_for_callback(*, channel: str, delivery_id: str, provider_message_id: str) -> Delivery | None:
    """The delivery a provider callback is about: by the delivery id Beacon gave the
    provider (so a callback that beats the dispatch write still lands), checked against
    the provider's message id once that is known; else by the message id alone."""
    if delivery_id:
        try:
            delivery = Delivery.objects.filter(pk=uuid.UUID(str(delivery_id)), channel=channel).first()
        except ValueError:
            delivery = None
        if delivery is not None and delivery.provider_message_id in ("", provider_message_id):
            return delivery
    return delivery_by_provider_message(channel=channel, provider_message_id=provider_message_id)
