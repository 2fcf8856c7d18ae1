"""/api/v1/webhooks/: the account's webhook endpoints, the messages sent to each and their
attempts. An endpoint's signing secret is shown twice only: when it is created and when
it is rotated; it is never read back."""

import django_filters
from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import exceptions, generics, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.errors import Conflict

from .models import WebhookAttempt, WebhookEndpoint, WebhookMessage, WebhookMessageStatus
from .serializers import OutboundURLField
from .services.webhooks import (
    SUBSCRIBABLE,
    EndpointInvalid,
    endpoint_create,
    endpoint_delete,
    endpoint_rotate_secret,
    endpoint_test,
    endpoint_update,
)

EVENT_TYPE_CHOICES = ["*", *SUBSCRIBABLE]
CONFLICT = OpenApiResponse(
    response={"$ref": "#/components/schemas/Error"}, description="The object's state does not allow this."
)


# --- Serializers --------------------------------------------------------------------------


class WebhookEndpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "enabled",
            "disabled_at",
            "disabled_reason",
            "failing_since",
            "previous_secret_expires_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    event_types = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPE_CHOICES), read_only=True)


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="The signing secret (whsec_...): shown this once, keep it now."
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookEndpointWriteSerializer(serializers.Serializer):
    url = OutboundURLField(help_text="An http(s) URL on a public address; it receives a signed POST per event.")
    event_types = serializers.ListField(
        child=serializers.ChoiceField(
            choices=EVENT_TYPE_CHOICES,
            error_messages={
                "invalid_choice": f'Unknown event type "{{input}}". Known: {", ".join(EVENT_TYPE_CHOICES)}.'
            },
        ),
        min_length=1,
        max_length=len(EVENT_TYPE_CHOICES),
        help_text='The events to receive, or ["*"] for all.',
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    enabled = serializers.BooleanField(
        required=False, help_text="Enabling clears the failure run and the reason it was disabled."
    )

    def validate_url(self, value):
        taken = WebhookEndpoint.objects.filter(account=self.context["account"], url=value)
        if self.instance is not None:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            # The webhook channel picks the endpoint, and so the secret, by its URL.
            raise serializers.ValidationError("The account already has an endpoint with this URL.")
        return value


class RotatedSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="The new signing secret: shown this once.")
    previous_secret_expires_at = serializers.DateTimeField(
        help_text="Until then the previous secret signs too, beside the new one."
    )


@extend_schema_field(
    {
        "type": "string",
        "enum": WebhookMessageStatus.values,
        "description": "pending (waiting for its next attempt), sending, delivered, or failed (no attempt left).",
    },
    component_name="WebhookMessageStatusEnum",
)
class WebhookMessageStatusField(serializers.ChoiceField):
    """A message's status, under a name of its own in the schema (many objects have a status)."""

    def __init__(self, **kwargs):
        super().__init__(choices=WebhookMessageStatus.choices, **kwargs)


class WebhookAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "started_at", "duration_ms", "response_status", "response_body", "error", "succeeded"]


class WebhookMessageSerializer(serializers.ModelSerializer):
    webhook_id = serializers.CharField(read_only=True, help_text="The webhook-id header every attempt carries.")
    event_type = serializers.ChoiceField(choices=SUBSCRIBABLE, read_only=True)
    payload = serializers.JSONField(read_only=True, help_text="The body posted.")
    status = WebhookMessageStatusField(read_only=True)

    class Meta:
        model = WebhookMessage
        fields = [
            "id",
            "webhook_id",
            "endpoint",
            "event_type",
            "payload",
            "status",
            "attempt_count",
            "next_attempt_at",
            "last_error",
            "created_at",
            "delivered_at",
        ]
        read_only_fields = fields


class WebhookMessageDetailSerializer(WebhookMessageSerializer):
    attempts = WebhookAttemptSerializer(many=True, read_only=True)

    class Meta(WebhookMessageSerializer.Meta):
        fields = [*WebhookMessageSerializer.Meta.fields, "attempts"]
        read_only_fields = fields


class WebhookMessageFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=WebhookMessageStatus.choices)
    event_type = django_filters.MultipleChoiceFilter(choices=[(t, t) for t in SUBSCRIBABLE])

    class Meta:
        model = WebhookMessage
        fields = ["status", "event_type"]


# --- Views --------------------------------------------------------------------------------


def _invalid(exc: EndpointInvalid):
    return exceptions.ValidationError(exc.errors)


@extend_schema_view(
    list=extend_schema(summary="The account's webhook endpoints, newest first."),
    retrieve=extend_schema(summary="One webhook endpoint (its secret is never shown again)."),
    destroy=extend_schema(summary="Remove the endpoint, its messages and their attempts."),
)
class WebhookEndpointViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Webhook endpoints: URLs that receive the account's delivery status changes, signed
    per Standard Webhooks, and the targets of the `webhook` channel."""

    serializer_class = WebhookEndpointSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return WebhookEndpoint.objects.none()
        return WebhookEndpoint.objects.filter(account=self.request.user).order_by("-created_at", "-pk")

    @extend_schema(
        request=WebhookEndpointWriteSerializer,
        responses={201: WebhookEndpointCreatedSerializer},
        summary="Register an endpoint; the answer holds its signing secret, shown this once.",
    )
    def create(self, request):
        serializer = WebhookEndpointWriteSerializer(data=request.data, context={"account": request.user})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            endpoint, secret = endpoint_create(
                account=request.user,
                url=data["url"],
                event_types=data["event_types"],
                description=data.get("description", ""),
            )
        except EndpointInvalid as exc:
            raise _invalid(exc) from None
        if data.get("enabled") is False:
            endpoint = endpoint_update(endpoint=endpoint, enabled=False)
        body = WebhookEndpointCreatedSerializer(endpoint).data
        body["secret"] = secret
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=WebhookEndpointWriteSerializer, responses=WebhookEndpointSerializer)
    def update(self, request, pk=None):
        return self._update(request, partial=False)

    @extend_schema(request=WebhookEndpointWriteSerializer, responses=WebhookEndpointSerializer)
    def partial_update(self, request, pk=None):
        return self._update(request, partial=True)

    def _update(self, request, *, partial: bool):
        endpoint = self.get_object()
        serializer = WebhookEndpointWriteSerializer(
            endpoint, data=request.data, partial=partial, context={"account": request.user}
        )
        serializer.is_valid(raise_exception=True)
        try:
            endpoint = endpoint_update(endpoint=endpoint, **serializer.validated_data)
        except EndpointInvalid as exc:
            raise _invalid(exc) from None
        return Response(WebhookEndpointSerializer(endpoint).data)

    def perform_destroy(self, instance):
        endpoint_delete(endpoint=instance)

    @extend_schema(
        request=None,
        responses=RotatedSecretSerializer,
        summary="A new signing secret, shown this once; the previous one keeps signing beside it for a while.",
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        endpoint = self.get_object()
        secret = endpoint_rotate_secret(endpoint=endpoint)
        rotated = {"secret": secret, "previous_secret_expires_at": endpoint.previous_secret_expires_at}
        return Response(RotatedSecretSerializer(rotated).data)

    @extend_schema(
        request=None,
        responses={200: WebhookMessageDetailSerializer, 409: CONFLICT},
        summary="Send a webhook.test event now; the message with its attempt (a failure is retried as usual).",
    )
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        endpoint = self.get_object()
        if not endpoint.enabled:
            raise Conflict("The endpoint is disabled; enable it (PATCH enabled: true) before testing it.")
        message = endpoint_test(endpoint=endpoint)
        return Response(WebhookMessageDetailSerializer(_with_attempts(WebhookMessage.objects).get(pk=message.pk)).data)


def _with_attempts(queryset):
    return queryset.prefetch_related(Prefetch("attempts", queryset=WebhookAttempt.objects.order_by("number")))


class _EndpointMessages:
    """The messages of one of the account's endpoints (another account's: 404)."""

    def endpoint_messages(self):
        if getattr(self, "swagger_fake_view", False):
            return WebhookMessage.objects.none()
        endpoint = WebhookEndpoint.objects.filter(account=self.request.user, pk=self.kwargs["endpoint_id"]).first()
        if endpoint is None:
            raise exceptions.NotFound()
        return WebhookMessage.objects.filter(endpoint=endpoint).order_by("-created_at", "-pk")


class WebhookMessageListView(_EndpointMessages, generics.ListAPIView):
    """The endpoint's messages, newest first; filter by status and event type."""

    serializer_class = WebhookMessageSerializer
    filterset_class = WebhookMessageFilter

    def get_queryset(self):
        return self.endpoint_messages()


class WebhookMessageView(_EndpointMessages, generics.RetrieveAPIView):
    """One message with every attempt."""

    serializer_class = WebhookMessageDetailSerializer
    lookup_url_kwarg = "message_id"

    def get_queryset(self):
        return _with_attempts(self.endpoint_messages())
