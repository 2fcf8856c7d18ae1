"""What accept answers: the receipt of a send or a batch send. Kept apart from the API's
serializers because accept stores it with an idempotency key, to answer a retried request
exactly as it answered the first."""

from rest_framework import serializers

from .models import Delivery


class DeliveryBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Delivery
        fields = ["id", "channel", "to", "status", "encoding", "segments"]


class AcceptedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    scheduled_for = serializers.DateTimeField(allow_null=True)
    deliveries = DeliveryBriefSerializer(many=True)


class BatchDeliverySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    channel = serializers.CharField()
    status = serializers.CharField()


class BatchNotificationSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    deliveries = BatchDeliverySerializer(many=True)


class BatchAcceptedSerializer(serializers.Serializer):
    """The schema of a batch receipt; `batch_receipt` writes it directly (a thousand
    nested serializers per request would cost more than the inserts)."""

    status = serializers.CharField()
    count = serializers.IntegerField()
    scheduled_for = serializers.DateTimeField(allow_null=True)
    notifications = BatchNotificationSerializer(many=True)


def _datetime(value) -> str | None:
    return serializers.DateTimeField().to_representation(value) if value else None


def receipt(notification, deliveries) -> dict:
    """AcceptedSerializer's output, written directly (it is built on every send)."""
    return {
        "id": str(notification.pk),
        "status": "scheduled" if notification.scheduled_for else "accepted",
        "scheduled_for": _datetime(notification.scheduled_for),
        "deliveries": [
            {
                "id": str(d.pk),
                "channel": d.channel,
                "to": d.to,
                "status": d.status,
                "encoding": d.encoding,
                "segments": d.segments,
            }
            for d in deliveries
        ],
    }


def batch_receipt(notifications, deliveries_by_notification) -> dict:
    scheduled_for = notifications[0].scheduled_for if notifications else None
    return {
        "status": "scheduled" if scheduled_for else "accepted",
        "count": len(notifications),
        "scheduled_for": _datetime(scheduled_for),
        "notifications": [
            {
                "id": str(notification.pk),
                "deliveries": [
                    {"id": str(d.pk), "channel": d.channel, "status": d.status}
                    for d in deliveries_by_notification[notification.pk]
                ],
            }
            for notification in notifications
        ],
    }
