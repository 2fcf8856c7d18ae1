"""What accept answers: the receipt of a send or a batch send. Kept apart from the API's
serializers because accept stores it with an idempotency key, to answer a retried request
exactly as it answered the first.

A send with fallback says so (`"fallback": true`) and gives each delivery its
`fallback_rank`; a send without it answers as it always has, without those keys."""

from rest_framework import serializers

from .models import Delivery


class DeliveryBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Delivery
        fields = ["id", "channel", "to", "status", "encoding", "segments"]


FALLBACK_HELP = "Present (true) when the channels are tried in order, each only if those before it fail."
FALLBACK_RANK_HELP = (
    "With fallback only: the delivery's channel's place in the order (0 first); a standby "
    "delivery waits for the ones before it."
)


class ReceiptDeliverySerializer(DeliveryBriefSerializer):
    fallback_rank = serializers.IntegerField(required=False, help_text=FALLBACK_RANK_HELP)

    class Meta(DeliveryBriefSerializer.Meta):
        fields = [*DeliveryBriefSerializer.Meta.fields, "fallback_rank"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if data.get("fallback_rank") is None:
            data.pop("fallback_rank", None)
        return data


class AcceptedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    scheduled_for = serializers.DateTimeField(allow_null=True)
    fallback = serializers.BooleanField(required=False, help_text=FALLBACK_HELP)
    deliveries = ReceiptDeliverySerializer(many=True)

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if not data.get("fallback"):
            data.pop("fallback", None)
        return data


class BatchDeliverySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    channel = serializers.CharField()
    status = serializers.CharField()
    fallback_rank = serializers.IntegerField(required=False, help_text=FALLBACK_RANK_HELP)


class BatchNotificationSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    deliveries = BatchDeliverySerializer(many=True)


class BatchAcceptedSerializer(serializers.Serializer):
    """The schema of a batch receipt; `batch_receipt` writes it directly (a thousand
    nested serializers per request would cost more than the inserts)."""

    status = serializers.CharField()
    count = serializers.IntegerField()
    scheduled_for = serializers.DateTimeField(allow_null=True)
    fallback = serializers.BooleanField(required=False, help_text=FALLBACK_HELP)
    notifications = BatchNotificationSerializer(many=True)


def _datetime(value) -> str | None:
    return serializers.DateTimeField().to_representation(value) if value else None


def _ranked(item: dict, delivery, fallback: bool) -> dict:
    if fallback:
        item["fallback_rank"] = delivery.fallback_rank
    return item


def receipt(notification, deliveries) -> dict:
    """AcceptedSerializer's output, written directly (it is built on every send)."""
    fallback = notification.fallback
    body = {
        "id": str(notification.pk),
        "status": "scheduled" if notification.scheduled_for else "accepted",
        "scheduled_for": _datetime(notification.scheduled_for),
    }
    if fallback:
        body["fallback"] = True
    body["deliveries"] = [
        _ranked(
            {
                "id": str(d.pk),
                "channel": d.channel,
                "to": d.to,
                "status": d.status,
                "encoding": d.encoding,
                "segments": d.segments,
            },
            d,
            fallback,
        )
        for d in deliveries
    ]
    return body


def batch_receipt(notifications, deliveries_by_notification) -> dict:
    scheduled_for = notifications[0].scheduled_for if notifications else None
    fallback = bool(notifications) and notifications[0].fallback
    body = {
        "status": "scheduled" if scheduled_for else "accepted",
        "count": len(notifications),
        "scheduled_for": _datetime(scheduled_for),
    }
    if fallback:
        body["fallback"] = True
    body["notifications"] = [
        {
            "id": str(notification.pk),
            "deliveries": [
                _ranked({"id": str(d.pk), "channel": d.channel, "status": d.status}, d, fallback)
                for d in deliveries_by_notification[notification.pk]
            ],
        }
        for notification in notifications
    ]
    return body
