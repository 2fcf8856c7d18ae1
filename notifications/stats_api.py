"""GET /api/v1/notifications/stats/: the account's delivery statistics over a window."""

import re
from datetime import UTC, date, datetime, time, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.inputs import offset_problem
from templates.models import Channel

from .models import DeliveryStatus
from .services.stats import DEFAULT_WINDOW, MAX_WINDOW, delivery_stats

DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _renamed(fields: dict) -> dict:
    """`from` is a Python keyword: the field is declared as `from_` and answers to `from`."""
    return {("from" if name == "from_" else name): field for name, field in fields.items()}


# --- The window ---------------------------------------------------------------------------


@extend_schema_field({"type": "string", "example": "2026-11-01"})
class WindowBoundField(serializers.Field):
    """An ISO 8601 date or date-time. A date is midnight UTC starting that day, or, as an
    exclusive end (`day_end`), the midnight that ends it; a date-time without an offset is
    UTC. Blank is as if not given."""

    default_error_messages = {
        "invalid": "Expected an ISO 8601 date (2026-11-01) or date-time (2026-11-01T09:30:00+01:00).",
        "range": "Out of the supported range of dates.",
    }

    def __init__(self, *, day_end: bool = False, **kwargs):
        self.day_end = day_end
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        value = data.strip()
        if not value:
            return None
        try:
            if DATE_PATTERN.match(value):
                moment = datetime.combine(date.fromisoformat(value), time.min, tzinfo=UTC)
                return moment + timedelta(days=1) if self.day_end else moment
            moment = parse_datetime(value)
        except ValueError:
            self.fail("invalid")
        except OverflowError:
            self.fail("range")
        if moment is None:
            self.fail("invalid")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        problem = offset_problem(moment)
        if problem:
            raise serializers.ValidationError(problem)
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            self.fail("range")

    def to_representation(self, value):
        return value.isoformat()


class StatsWindowSerializer(serializers.Serializer):
    from_ = WindowBoundField(
        required=False,
        help_text="Start of the window, inclusive: an ISO date (midnight UTC) or date-time with offset. "
        "By default `to` less 7 days.",
    )
    to = WindowBoundField(
        required=False,
        day_end=True,
        help_text="End of the window, exclusive for a date-time; a date means the end of that day (UTC). "
        "By default now.",
    )

    def get_fields(self):
        return _renamed(super().get_fields())

    def validate(self, attrs):
        end = attrs.get("to") or timezone.now()
        try:
            start = attrs.get("from") or end - DEFAULT_WINDOW
        except OverflowError:
            raise serializers.ValidationError({"to": [WindowBoundField.default_error_messages["range"]]}) from None
        if start > end:
            raise serializers.ValidationError({"from": ["Must not be after `to`."]})
        if end - start > MAX_WINDOW:
            raise serializers.ValidationError({"to": [f"The window is at most {MAX_WINDOW.days} days."]})
        return {"start": start, "end": end}


# --- The answer ---------------------------------------------------------------------------


class StatsCostSerializer(serializers.Serializer):
    currency = serializers.CharField(help_text="ISO 4217, as the attempts recorded it.")
    amount = serializers.DecimalField(
        max_digits=None, decimal_places=6, help_text="The sum, as a string to keep it exact."
    )


class StatsStatusCountsSerializer(serializers.Serializer):
    """One count per delivery status, zeros included."""

    def get_fields(self):
        return {status: serializers.IntegerField(min_value=0) for status in DeliveryStatus.values}


class StatsCountsSerializer(serializers.Serializer):
    # The fields a row is known by, shown before its counts.
    leading: tuple[str, ...] = ()

    def get_fields(self):
        fields = super().get_fields()
        return {**{name: fields.pop(name) for name in self.leading}, **fields}

    total = serializers.IntegerField(min_value=0, help_text="Deliveries created in the window.")
    sent = serializers.IntegerField(min_value=0, help_text="Accepted by a provider.")
    delivered = serializers.IntegerField(
        min_value=0, help_text="Confirmed delivered (or opened, clicked), and not failed since."
    )
    failed = serializers.IntegerField(min_value=0, help_text="Status failed, undelivered or bounced.")
    delivery_rate = serializers.FloatField(
        allow_null=True, help_text="delivered / sent, to 4 places; null when nothing was sent."
    )
    failure_rate = serializers.FloatField(
        allow_null=True,
        help_text="failed / (deliveries sent or failed, each once), to 4 places; null when there are none.",
    )
    by_status = StatsStatusCountsSerializer()
    cost = StatsCostSerializer(
        many=True, help_text="The attempts' cost per currency; attempts of unknown cost left out."
    )


class StatsChannelSerializer(StatsCountsSerializer):
    leading = ("channel",)
    channel = serializers.ChoiceField(choices=Channel.choices)


class StatsProviderSerializer(StatsCountsSerializer):
    leading = ("provider", "provider_id", "kind", "channel")
    provider = serializers.CharField(
        allow_null=True,
        help_text="The provider record's name, or the platform provider's kind; null for deliveries "
        "that never reached a provider.",
    )
    provider_id = serializers.IntegerField(
        allow_null=True, help_text="The account's provider record; null for the platform's provider."
    )
    kind = serializers.CharField(allow_null=True, help_text="The provider kind (twilio, sendgrid, ...).")
    channel = serializers.ChoiceField(choices=Channel.choices)


class DeliveryStatsSerializer(serializers.Serializer):
    from_ = serializers.DateTimeField(help_text="Start of the window (inclusive).")
    to = serializers.DateTimeField(help_text="End of the window (exclusive).")
    totals = StatsCountsSerializer()
    by_channel = StatsChannelSerializer(many=True)
    by_provider = StatsProviderSerializer(many=True)

    def get_fields(self):
        return _renamed(super().get_fields())


EXAMPLE_COUNTS = {
    "total": 5,
    "sent": 4,
    "delivered": 2,
    "failed": 2,
    "delivery_rate": 0.5,
    "failure_rate": 0.4,
    "by_status": {**dict.fromkeys(DeliveryStatus.values, 0), "delivered": 2, "bounced": 1, "failed": 1, "sent": 1},
    "cost": [{"currency": "USD", "amount": "0.030000"}],
}


class DeliveryStatsView(APIView):
    """The account's delivery statistics over a window: in total, per channel and per
    provider.

    **Window.** `from` (inclusive) and `to` (exclusive) take an ISO date (`2026-11-01`) or
    date-time with offset (`2026-11-01T09:30:00+01:00`; without an offset it is UTC). A date
    `from` is the start of that day and a date `to` the end of that day, both UTC. By
    default the window is the 7 days up to now; with only `from`, it runs to now; with only
    `to`, it starts 7 days before. `from` after `to`, a window over 366 days or a value
    that does not parse is a 400.

    **Which deliveries.** The account's deliveries created within the window, test sends
    included.

    **Counts.** `total`: every such delivery, and `by_status` the same split by current
    status. `sent`: accepted by a provider (sent_at set, or confirmed delivered).
    `delivered`: status delivered, opened or clicked, or delivered_at set, unless it failed
    since (a delivery that bounces after delivery counts as failed, no longer as
    delivered). `failed`: status failed, undelivered or bounced. `delivery_rate` =
    delivered / sent; `failure_rate` = failed / (deliveries sent or failed, each counted
    once); both rounded to 4 places, null when the divisor is 0.

    **Cost.** The sum of the recorded cost of every attempt of those deliveries (failed
    attempts included; attempts of unknown cost left out), one entry per currency, the
    amount a decimal string with 6 places.

    **Per provider.** A delivery counts under the provider of its successful attempt,
    else of its last attempt (the provider that refused it), else the kind it names: the
    account's provider record (`provider` its name, `provider_id` its id) or the
    platform's provider (`provider` the kind, `provider_id` null). Deliveries that never
    reached a provider are listed under `provider` and `kind` null, so that the rows add up
    to the totals. A provider's cost is that of the attempts made through it, whichever
    provider the delivery ended on. Rows are per channel: a platform kind that sends
    several channels has one row for each. A deleted record's attempts count under its
    kind.
    """

    @extend_schema(
        summary="Delivery statistics: sent, delivered, failed, rates and cost, per channel and provider.",
        parameters=[StatsWindowSerializer],
        responses={200: DeliveryStatsSerializer},
        examples=[
            OpenApiExample(
                "A week of SMS through one provider record",
                response_only=True,
                value={
                    "from": "2026-11-01T00:00:00Z",
                    "to": "2026-11-08T00:00:00Z",
                    "totals": EXAMPLE_COUNTS,
                    "by_channel": [{"channel": "sms", **EXAMPLE_COUNTS}],
                    "by_provider": [
                        {
                            "provider": "our twilio",
                            "provider_id": 7,
                            "kind": "twilio",
                            "channel": "sms",
                            **EXAMPLE_COUNTS,
                        }
                    ],
                },
            )
        ],
    )
    def get(self, request):
        window = StatsWindowSerializer(data=request.query_params)
        window.is_valid(raise_exception=True)
        stats = delivery_stats(account=request.user, **window.validated_data)
        return Response(DeliveryStatsSerializer(stats).data)
