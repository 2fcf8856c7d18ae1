"""The booking lifecycle: a sender's events keep a booking record, send its notices and
keep its reminders in step.

- `booking.created`: the confirmation goes out at once and a reminder is scheduled at
  each of the account's `reminder_minutes_before` (those already past are not);
- `booking.rescheduled`: the reschedule notice goes out and pending reminders move with
  the start time (one that would now be past is skipped, one that fits again is added);
- `booking.cancelled`: the cancellation goes out and pending reminders are cancelled;
- `booking.completed`: pending reminders are cancelled and the follow-up is scheduled.

The same event twice changes nothing: it is found by its id, or without one by its type,
booking and start time. An event older than the booking's last one is refused. Messages
are rendered when they go out, from the booking as it stands then, with times in their
reader's own time zone.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from preferences.services import account_preference, local_zone
from templates.models import TemplateType
from templates.selectors import template_resolve

from ..models import (
    Booking,
    BookingEvent,
    BookingStatus,
    NotificationSchedule,
    ScheduleStatus,
    ScheduleType,
)
from .accept import notification_accept, recipients_resolve

logger = logging.getLogger("beacon.bookings")

EVENT_TYPES = ("booking.created", "booking.rescheduled", "booking.cancelled", "booking.completed")
NOTICE_TEMPLATE = {
    "booking.created": TemplateType.BOOKING_CONFIRMATION,
    "booking.rescheduled": TemplateType.BOOKING_RESCHEDULED,
    "booking.cancelled": TemplateType.BOOKING_CANCELLATION,
}
PENDING_BOOKING_SCHEDULES = (ScheduleType.REMINDER, ScheduleType.FOLLOW_UP)


class EventConflict(Exception):
    """The event does not fit the booking's history (older than its last event, or about
    a booking that is cancelled or unknown)."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


def event_key(event: dict) -> str:
    if event.get("id"):
        return f"id:{event['id']}"
    booking = event["booking"]
    return f"{event['type']}:{booking['id']}:{booking['start_time'].isoformat()}"


def booking_event_handle(*, account, event: dict, source: str = "api") -> tuple[dict, bool]:
    """Apply one lifecycle event; returns (what it did, whether it was new)."""
    key = event_key(event)
    now = timezone.now()
    occurred_at = event.get("occurred_at") or now
    data = event["booking"]
    with transaction.atomic():
        seen = BookingEvent.objects.filter(account=account, key=key).first()
        if seen is not None:
            return {**seen.result, "status": "duplicate"}, False
        booking = Booking.objects.select_for_update().filter(account=account, external_id=data["id"]).first()
        kind = event["type"]
        if booking is None and kind != "booking.created":
            raise EventConflict(f"Booking {data['id']!r} is unknown; its booking.created event comes first.", 404)
        if booking is not None:
            if occurred_at < booking.last_event_at:
                raise EventConflict(
                    f"This event ({occurred_at.isoformat()}) is older than the booking's last one "
                    f"({booking.last_event_at.isoformat()}); it was not applied."
                )
            if kind == "booking.created":
                raise EventConflict(f"Booking {data['id']!r} already exists; send booking.rescheduled to change it.")
            if booking.status != BookingStatus.CONFIRMED:
                raise EventConflict(f"Booking {data['id']!r} is {booking.status}; it takes no more events.")
        previous_start = booking.start_time if booking else None
        booking = _booking_save(account, booking, data, kind, occurred_at)
        prefs = account_preference(account=account)
        result = {"booking": str(booking.pk), "type": kind, "sent": [], "scheduled": 0, "moved": 0, "cancelled": 0}
        if kind in NOTICE_TEMPLATE:
            extra = {"previous_start_time": _when(previous_start, booking)} if previous_start else {}
            result["sent"] = _notice(account, booking, prefs, NOTICE_TEMPLATE[kind], source, extra)
        if kind == "booking.created":
            result["scheduled"] = _reminders_schedule(account, booking, prefs, now)
        elif kind == "booking.rescheduled":
            result["moved"], result["scheduled"], result["cancelled"] = _reminders_move(account, booking, prefs, now)
        else:
            result["cancelled"] = _pending_cancel(booking, now, f"the booking was {booking.status}")
            if kind == "booking.completed":
                result["scheduled"] = _follow_up_schedule(account, booking, prefs, now)
        BookingEvent.objects.create(
            account=account,
            booking=booking,
            key=key,
            type=kind,
            occurred_at=occurred_at,
            payload=_jsonable(event),
            result=result,
        )
    logger.info("booking %s: %s applied (%s)", booking.external_id, kind, result)
    return {**result, "status": "processed"}, True


def _booking_save(account, booking, data: dict, kind: str, occurred_at: datetime) -> Booking:
    details = _jsonable(data)
    invitee = data.get("invitee") or {}
    person = None
    if invitee.get("email") or invitee.get("phone"):
        fields = ("email", "phone", "name", "timezone", "locale")
        (person,) = recipients_resolve(account=account, details=[{f: invitee.get(f) or "" for f in fields}])
    status = {
        "booking.cancelled": BookingStatus.CANCELLED,
        "booking.completed": BookingStatus.COMPLETED,
    }.get(kind, BookingStatus.CONFIRMED)
    if booking is None:
        booking = Booking(account=account, external_id=data["id"])
    booking.status = status
    booking.start_time = data["start_time"]
    booking.end_time = data["end_time"]
    booking.event_name = data.get("event_name") or ""
    booking.details = details
    booking.invitee = person or booking.invitee
    booking.last_event_at = occurred_at
    booking.save()
    return booking


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# --- What a message about a booking says ---------------------------------------------


def _format(moment: datetime, zone_name: str) -> str:
    local = moment.astimezone(local_zone(zone_name))
    return local.strftime("%a %d %b %Y, %H:%M ") + (local.tzname() or zone_name)


def _when(moment: datetime | None, booking: Booking, reader_zone: str = "") -> str:
    if moment is None:
        return ""
    return _format(moment, reader_zone or _invitee(booking).get("timezone") or "UTC")


def _invitee(booking: Booking) -> dict:
    return booking.details.get("invitee") or {}


def booking_context(booking: Booking, *, reader_zone: str) -> dict:
    """The template context of a message about the booking, for a reader in `reader_zone`:
    the booking's fields, with `start_time`/`end_time` in the reader's zone and the
    invitee's and organizer's own zones alongside. Empty values are left out, so that the
    template's defaults fill them."""
    details = booking.details
    invitee, organizer = _invitee(booking), details.get("organizer") or {}
    invitee_zone = invitee.get("timezone") or reader_zone
    organizer_zone = organizer.get("timezone") or reader_zone
    minutes = int((booking.end_time - booking.start_time).total_seconds() // 60)
    context = {
        "booking_id": booking.external_id,
        "event_name": booking.event_name,
        "event_description": details.get("event_description", ""),
        "location": details.get("location", ""),
        "meeting_link": details.get("meeting_link", ""),
        "cancel_url": details.get("cancel_url", ""),
        "reschedule_url": details.get("reschedule_url", ""),
        "booking_url": details.get("booking_url") or details.get("reschedule_url", ""),
        "cancellation_reason": details.get("cancellation_reason", ""),
        "invitee_name": invitee.get("name", ""),
        "invitee_email": invitee.get("email", ""),
        "invitee_phone": invitee.get("phone", ""),
        "invitee_timezone": invitee.get("timezone", ""),
        "organizer_name": organizer.get("name", ""),
        "organizer_email": organizer.get("email", ""),
        "organizer_phone": organizer.get("phone", ""),
        "start_time": _format(booking.start_time, reader_zone),
        "end_time": _format(booking.end_time, reader_zone),
        "start_time_invitee": _format(booking.start_time, invitee_zone),
        "end_time_invitee": _format(booking.end_time, invitee_zone),
        "start_time_organizer": _format(booking.start_time, organizer_zone),
        "end_time_organizer": _format(booking.end_time, organizer_zone),
        "duration": f"{minutes} minutes",
        "timezone": reader_zone,
    }
    return {key: value for key, value in context.items() if value not in ("", None)}


def invitee_details(booking: Booking) -> dict:
    """The invitee as a send's recipient: the stored recipient's details, which preference
    updates keep current, over what the booking said."""
    invitee = _invitee(booking)
    person = booking.invitee
    fields = ("email", "phone", "name", "timezone", "locale")
    details = {f: invitee.get(f) or "" for f in fields}
    if person is not None:
        details.update({f: getattr(person, f) for f in fields if getattr(person, f)})
    return details


def booking_channels(booking: Booking, prefs) -> list[str]:
    """The channels the account's preferred method names that the invitee has an address for."""
    details = invitee_details(booking)
    address = {"email": "email", "sms": "phone"}
    return [channel for channel in prefs.method_channels() if details.get(address[channel])]


def _notice(account, booking: Booking, prefs, kind: str, source: str, extra: dict) -> list[str]:
    template = template_resolve(account=account, reference=kind)
    channels = booking_channels(booking, prefs)
    if template is None or template.current_version_id is None or not channels:
        logger.warning("booking %s: no %s sent (template or address missing)", booking.external_id, kind)
        return []
    recipient = invitee_details(booking)
    context = {**booking_context(booking, reader_zone=recipient.get("timezone") or prefs.timezone), **extra}
    accepted = notification_accept(
        account=account,
        channels=channels,
        recipient=recipient,
        template=template,
        context={k: v for k, v in context.items() if v},
        source=f"booking:{source}"[:32],
        booking=booking,
    )
    return [str(accepted.notification.pk)]


# --- Reminders and follow-ups --------------------------------------------------------


def _schedule(account, booking, schedule_type, channel, template, at, minutes_before=None) -> NotificationSchedule:
    return NotificationSchedule(
        id=uuid.uuid4(),
        account=account,
        schedule_type=schedule_type,
        channel=channel,
        recipient=booking.invitee,
        booking=booking,
        template=template,
        minutes_before=minutes_before,
        scheduled_for=at,
    )


def _reminders_wanted(account, booking, prefs, now) -> dict[tuple[int, str], datetime]:
    if booking.invitee is None:
        return {}
    return {
        (minutes, channel): booking.start_time - timedelta(minutes=minutes)
        for minutes in prefs.reminder_minutes_before
        for channel in booking_channels(booking, prefs)
        if booking.start_time - timedelta(minutes=minutes) > now
    }


def _reminders_schedule(account, booking, prefs, now) -> int:
    wanted = _reminders_wanted(account, booking, prefs, now)
    template = template_resolve(account=account, reference=TemplateType.BOOKING_REMINDER) if wanted else None
    if template is None:
        return 0
    NotificationSchedule.objects.bulk_create(
        [
            _schedule(account, booking, ScheduleType.REMINDER, channel, template, at, minutes)
            for (minutes, channel), at in wanted.items()
        ]
    )
    return len(wanted)


def _reminders_move(account, booking, prefs, now) -> tuple[int, int, int]:
    """Pending reminders follow the new start time; returns (moved, added, skipped)."""
    pending = list(
        NotificationSchedule.objects.select_for_update().filter(
            booking=booking, schedule_type=ScheduleType.REMINDER, status=ScheduleStatus.SCHEDULED
        )
    )
    moved, past = [], []
    for schedule in pending:
        at = booking.start_time - timedelta(minutes=schedule.minutes_before or 0)
        schedule.updated_at = now
        if at <= now:
            schedule.status, schedule.processed_at = ScheduleStatus.SKIPPED, now
            schedule.error_message = "The booking moved: this reminder's time has passed."
            past.append(schedule)
        else:
            schedule.scheduled_for = at
            moved.append(schedule)
    if pending:
        NotificationSchedule.objects.bulk_update(
            pending, ["status", "scheduled_for", "processed_at", "error_message", "updated_at"]
        )
    have = {(s.minutes_before, s.channel) for s in moved}
    wanted = _reminders_wanted(account, booking, prefs, now)
    missing = {key: at for key, at in wanted.items() if key not in have}
    template = template_resolve(account=account, reference=TemplateType.BOOKING_REMINDER) if missing else None
    if template is not None:
        NotificationSchedule.objects.bulk_create(
            [
                _schedule(account, booking, ScheduleType.REMINDER, channel, template, at, minutes)
                for (minutes, channel), at in missing.items()
            ]
        )
    return len(moved), len(missing) if template is not None else 0, len(past)


def _pending_cancel(booking, now, why: str) -> int:
    return NotificationSchedule.objects.filter(
        booking=booking, schedule_type__in=PENDING_BOOKING_SCHEDULES, status=ScheduleStatus.SCHEDULED
    ).update(status=ScheduleStatus.CANCELLED, processed_at=now, updated_at=now, error_message=f"Cancelled: {why}.")


def _follow_up_schedule(account, booking, prefs, now) -> int:
    if booking.invitee is None:
        return 0
    template = template_resolve(account=account, reference=TemplateType.FOLLOW_UP)
    channels = booking_channels(booking, prefs)
    if template is None or not channels:
        return 0
    at = max(now, booking.end_time + timedelta(minutes=prefs.follow_up_minutes_after))
    NotificationSchedule.objects.bulk_create(
        [_schedule(account, booking, ScheduleType.FOLLOW_UP, channel, template, at) for channel in channels]
    )
    return len(channels)
