"""/api/v1/recipients/{external_id}/devices/: a recipient's push devices."""

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.inputs import JSONObjectField
from providers.urlguard import UnsafeTarget, check_url, private_targets_allowed

from .models import Device, DevicePlatform, Recipient
from .services.devices import device_register, device_remove

NOT_FOUND = "The account has no recipient with this external id."


class DeviceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Device
        fields = [
            "id",
            "platform",
            "token",
            "subscription",
            "active",
            "last_seen_at",
            "deactivated_at",
            "deactivation_reason",
            "created_at",
        ]
        read_only_fields = ["id", "active", "last_seen_at", "deactivated_at", "deactivation_reason", "created_at"]


class DeviceRegisterSerializer(serializers.Serializer):
    platform = serializers.ChoiceField(choices=DevicePlatform.choices)
    token = serializers.CharField(
        max_length=4096, help_text="The FCM registration token, or a Web Push subscription's endpoint URL."
    )
    subscription = JSONObjectField(required=False, default=dict, help_text="Web Push: {p256dh, auth}.")

    def validate(self, attrs):
        if attrs["platform"] == DevicePlatform.WEB:
            keys = attrs["subscription"]
            try:
                check_url(attrs["token"])
            except UnsafeTarget as exc:
                raise serializers.ValidationError({"token": [exc.message]}) from None
            if not attrs["token"].startswith("https://") and not private_targets_allowed():
                raise serializers.ValidationError({"token": ["A Web Push token is the subscription's https endpoint."]})
            missing = [key for key in ("p256dh", "auth") if not isinstance(keys.get(key), str) or not keys.get(key)]
            if missing:
                raise serializers.ValidationError({"subscription": [f"Web Push needs {', '.join(missing)}."]})
        return attrs


class DeviceListView(APIView):
    """GET lists the recipient's devices (active first); POST registers one, idempotent
    per token (201 when new, 200 when it was known: it is refreshed and reactivated)."""

    @extend_schema(responses={200: DeviceSerializer(many=True)})
    def get(self, request, external_id):
        recipient = Recipient.objects.filter(account=request.user, external_id=external_id).first()
        if recipient is None:
            raise exceptions.NotFound(NOT_FOUND)
        devices = recipient.devices.order_by("-active", "-last_seen_at")
        return Response(DeviceSerializer(devices, many=True).data)

    @extend_schema(request=DeviceRegisterSerializer, responses={201: DeviceSerializer, 200: DeviceSerializer})
    def post(self, request, external_id):
        serializer = DeviceRegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        device, created = device_register(account=request.user, external_id=external_id, **serializer.validated_data)
        return Response(
            DeviceSerializer(device).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class DeviceView(APIView):
    """DELETE removes one device of the recipient (an app's logout)."""

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, external_id, pk):
        device = Device.objects.filter(
            pk=pk, account=request.user, recipient__external_id=external_id, recipient__account=request.user
        ).first()
        if device is None:
            raise exceptions.NotFound("The recipient has no such device.")
        device_remove(device=device)
        return Response(status=status.HTTP_204_NO_CONTENT)
