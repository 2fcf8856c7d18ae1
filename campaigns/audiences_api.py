"""/api/v1/campaigns/audiences/: the account's audiences, their CSV uploads, members and
count preview. See campaigns.audiences for the filter's keys and the upload's rules."""

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import exceptions, mixins, parsers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.errors import Conflict
from accounts.inputs import JSONParser
from notifications.models import Recipient
from notifications.serializers import LOCALE

from .audiences import (
    FILTER_MAX_ATTRIBUTES,
    FILTER_MAX_CHARS,
    FILTER_MAX_TAGS,
    NAME_MAX_CHARS,
    REJECTED_REPORTED,
    AudienceConflict,
    audience_count,
    audience_create,
    audience_delete,
    audience_import_csv,
    audience_members,
    audience_update,
)
from .models import Audience, AudienceKind, AudienceMember

CONFLICT = OpenApiResponse(
    response={"$ref": "#/components/schemas/Error"}, description="The audience's state does not allow this."
)

FILTER_SCHEMA = {
    "type": "object",
    "description": "A filter audience's conditions over the account's recipients, all of which must hold "
    "(an empty object matches every recipient); a list audience's is {}.",
    "properties": {
        "tags": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": FILTER_MAX_CHARS},
            "maxItems": FILTER_MAX_TAGS,
            "description": "The recipient has every one of these tags.",
        },
        "locale": {
            "type": "string",
            "pattern": LOCALE,
            "maxLength": 16,
            "description": 'The recipient\'s locale is this one or a regional variant ("es" matches es-MX).',
        },
        "timezone": {"type": "string", "maxLength": 64, "description": "An IANA time zone, e.g. Europe/Madrid."},
        "attributes": {
            "type": "object",
            "maxProperties": FILTER_MAX_ATTRIBUTES,
            "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]},
            "description": "Each key's value in the recipient's attributes equals the one given.",
        },
        "last_booking_after": {
            "type": "string",
            "format": "date",
            "description": "The recipient's latest booking started on or after this day (UTC).",
        },
        "last_booking_before": {
            "type": "string",
            "format": "date",
            "description": "The recipient's latest booking started before this day (UTC).",
        },
    },
    "additionalProperties": False,
}


# --- Serializers --------------------------------------------------------------------------


@extend_schema_field(FILTER_SCHEMA)
class AudienceFilterField(serializers.JSONField):
    """Any JSON here; campaigns.audiences validates it (and names the bad key)."""


@extend_schema_field(
    {
        "type": "string",
        "enum": AudienceKind.values,
        "description": "list: members come from CSV uploads; filter: from the filter, when a campaign starts.",
    },
    component_name="AudienceKindEnum",
)
class AudienceKindField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=AudienceKind.choices, **kwargs)


class AudienceSerializer(serializers.ModelSerializer):
    kind = AudienceKindField(read_only=True)
    filter = AudienceFilterField(read_only=True)
    member_count = serializers.IntegerField(
        read_only=True, help_text="Members written so far: a list's uploads, a filter's last freeze."
    )

    class Meta:
        model = Audience
        fields = ["id", "name", "kind", "filter", "member_count", "created_at", "updated_at"]
        read_only_fields = fields


class AudienceCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=NAME_MAX_CHARS, help_text="Unique within the account.")
    kind = AudienceKindField(required=False, default=AudienceKind.LIST)
    filter = AudienceFilterField(required=False, help_text="Only for a filter audience.")


class AudienceUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=NAME_MAX_CHARS, required=False)
    filter = AudienceFilterField(required=False, help_text="Replaces a filter audience's filter.")


@extend_schema_field({"type": "string", "format": "binary"})
class CSVFileField(serializers.FileField):
    """An uploaded file, documented as the multipart part it is."""


class AudienceUploadSerializer(serializers.Serializer):
    file = CSVFileField(
        help_text="A UTF-8 CSV with a header line. Columns phone (E.164), email, external_id (at least one per "
        "row), name, locale, timezone; every other column is kept as the member's attributes."
    )


class RejectedRowSerializer(serializers.Serializer):
    line = serializers.IntegerField(help_text="The CSV line; the header is line 1.")
    reason = serializers.CharField()


class AudienceImportSerializer(serializers.Serializer):
    imported = serializers.IntegerField(help_text="Rows that added a member.")
    duplicates = serializers.IntegerField(
        help_text="Rows whose recipient was already a member (its attributes are updated from the row)."
    )
    rejected = RejectedRowSerializer(many=True, help_text=f"The first {REJECTED_REPORTED} rows refused, and why.")
    rejected_count = serializers.IntegerField(help_text="Every row refused.")
    member_count = serializers.IntegerField(help_text="The audience's members after the upload.")


class AudienceCountSerializer(serializers.Serializer):
    count = serializers.IntegerField(
        help_text="Recipients in the audience now: a list's members, or the recipients a filter matches."
    )


class MemberRecipientSerializer(serializers.ModelSerializer):
    email = serializers.CharField(read_only=True, help_text="Blank when the recipient has none.")
    tags = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Recipient
        fields = ["id", "external_id", "email", "phone", "name", "timezone", "locale", "tags"]
        read_only_fields = fields


class AudienceMemberSerializer(serializers.ModelSerializer):
    recipient = MemberRecipientSerializer(read_only=True)
    attributes = serializers.DictField(
        child=serializers.CharField(), read_only=True, help_text="The upload's other columns, by header."
    )

    class Meta:
        model = AudienceMember
        fields = ["id", "recipient", "attributes", "created_at"]
        read_only_fields = fields


class AudienceFilterSet(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=AudienceKind.choices)

    class Meta:
        model = Audience
        fields = ["kind"]


# --- Views --------------------------------------------------------------------------------


def _invalid(exc: DjangoValidationError):
    if isinstance(exc, AudienceConflict):
        return Conflict(exc.messages[0])
    return exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)


@extend_schema_view(
    list=extend_schema(summary="The account's audiences, newest first."),
    retrieve=extend_schema(summary="One audience."),
)
class AudienceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Audiences: lists of recipients uploaded as CSV, or filters over the account's
    recipients, that campaigns are sent to."""

    serializer_class = AudienceSerializer
    filterset_class = AudienceFilterSet
    lookup_value_regex = r"\d+"
    parser_classes = [JSONParser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Audience.objects.none()
        return Audience.objects.filter(account=self.request.user).order_by("-created_at", "-pk")

    @extend_schema(
        request=AudienceCreateSerializer,
        responses={201: AudienceSerializer},
        summary="Create an audience: a list (fill it with upload/) or a filter.",
    )
    def create(self, request):
        serializer = AudienceCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            audience = audience_create(request.user, name=data["name"], kind=data["kind"], filter=data.get("filter"))
        except DjangoValidationError as exc:
            raise _invalid(exc) from None
        return Response(AudienceSerializer(audience).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=AudienceUpdateSerializer,
        responses=AudienceSerializer,
        summary="Rename the audience or replace a filter audience's filter.",
    )
    def partial_update(self, request, pk=None):
        audience = self.get_object()
        serializer = AudienceUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            audience = audience_update(audience, **serializer.validated_data)
        except DjangoValidationError as exc:
            raise _invalid(exc) from None
        return Response(AudienceSerializer(audience).data)

    @extend_schema(
        request=None,
        responses={204: None, 409: CONFLICT},
        summary="Delete the audience and its members; refused (409) while a campaign uses it.",
    )
    def destroy(self, request, pk=None):
        audience = self.get_object()
        try:
            audience_delete(audience)
        except DjangoValidationError as exc:
            raise _invalid(exc) from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request={"multipart/form-data": AudienceUploadSerializer},
        responses={200: AudienceImportSerializer, 409: CONFLICT},
        summary="Add a CSV's rows to a list audience; bad rows are reported by line, the rest imported.",
        description="Multipart, field `file`: a UTF-8 CSV whose first line is a header. A row needs a phone "
        "(E.164), an email or an external_id; name, locale and timezone are the recipient's, every other "
        "column a member attribute. Recipients are found (by external_id, else email, else phone) or created. "
        "A file that is not UTF-8, or has no header naming an address column, is refused whole (400); "
        "a filter audience takes no upload (409).",
    )
    @action(detail=True, methods=["post"], parser_classes=[parsers.MultiPartParser], filter_backends=[])
    def upload(self, request, pk=None):
        audience = self.get_object()
        serializer = AudienceUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            result = audience_import_csv(audience, serializer.validated_data["file"])
        except DjangoValidationError as exc:
            raise _invalid(exc) from None
        return Response(AudienceImportSerializer(result).data)

    @extend_schema(
        responses=AudienceCountSerializer,
        summary="The preview: how many recipients the audience holds now.",
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def count(self, request, pk=None):
        audience = self.get_object()
        return Response(AudienceCountSerializer({"count": audience_count(audience)}).data)

    @extend_schema(
        responses=AudienceMemberSerializer(many=True),
        summary="The audience's members in id order, with their recipients (a filter audience's as of its "
        "last freeze).",
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def members(self, request, pk=None):
        audience = self.get_object()
        page = self.paginate_queryset(audience_members(audience))
        return self.get_paginated_response(AudienceMemberSerializer(page, many=True).data)
