"""The booking lifecycle (`events/`) and the schedule list (`scheduled/`)."""

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.errors import Conflict
from accounts.inputs import DateTimeField, IsoDateTimeFilter
from templates.api import UUID_PATTERN
from templates.models import Channel

from .models import NotificationSchedule, ScheduleStatus, ScheduleType
from .serializers import E164, LOCALE, RecipientSerializer
from .services.bookings import EVENT_TYPES, EventConflict, booking_event_handle
from .services.events import InvalidTransition
from .services.schedules import schedule_cancel


class PersonSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    phone = serializers.RegexField(E164, required=False, allow_blank=True, default="")
    timezone = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")

    validate_timezone = RecipientSerializer.validate_timezone


class InviteeSerializer(PersonSerializer):
    locale = serializers.RegexField(LOCALE, max_length=16, required=False, allow_blank=True, default="")

    def validate(self, attrs):
        if not attrs.get("email") and not attrs.get("phone"):
            raise serializers.ValidationError({"email": ["Give the invitee's email address or phone number."]})
        return attrs


class BookingSerializer(serializers.Serializer):
    id = serializers.CharField(max_length=200)
    start_time = DateTimeField()
    end_time = DateTimeField()
    event_name = serializers.CharField(max_length=200)
    event_description = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    location = serializers.CharField(max_length=500, required=False, allow_blank=True)
    meeting_link = serializers.URLField(max_length=1000, required=False, allow_blank=True)
    cancel_url = serializers.URLField(max_length=1000, required=False, allow_blank=True)
    reschedule_url = serializers.URLField(max_length=1000, required=False, allow_blank=True)
    booking_url = serializers.URLField(max_length=1000, required=False, allow_blank=True)
    cancellation_reason = serializers.CharField(max_length=1000, required=False, allow_blank=True)
    organizer = PersonSerializer(required=False)
    invitee = InviteeSerializer()

    def validate(self, attrs):
        if attrs["end_time"] <= attrs["start_time"]:
            raise serializers.ValidationError({"end_time": ["Must be after start_time."]})
        return attrs


class BookingEventSerializer(serializers.Serializer):
    id = serializers.CharField(max_length=200, required=False, allow_blank=True, help_text="The sender's event id.")
    type = serializers.ChoiceField(choices=EVENT_TYPES)
    occurred_at = DateTimeField(
        required=False, help_text="When the event happened; an event older than the booking's last one is refused."
    )
    booking = BookingSerializer()


class BookingEventResultSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["processed", "duplicate"])
    booking = serializers.UUIDField()
    type = serializers.CharField()
    sent = serializers.ListField(child=serializers.UUIDField(), help_text="Notifications sent at once.")
    scheduled = serializers.IntegerField(help_text="Reminders or follow-ups scheduled.")
    moved = serializers.IntegerField(help_text="Pending reminders moved to the new time.")
    cancelled = serializers.IntegerField(help_text="Pending reminders cancelled or skipped.")


class BookingEventsView(APIView):
    """A booking lifecycle event: booking.created, booking.rescheduled, booking.cancelled,
    booking.completed. 202 when applied; 200 with status "duplicate" when the same event
    was applied before (nothing changes); 409 for an event older than the booking's last."""

    @extend_schema(
        request=BookingEventSerializer,
        responses={202: BookingEventResultSerializer, 200: BookingEventResultSerializer},
    )
    def post(self, request):
        serializer = BookingEventSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            result, new = booking_event_handle(account=request.user, event=serializer.validated_data)
        except EventConflict as exc:
            if exc.status == 404:
                raise exceptions.NotFound(str(exc)) from None
            raise Conflict(str(exc)) from None
        return Response(result, status=status.HTTP_202_ACCEPTED if new else status.HTTP_200_OK)


class ScheduleFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=ScheduleStatus.choices)
    schedule_type = django_filters.MultipleChoiceFilter(choices=ScheduleType.choices)
    channel = django_filters.MultipleChoiceFilter(choices=Channel.choices)
    booking = django_filters.CharFilter(field_name="booking__external_id", help_text="The booking's id.")
    scheduled_after = IsoDateTimeFilter(field_name="scheduled_for", lookup_expr="gte")
    scheduled_before = IsoDateTimeFilter(field_name="scheduled_for", lookup_expr="lt")

    class Meta:
        model = NotificationSchedule
        fields = ["status", "schedule_type", "channel", "booking", "scheduled_after", "scheduled_before"]


class ScheduleSerializer(serializers.ModelSerializer):
    booking = serializers.CharField(source="booking.external_id", default=None, read_only=True, allow_null=True)
    template = serializers.CharField(source="template.key", default=None, read_only=True, allow_null=True)
    recipient = serializers.SerializerMethodField()

    class Meta:
        model = NotificationSchedule
        fields = [
            "id",
            "schedule_type",
            "channel",
            "status",
            "scheduled_for",
            "recipient",
            "booking",
            "template",
            "minutes_before",
            "priority",
            "category",
            "notification",
            "delivery",
            "error_message",
            "created_at",
            "processed_at",
        ]
        read_only_fields = fields

    def get_recipient(self, schedule) -> dict:
        person = schedule.recipient
        return {
            "id": person.pk,
            "external_id": person.external_id,
            "name": person.name,
            "email": person.email,
            "phone": person.phone,
        }


class ScheduleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """What is scheduled: scheduled sends, booking reminders and follow-ups, by due time."""

    serializer_class = ScheduleSerializer
    filterset_class = ScheduleFilter
    lookup_value_regex = UUID_PATTERN

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return NotificationSchedule.objects.none()
        return (
            NotificationSchedule.objects.filter(account=self.request.user)
            .select_related("recipient", "booking", "template")
            .order_by("scheduled_for", "pk")
        )

    @extend_schema(request=None, responses={200: ScheduleSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        schedule = self.get_object()
        try:
            schedule = schedule_cancel(schedule=schedule)
        except InvalidTransition as exc:
            raise Conflict(str(exc)) from None
        return Response(ScheduleSerializer(schedule).data)
