"""/api/v1/providers/: the account's own providers, several per channel, tried in priority
order. Credentials are written, never read back: an answer shows each as "••••" and at
most its last 4 characters."""

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from .health import provider_key, providers_health
from .kinds import KIND_FIELDS
from .models import CHANNEL_CHOICES, MAX_PRIORITY, ProviderConfig
from .services import (
    MAX_BURST,
    MAX_CREDENTIAL_CHARS,
    MAX_RATE,
    TEST_BODY,
    credentials_masked,
    provider_config_create,
    provider_config_delete,
    provider_config_set_enabled,
    provider_config_test,
    provider_config_update,
    provider_configs_for,
    test_address_problem,
)

KIND_CHOICES = [(kind, kind) for kind in sorted(KIND_FIELDS)]


def _kinds_help() -> str:
    parts = []
    for kind in sorted(KIND_FIELDS):
        fields = KIND_FIELDS[kind]
        parts.append(f"{kind}: credentials [{', '.join(fields.credentials)}], settings [{', '.join(fields.settings)}]")
    return "; ".join(parts)


# --- Serializers --------------------------------------------------------------------------


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": 'Each credential as "••••" and at most its last 4 characters.',
    }
)
class MaskedCredentialsField(serializers.Field):
    def __init__(self, **kwargs):
        kwargs["source"] = "*"
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, config):
        return credentials_masked(config)


class ProviderHealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["healthy", "degraded", "down", "unknown"],
        help_text="down: its circuit breaker is open; degraded: half-open, paused by a 429, or a "
        "success rate under BEACON_HEALTH_DEGRADED_BELOW over the window.",
    )
    breaker = serializers.ChoiceField(choices=["closed", "open", "half_open"], required=False)
    open_until = serializers.DateTimeField(allow_null=True, required=False)
    paused_until = serializers.DateTimeField(allow_null=True, required=False)
    consecutive_failures = serializers.IntegerField(required=False)
    window_seconds = serializers.IntegerField(required=False)
    attempts = serializers.IntegerField(required=False, help_text="Answers over the window.")
    failures = serializers.IntegerField(required=False, help_text="Provider failures over the window.")
    success_rate = serializers.FloatField(allow_null=True, required=False)
    p95_latency_ms = serializers.IntegerField(allow_null=True, required=False)
    last_error = serializers.CharField(required=False)
    last_error_at = serializers.DateTimeField(allow_null=True, required=False)
    problem = serializers.CharField(required=False)


class ProviderConfigListSerializer(serializers.ListSerializer):
    """Reads the health of a whole page of providers in one round trip."""

    def to_representation(self, data):
        records = list(data.all() if hasattr(data, "all") else data)
        self.child.context["health"] = providers_health([provider_key(r.pk, r.kind) for r in records])
        return super().to_representation(records)


class ProviderConfigSerializer(serializers.ModelSerializer):
    channel = serializers.ChoiceField(choices=CHANNEL_CHOICES, read_only=True)
    kind = serializers.ChoiceField(choices=KIND_CHOICES, read_only=True)
    credentials = MaskedCredentialsField()
    settings = serializers.DictField(child=serializers.JSONField(), read_only=True)
    cost_per_message = serializers.DecimalField(max_digits=12, decimal_places=6, read_only=True, allow_null=True)
    health = serializers.SerializerMethodField()

    class Meta:
        model = ProviderConfig
        list_serializer_class = ProviderConfigListSerializer
        fields = [
            "id",
            "name",
            "channel",
            "kind",
            "priority",
            "enabled",
            "credentials",
            "settings",
            "rate_limit_per_second",
            "burst",
            "cost_per_message",
            "currency",
            "health",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(ProviderHealthSerializer)
    def get_health(self, config) -> dict:
        """Shared by every worker: the breaker, and the success rate and p95 latency over the
        last BEACON_HEALTH_WINDOW_SECONDS."""
        key = provider_key(config.pk, config.kind)
        known = self.context.get("health") or {}
        return known[key] if key in known else providers_health([key])[key]


class ProviderConfigWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="Unique within the account.")
    channel = serializers.ChoiceField(choices=CHANNEL_CHOICES)
    kind = serializers.ChoiceField(
        choices=KIND_CHOICES,
        help_text="One of the channel's provider kinds (console sends every channel to the log).",
    )
    priority = serializers.IntegerField(
        min_value=0, max_value=MAX_PRIORITY, required=False, help_text="Lower goes first; 100 by default."
    )
    enabled = serializers.BooleanField(required=False)
    credentials = serializers.DictField(
        child=serializers.CharField(
            allow_blank=True, allow_null=True, trim_whitespace=False, max_length=MAX_CREDENTIAL_CHARS
        ),
        required=False,
        help_text="The kind's secrets, merged key by key over the stored ones; a key given as "
        '"" or null is removed. Never read back in the clear. By kind: ' + _kinds_help() + ".",
    )
    settings = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text="The kind's other settings (strings, numbers, booleans); when given, they replace the "
        "stored ones. URL settings (api_base_url, api_url) must reach a public address.",
    )
    rate_limit_per_second = serializers.FloatField(
        required=False, allow_null=True, min_value=0, max_value=MAX_RATE, help_text="Greater than 0, or null."
    )
    burst = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_BURST)
    cost_per_message = serializers.DecimalField(
        max_digits=12, decimal_places=6, required=False, allow_null=True, min_value=0
    )
    currency = serializers.RegexField(
        r"^[A-Z]{3}$",
        required=False,
        allow_blank=True,
        max_length=3,
        help_text="ISO 4217 (e.g. USD); required with a cost.",
    )


class ProviderStatusSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()


class ProviderTestSerializer(serializers.Serializer):
    to = serializers.CharField(
        max_length=1000,
        help_text="An address of the record's channel: an E.164 number for sms, whatsapp and voice, "
        "an email address for email.",
    )
    message = serializers.CharField(max_length=1000, required=False, allow_blank=True, default=TEST_BODY)


class ProviderTestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="Whether the provider took the message.")
    provider_message_id = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True, help_text="Why the provider refused it.")
    code = serializers.CharField(allow_blank=True, help_text="The provider's error code, if it gave one.")
    retryable = serializers.BooleanField(help_text="Whether trying again later may succeed.")


class ProviderConfigFilter(django_filters.FilterSet):
    channel = django_filters.ChoiceFilter(choices=CHANNEL_CHOICES)
    kind = django_filters.ChoiceFilter(choices=KIND_CHOICES)
    enabled = django_filters.BooleanFilter()

    class Meta:
        model = ProviderConfig
        fields = ["channel", "kind", "enabled"]


# --- Views --------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="The account's providers, by channel and priority."),
    retrieve=extend_schema(summary="One provider (its credentials masked)."),
    destroy=extend_schema(summary="Remove the provider."),
)
class ProviderConfigViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """The account's providers: per channel, the kinds that send it with their own
    credentials and settings, tried in priority order (lower first)."""

    serializer_class = ProviderConfigSerializer
    filterset_class = ProviderConfigFilter
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ProviderConfig.objects.none()
        return provider_configs_for(account=self.request.user)

    @extend_schema(
        request=ProviderConfigWriteSerializer,
        responses={201: ProviderConfigSerializer},
        summary="Add a provider; its credentials are stored encrypted and never shown again in full.",
    )
    def create(self, request):
        serializer = ProviderConfigWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        config = provider_config_create(request.user, **serializer.validated_data)
        return Response(ProviderConfigSerializer(config).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=ProviderConfigWriteSerializer,
        responses=ProviderConfigSerializer,
        summary="Change a provider; credentials given are merged over the stored ones.",
    )
    def update(self, request, pk=None):
        return self._update(request, partial=False)

    @extend_schema(
        request=ProviderConfigWriteSerializer,
        responses=ProviderConfigSerializer,
        summary="Change some of a provider's fields; credentials given are merged over the stored ones.",
    )
    def partial_update(self, request, pk=None):
        return self._update(request, partial=True)

    def _update(self, request, *, partial: bool):
        config = self.get_object()
        serializer = ProviderConfigWriteSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        config = provider_config_update(config, **serializer.validated_data)
        return Response(ProviderConfigSerializer(config).data)

    def perform_destroy(self, instance):
        provider_config_delete(instance)

    @extend_schema(
        request=ProviderStatusSerializer,
        responses=ProviderConfigSerializer,
        summary="Enable or disable the provider.",
    )
    @action(detail=True, methods=["put"], url_path="status")
    def set_status(self, request, pk=None):
        config = self.get_object()
        serializer = ProviderStatusSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        config = provider_config_set_enabled(config, serializer.validated_data["enabled"])
        return Response(ProviderConfigSerializer(config).data)

    @extend_schema(
        request=ProviderTestSerializer,
        responses={200: ProviderTestResultSerializer},
        summary="Send one test message through this provider; a refusal is a 200 with ok false.",
    )
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        config = self.get_object()
        serializer = ProviderTestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        to = serializer.validated_data["to"]
        problem = test_address_problem(config.channel, to)
        if problem:
            raise exceptions.ValidationError({"to": [problem]})
        result = provider_config_test(config, to, serializer.validated_data["message"] or TEST_BODY)
        return Response(ProviderTestResultSerializer(result).data)
