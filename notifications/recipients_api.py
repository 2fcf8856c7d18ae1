"""A recipient's preferences and consent, under /api/v1/preferences/{external_id}/: the
account's recipient with that external id; another account's, or none, is a 404."""

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import exceptions, generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from preferences.models import ConsentRecord, RecipientPreference
from preferences.serializers import LocalTimeField, TimeZoneField
from providers.channels import CHANNELS
from templates.models import Category, Channel

from .serializers import E164, LOCALE, OutboundURLField
from .services.recipients import (
    RECIPIENT_FIELDS,
    RecipientPreferences,
    recipient_consent_list,
    recipient_consent_record,
    recipient_preferences_get,
    recipient_preferences_update,
    recipient_unsubscribe,
)

EXTERNAL_ID_MAX = 200


def _one_or_every(values: list[str], what: str) -> dict:
    # Stated as "one of these, or *" rather than one enum, so that the schema's CategoryEnum
    # and ChannelEnum keep their names (a second choice set under the same field name
    # would rename them).
    return {
        "oneOf": [{"type": "string", "enum": values}, {"type": "string", "enum": ["*"]}],
        "description": f'A {what}, or "*" for every {what}.',
    }


@extend_schema_field(_one_or_every(list(Category.values), "category"))
class CategoryOrEveryField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=[*Category.values, "*"], **kwargs)


@extend_schema_field(_one_or_every(list(CHANNELS), "channel"))
class ChannelOrEveryField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=[*CHANNELS, "*"], **kwargs)


class OptOutSerializer(serializers.Serializer):
    category = CategoryOrEveryField()
    channel = ChannelOrEveryField()

    def validate(self, attrs):
        # A partial update of the preferences is partial for nested fields too, in DRF;
        # an opt-out is whole or nothing.
        missing = {name: ["This field is required."] for name in self.fields if name not in attrs}
        if missing:
            raise serializers.ValidationError(missing)
        return attrs


class RecipientPreferencesSerializer(serializers.Serializer):
    """A recipient's details and preferences. On write every field is optional: those
    given change, the others keep their values."""

    external_id = serializers.CharField(read_only=True)
    email = serializers.EmailField(max_length=254, required=False, allow_blank=True)
    phone = serializers.RegexField(
        E164,
        required=False,
        allow_blank=True,
        max_length=16,
        error_messages={"invalid": "Enter the number in E.164 form, e.g. +14155550123."},
    )
    slack_webhook_url = OutboundURLField(required=False, allow_blank=True, help_text="A Slack incoming webhook URL.")
    teams_webhook_url = OutboundURLField(
        required=False, allow_blank=True, help_text="A Microsoft Teams incoming webhook URL."
    )
    discord_webhook_url = OutboundURLField(required=False, allow_blank=True, help_text="A Discord webhook URL.")
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    timezone = TimeZoneField(required=False, allow_blank=True, help_text="IANA name; blank for the account's.")
    locale = serializers.RegexField(LOCALE, max_length=16, required=False, allow_blank=True)
    preferred_channel = serializers.ChoiceField(choices=Channel.choices, required=False, allow_blank=True)
    quiet_hours_enabled = serializers.BooleanField(required=False)
    quiet_hours_start = LocalTimeField(required=False)
    quiet_hours_end = LocalTimeField(required=False)
    opt_outs = OptOutSerializer(many=True, required=False, max_length=50)

    def validate(self, attrs):
        # Judged on the preferences as they will be: the stored ones (or the defaults) with
        # the fields given.
        current = self.instance or {}
        merged = {
            name: attrs.get(name, current.get(name, RecipientPreference._meta.get_field(name).get_default()))
            for name in ("quiet_hours_enabled", "quiet_hours_start", "quiet_hours_end")
        }
        if merged["quiet_hours_enabled"] and merged["quiet_hours_start"] == merged["quiet_hours_end"]:
            raise serializers.ValidationError(
                {"quiet_hours_end": ["Quiet hours must end at another time than they start."]}
            )
        return attrs


def preferences_data(found: RecipientPreferences) -> dict:
    recipient, preference = found.recipient, found.preference
    return {
        "external_id": recipient.external_id,
        **{name: getattr(recipient, name) for name in RECIPIENT_FIELDS},
        "preferred_channel": preference.preferred_channel,
        "quiet_hours_enabled": preference.quiet_hours_enabled,
        "quiet_hours_start": preference.quiet_hours_start,
        "quiet_hours_end": preference.quiet_hours_end,
        "opt_outs": preference.opt_outs,
    }


class UnsubscribeSerializer(serializers.Serializer):
    category = CategoryOrEveryField(default="marketing")
    channel = ChannelOrEveryField(default="*")


class ConsentRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = ConsentRecord
        fields = ["id", "granted", "channel", "category", "method", "detail", "recorded_at"]


class ConsentWriteSerializer(serializers.Serializer):
    granted = serializers.BooleanField()
    channel = ChannelOrEveryField(default="*")
    category = CategoryOrEveryField(default="marketing")
    detail = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


def found_or_404(account, external_id: str) -> RecipientPreferences:
    found = recipient_preferences_get(account=account, external_id=external_id)
    if found is None:
        raise exceptions.NotFound("The account has no recipient with this external id.")
    return found


class RecipientPreferencesView(APIView):
    """The preferences of the account's recipient with this external id.

    PUT (or PATCH) changes only the fields given and creates the recipient, with the
    default preferences, when the account has none with this external id (201)."""

    @extend_schema(responses=RecipientPreferencesSerializer)
    def get(self, request, external_id):
        return Response(RecipientPreferencesSerializer(preferences_data(found_or_404(request.user, external_id))).data)

    @extend_schema(
        request=RecipientPreferencesSerializer,
        responses={200: RecipientPreferencesSerializer, 201: RecipientPreferencesSerializer},
    )
    def put(self, request, external_id):
        return self._update(request, external_id)

    @extend_schema(
        request=RecipientPreferencesSerializer,
        responses={200: RecipientPreferencesSerializer, 201: RecipientPreferencesSerializer},
    )
    def patch(self, request, external_id):
        return self._update(request, external_id)

    def _update(self, request, external_id):
        if len(external_id) > EXTERNAL_ID_MAX or "\x00" in external_id:
            raise exceptions.ValidationError(
                {"external_id": [f"At most {EXTERNAL_ID_MAX} characters, and no NUL character."]}
            )
        current = recipient_preferences_get(account=request.user, external_id=external_id)
        serializer = RecipientPreferencesSerializer(
            preferences_data(current) if current else None, data=request.data, partial=True
        )
        serializer.is_valid(raise_exception=True)
        found = recipient_preferences_update(
            account=request.user, external_id=external_id, data=serializer.validated_data
        )
        answer = RecipientPreferencesSerializer(preferences_data(found)).data
        return Response(answer, status=status.HTTP_201_CREATED if found.created else status.HTTP_200_OK)


class RecipientUnsubscribeView(APIView):
    """Opt the recipient out (of marketing on every channel unless told otherwise) and
    record the withdrawal of consent; answers the updated preferences."""

    @extend_schema(request=UnsubscribeSerializer, responses=RecipientPreferencesSerializer)
    def post(self, request, external_id):
        found = found_or_404(request.user, external_id)
        serializer = UnsubscribeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        updated = recipient_unsubscribe(account=request.user, recipient=found.recipient, **serializer.validated_data)
        return Response(RecipientPreferencesSerializer(preferences_data(updated)).data)


class RecipientConsentView(generics.ListCreateAPIView):
    """The recipient's consent ledger, newest first; POST appends a grant or withdrawal
    (of marketing on every channel unless told otherwise)."""

    serializer_class = ConsentRecordSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ConsentRecord.objects.none()
        found = found_or_404(self.request.user, self.kwargs["external_id"])
        return recipient_consent_list(recipient=found.recipient)

    @extend_schema(request=ConsentWriteSerializer, responses={201: ConsentRecordSerializer})
    def post(self, request, external_id):
        found = found_or_404(request.user, external_id)
        serializer = ConsentWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        record = recipient_consent_record(account=request.user, recipient=found.recipient, **serializer.validated_data)
        return Response(ConsentRecordSerializer(record).data, status=status.HTTP_201_CREATED)
