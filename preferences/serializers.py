"""The account's preferences over the API, and the input rules the recipient preferences
share with them: local times as "HH:MM" and time zones by IANA name."""

from __future__ import annotations

import datetime
import functools
import re
import zoneinfo

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import TOGGLE_PREFIXES, AccountPreference, NotificationMethod
from .services import account_preference_update

MAX_LEAD_MINUTES = 43200  # 30 days
MAX_REMINDERS = 10
LOCAL_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(:[0-5]\d)?$")


@functools.lru_cache(maxsize=1)
def known_time_zones() -> frozenset[str]:
    # available_timezones() walks the zone database on every call.
    return frozenset(zoneinfo.available_timezones())


def time_zone_problem(value: str) -> str | None:
    if value not in known_time_zones():
        return f"Unknown time zone {value!r}; use an IANA name such as Europe/Madrid."
    return None


@extend_schema_field(
    {
        "type": "string",
        "pattern": r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$",
        "example": "22:00",
        "description": 'A local wall-clock time, "HH:MM" (24-hour).',
    }
)
class LocalTimeField(serializers.Field):
    """A wall-clock time as "HH:MM" (seconds, if sent, must be :00 or are dropped)."""

    default_error_messages = {"invalid": 'Enter a time as "HH:MM", from 00:00 to 23:59.'}

    def to_internal_value(self, data):
        match = LOCAL_TIME.match(data) if isinstance(data, str) else None
        if match is None:
            self.fail("invalid")
        return datetime.time(int(match.group(1)), int(match.group(2)))

    def to_representation(self, value):
        return value.strftime("%H:%M")


class TimeZoneField(serializers.CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 64)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        problem = time_zone_problem(value) if value else None
        if problem:
            raise serializers.ValidationError(problem)
        return value


class ReminderMinutesField(serializers.ListField):
    """Minutes before a booking that reminders go: each from 1 to 43200, no repeats, at
    most ten; kept in descending order (the reminder furthest ahead of the booking first)."""

    def __init__(self, **kwargs):
        super().__init__(
            child=serializers.IntegerField(min_value=1, max_value=MAX_LEAD_MINUTES),
            max_length=MAX_REMINDERS,
            **kwargs,
        )

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        repeated = sorted({m for m in value if value.count(m) > 1})
        if repeated:
            raise serializers.ValidationError(f"Each reminder time may appear only once; repeated: {repeated}.")
        return sorted(value, reverse=True)


# booking_confirmations_email, ..., follow_ups_email, then the same six for SMS.
TOGGLES = [f"{prefix}_{channel}" for channel in ("email", "sms") for prefix in TOGGLE_PREFIXES.values()]


class AccountPreferenceSerializer(serializers.ModelSerializer):
    reminder_minutes_before = ReminderMinutesField(required=False)
    follow_up_minutes_after = serializers.IntegerField(min_value=0, max_value=MAX_LEAD_MINUTES, required=False)
    daily_agenda_time = LocalTimeField(required=False)
    dnd_start_time = LocalTimeField(required=False)
    dnd_end_time = LocalTimeField(required=False)
    preferred_notification_method = serializers.ChoiceField(choices=NotificationMethod.choices, required=False)
    max_reminders_per_day = serializers.IntegerField(min_value=1, max_value=50, required=False)
    timezone = TimeZoneField(required=False, help_text="IANA name, e.g. Europe/Madrid.")

    class Meta:
        model = AccountPreference
        fields = [
            *TOGGLES,
            "reminder_minutes_before",
            "follow_up_minutes_after",
            "daily_agenda_time",
            "dnd_enabled",
            "dnd_start_time",
            "dnd_end_time",
            "exclude_weekends_reminders",
            "exclude_weekends_agenda",
            "preferred_notification_method",
            "max_reminders_per_day",
            "timezone",
            "updated_at",
        ]
        read_only_fields = ["updated_at"]
        extra_kwargs = {name: {"required": False} for name in TOGGLES}

    def validate(self, attrs):
        merged = {
            name: attrs.get(name, getattr(self.instance, name, None))
            for name in ("dnd_enabled", "dnd_start_time", "dnd_end_time")
        }
        if merged["dnd_enabled"] and merged["dnd_start_time"] == merged["dnd_end_time"]:
            raise serializers.ValidationError(
                {"dnd_end_time": ["Do-not-disturb must end at another time than it starts."]}
            )
        return attrs

    def update(self, instance, validated_data):
        return account_preference_update(preference=instance, changes=validated_data)
