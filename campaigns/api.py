"""`/api/v1/campaigns/`: campaigns and their actions, progress and per-recipient results.
Thin: validate, call one service, answer."""

from __future__ import annotations

import csv
import io

from django.db.models import Prefetch
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import exceptions, mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from accounts.errors import Conflict
from notifications.models import Delivery, DeliveryStatus
from providers.channels import CHANNELS
from templates.models import Category

from .models import Audience, Campaign, CampaignRecipient
from .services import (
    CampaignConflict,
    campaign_cancel,
    campaign_counts,
    campaign_create,
    campaign_pause,
    campaign_resume,
    campaign_start,
)


class VariantSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=50, required=False)
    template = serializers.CharField(max_length=200, required=False, allow_blank=True, help_text="Id or key.")
    subject = serializers.CharField(max_length=500, required=False, allow_blank=True)
    message = serializers.CharField(max_length=100_000, required=False, allow_blank=True)
    split = serializers.IntegerField(min_value=1, max_value=100, help_text="Per cent of the audience.")


class CampaignWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    audience = serializers.IntegerField(min_value=1, help_text="An audience of the account (its id).")
    channels = serializers.ListField(
        child=serializers.ChoiceField(choices=list(CHANNELS)), min_length=1, max_length=len(CHANNELS)
    )
    fallback = serializers.BooleanField(default=False)
    template = serializers.CharField(max_length=200, required=False, allow_blank=True, help_text="Id or key.")
    context = serializers.DictField(
        required=False, help_text="Shared by every recipient; a member's attributes override it."
    )
    subject = serializers.CharField(max_length=500, required=False, allow_blank=True)
    message = serializers.CharField(max_length=100_000, required=False, allow_blank=True)
    variants = VariantSerializer(many=True, required=False, help_text="A/B variants; their splits add up to 100.")
    category = serializers.ChoiceField(choices=Category.choices, default=Category.MARKETING)
    scheduled_for = serializers.DateTimeField(required=False, allow_null=True)
    local_send_time = serializers.TimeField(
        required=False, allow_null=True, help_text="Send at this time of day in each recipient's own time zone."
    )
    throttle_per_minute = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False, allow_null=True)


class VariantReadSerializer(serializers.Serializer):
    name = serializers.CharField()
    template = serializers.CharField(source="template.key", default=None, allow_null=True)
    template_version = serializers.IntegerField(source="template_version.version", default=None, allow_null=True)
    subject = serializers.CharField()
    message = serializers.CharField()
    split = serializers.IntegerField()


class CampaignSerializer(serializers.ModelSerializer):
    channels = serializers.ListField(child=serializers.CharField())
    context = serializers.DictField()
    variants = VariantReadSerializer(many=True, read_only=True)

    class Meta:
        model = Campaign
        fields = [
            "id",
            "name",
            "status",
            "audience",
            "channels",
            "fallback",
            "category",
            "context",
            "variants",
            "scheduled_for",
            "local_send_time",
            "throttle_per_minute",
            "created_at",
            "started_at",
            "paused_at",
            "completed_at",
            "cancelled_at",
        ]
        read_only_fields = fields


class SkippedReasonSerializer(serializers.Serializer):
    reason = serializers.CharField()
    count = serializers.IntegerField()


class CostSerializer(serializers.Serializer):
    currency = serializers.CharField()
    amount = serializers.CharField()


class ResultSerializer(serializers.Serializer):
    variant = serializers.CharField(allow_null=True)
    channel = serializers.CharField()
    deliveries = serializers.IntegerField()
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    opened = serializers.IntegerField()
    clicked = serializers.IntegerField()
    failed = serializers.IntegerField()
    delivery_rate = serializers.FloatField(allow_null=True, help_text="delivered / sent")
    open_rate = serializers.FloatField(allow_null=True, help_text="opened / delivered")
    click_rate = serializers.FloatField(allow_null=True, help_text="clicked / delivered")
    cost = CostSerializer(many=True)


class CountsSerializer(serializers.Serializer):
    by_status = serializers.DictField(child=serializers.IntegerField())
    skipped = serializers.IntegerField()
    skipped_reasons = SkippedReasonSerializer(many=True)
    recipients_reached = serializers.IntegerField()
    audience_size = serializers.IntegerField()
    progress = serializers.FloatField(allow_null=True)
    results = ResultSerializer(many=True, help_text="Per variant and channel.")


class CampaignDetailSerializer(CampaignSerializer):
    counts = serializers.SerializerMethodField()

    class Meta(CampaignSerializer.Meta):
        fields = [*CampaignSerializer.Meta.fields, "counts"]
        read_only_fields = fields

    @extend_schema_field(CountsSerializer)
    def get_counts(self, campaign) -> dict:
        return campaign_counts(campaign)


class RecipientDeliverySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    channel = serializers.CharField()
    status = serializers.CharField()
    error_message = serializers.CharField()


class CampaignRecipientSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    recipient = serializers.IntegerField(source="recipient_id")
    external_id = serializers.CharField(source="recipient.external_id")
    email = serializers.CharField(source="recipient.email")
    phone = serializers.CharField(source="recipient.phone")
    variant = serializers.CharField(source="variant.name", default=None, allow_null=True)
    skipped_reason = serializers.CharField()
    deliveries = serializers.SerializerMethodField()

    def get_deliveries(self, row) -> list[dict]:
        if row.notification_id is None:
            return []
        return RecipientDeliverySerializer(row.notification.deliveries.all(), many=True).data


RECIPIENT_FILTERS = [
    OpenApiParameter("status", OpenApiTypes.STR, enum=[*DeliveryStatus.values, "skipped"], required=False),
    OpenApiParameter("variant", OpenApiTypes.STR, required=False, description="A variant's name."),
    OpenApiParameter("channel", OpenApiTypes.STR, enum=list(CHANNELS), required=False),
    OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"], required=False),
]


@extend_schema_view(
    list=extend_schema(summary="The account's campaigns, newest first."),
    retrieve=extend_schema(summary="A campaign with its counts by delivery status, skipped reasons and progress."),
)
class CampaignViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = CampaignSerializer
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Campaign.objects.none()
        return (
            Campaign.objects.filter(account=self.request.user)
            .prefetch_related("variants__template", "variants__template_version")
            .order_by("-created_at", "-pk")
        )

    def get_serializer_class(self):
        return CampaignDetailSerializer if self.action == "retrieve" else CampaignSerializer

    @extend_schema(request=CampaignWriteSerializer, responses={201: CampaignSerializer}, summary="Create a draft.")
    def create(self, request):
        serializer = CampaignWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        audience = Audience.objects.filter(account=request.user, pk=data.pop("audience")).first()
        if audience is None:
            raise exceptions.ValidationError({"audience": ["No such audience."]})
        # A ValidationError from the service leaves as a 400 (accounts.errors.exception_handler).
        campaign = campaign_create(request.user, audience=audience, **data)
        return Response(CampaignSerializer(self._fresh(campaign)).data, status=201)

    def perform_content_negotiation(self, request, force=False):
        # `?format=csv` of the recipients is this view's own (it streams the CSV); answers
        # and errors are JSON whatever the format asked.
        if self.action == "recipients":
            return JSONRenderer(), JSONRenderer.media_type
        return super().perform_content_negotiation(request, force=force)

    def _fresh(self, campaign):
        return self.get_queryset().get(pk=campaign.pk)

    def _act(self, service):
        campaign = self.get_object()
        try:
            campaign = service(campaign)
        except CampaignConflict as exc:
            raise Conflict(str(exc)) from None
        return Response(CampaignDetailSerializer(self._fresh(campaign)).data)

    @extend_schema(request=None, responses=CampaignDetailSerializer, summary="Start now (or at scheduled_for).")
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return self._act(campaign_start)

    @extend_schema(
        request=None, responses=CampaignDetailSerializer, summary="Pause: nothing more is sent until resumed."
    )
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._act(campaign_pause)

    @extend_schema(request=None, responses=CampaignDetailSerializer, summary="Resume where it stopped.")
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._act(campaign_resume)

    @extend_schema(request=None, responses=CampaignDetailSerializer, summary="Cancel what has not been sent.")
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._act(campaign_cancel)

    @extend_schema(
        parameters=RECIPIENT_FILTERS,
        responses=CampaignRecipientSerializer(many=True),
        summary="Per-recipient results (JSON pages, or ?format=csv streamed whole).",
    )
    @action(detail=True, methods=["get"])
    def recipients(self, request, pk=None):
        campaign = self.get_object()
        rows = _recipients_filtered(campaign, request.query_params)
        if request.query_params.get("format") == "csv":
            response = StreamingHttpResponse(_csv_rows(rows), content_type="text/csv")
            response["Content-Disposition"] = f'attachment; filename="campaign-{campaign.pk}-recipients.csv"'
            return response
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(CampaignRecipientSerializer(page, many=True).data)


def _recipients_filtered(campaign: Campaign, params):
    rows = (
        CampaignRecipient.objects.filter(campaign=campaign)
        .select_related("recipient", "variant")
        .prefetch_related(Prefetch("notification__deliveries", queryset=Delivery.objects.order_by("created_at")))
        .order_by("pk")
    )
    status_filter = params.get("status")
    if status_filter == "skipped":
        rows = rows.filter(notification__isnull=True)
    elif status_filter:
        if status_filter not in DeliveryStatus.values:
            raise exceptions.ValidationError({"status": [f"One of {', '.join([*DeliveryStatus.values, 'skipped'])}."]})
        rows = rows.filter(notification__deliveries__status=status_filter).distinct()
    if params.get("variant"):
        rows = rows.filter(variant__name=params["variant"])
    if params.get("channel"):
        if params["channel"] not in CHANNELS:
            raise exceptions.ValidationError({"channel": [f"One of {', '.join(CHANNELS)}."]})
        rows = rows.filter(notification__deliveries__channel=params["channel"]).distinct()
    if params.get("format") not in (None, "", "json", "csv"):
        raise exceptions.ValidationError({"format": ["json or csv."]})
    return rows


CSV_HEADER = ["recipient_id", "external_id", "email", "phone", "variant", "channel", "status", "delivery_id", "detail"]


def _csv_rows(rows):
    """The CSV, a line at a time, reading the rows in keyset pages of 1,000."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_HEADER)
    yield flush()
    last = 0
    while True:
        page = list(rows.filter(pk__gt=last)[:1000])
        if not page:
            return
        for row in page:
            person = row.recipient
            variant = row.variant.name if row.variant else ""
            deliveries = list(row.notification.deliveries.all()) if row.notification_id else []
            if not deliveries:
                writer.writerow(
                    [
                        person.pk,
                        person.external_id,
                        person.email,
                        person.phone,
                        variant,
                        "",
                        "skipped",
                        "",
                        row.skipped_reason,
                    ]
                )
            for delivery in deliveries:
                writer.writerow(
                    [
                        person.pk,
                        person.external_id,
                        person.email,
                        person.phone,
                        variant,
                        delivery.channel,
                        delivery.status,
                        delivery.pk,
                        delivery.error_message,
                    ]
                )
        last = page[-1].pk
        yield flush()
