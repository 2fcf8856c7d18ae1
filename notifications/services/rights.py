"""A recipient's data rights, by the account's external id for them: the export of
everything Beacon holds on them, and their erasure.

Erasure keeps the rows the account's logs and statistics are made of (the recipient,
their notifications and deliveries) with everything that names the person blanked, and
deletes what is only about them (preferences, consent, pending schedules). Suppressions
of their addresses stay, with the address blanked: they are found by the address hash,
so an erased address that said STOP stays unreachable.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Prefetch, Q
from django.utils import timezone

from preferences.models import (
    ConsentRecord,
    DailyCount,
    RecipientPreference,
    Suppression,
    SuppressionReason,
    address_hash,
)
from providers.channels import CHANNELS

from ..models import (
    CANCELLABLE_STATUSES,
    Booking,
    BookingEvent,
    Delivery,
    DeliveryAttempt,
    DeliveryEvent,
    DeliveryStatus,
    Device,
    IdempotencyKey,
    Notification,
    NotificationSchedule,
    Recipient,
    ScheduleStatus,
)
from .events import StatusChange, events_record

logger = logging.getLogger("beacon.rights")

ERASED = "[erased]"
# Provider error texts (on these events and on attempts) may quote the address.
ERROR_STATUSES = (DeliveryStatus.FAILED, DeliveryStatus.UNDELIVERED, DeliveryStatus.BOUNCED)
RECIPIENT_FIELDS = ("external_id", "name", "email", "phone", "timezone", "locale", "created_at", "updated_at")
DELIVERY_FIELDS = (
    "id",
    "channel",
    "to",
    "status",
    "locale",
    "subject",
    "body",
    "html_body",
    "options",
    "provider",
    "error_code",
    "error_message",
    "created_at",
    "sent_at",
    "delivered_at",
    "opened_at",
    "clicked_at",
    "failed_at",
)
EVENT_FIELDS = ("from_status", "status", "source", "detail", "payload", "occurred_at")


class RecipientNotFound(Exception):
    """The account has no recipient with this external id."""


def recipient_find(*, account, external_id: str) -> Recipient | None:
    """The account's recipient with this external id, or None (an erased recipient has none)."""
    if not external_id or "\x00" in external_id:
        return None
    return Recipient.objects.filter(account=account, external_id=external_id).first()


def _addresses(recipient: Recipient) -> set[tuple[str, str]]:
    """Every (channel, address) the recipient is or was reached at: their current details
    on each channel, and what their deliveries went to."""
    current = {
        (name, getattr(recipient, spec.address_field)) for name, spec in CHANNELS.items() if not spec.device_addressed
    }
    sent_to = set(
        Delivery.objects.filter(notification__recipient=recipient).values_list("channel", "to").distinct().order_by()
    )
    return {(channel, address) for channel, address in current | sent_to if address and address != ERASED}


def _values(obj, fields) -> dict:
    return {name: getattr(obj, name) for name in fields}


def recipient_export(*, account, external_id: str) -> dict:
    """Everything held on the account's recipient with this external id, ready to be
    rendered as JSON, in a constant number of queries. Raises RecipientNotFound."""
    recipient = recipient_find(account=account, external_id=external_id)
    if recipient is None:
        raise RecipientNotFound(external_id)
    hashes = {address_hash(channel, address) for channel, address in _addresses(recipient)}
    preference = RecipientPreference.objects.filter(recipient=recipient).first()
    consent = ConsentRecord.objects.filter(
        Q(recipient=recipient) | Q(recipient__isnull=True, address_hash__in=hashes), account=account
    )
    suppressions = Suppression.objects.filter(account=account, address_hash__in=hashes).order_by("created_at", "pk")
    notifications = (
        Notification.objects.filter(recipient=recipient)
        .select_related("template", "booking")
        .prefetch_related(
            Prefetch(
                "deliveries",
                queryset=Delivery.objects.order_by("created_at", "pk").prefetch_related(
                    Prefetch("events", queryset=DeliveryEvent.objects.order_by("created_at", "pk"))
                ),
            )
        )
        .order_by("created_at", "pk")
    )
    schedules = NotificationSchedule.objects.filter(recipient=recipient).select_related("booking", "template")
    bookings = Booking.objects.filter(invitee=recipient).order_by("start_time", "pk")
    return {
        "exported_at": timezone.now(),
        "recipient": _values(recipient, RECIPIENT_FIELDS),
        "preferences": None
        if preference is None
        else _values(
            preference,
            ("preferred_channel", "quiet_hours_enabled", "quiet_hours_start", "quiet_hours_end", "updated_at"),
        ),
        "opt_outs": preference.opt_outs if preference else [],
        "consent": [
            _values(record, ("channel", "category", "granted", "method", "detail", "recorded_at"))
            for record in consent.order_by("recorded_at", "pk")
        ],
        "suppressions": [
            _values(row, ("channel", "address", "reason", "detail", "created_at")) for row in suppressions
        ],
        "notifications": [
            {
                "id": notification.pk,
                "created_at": notification.created_at,
                "template": notification.template.key if notification.template else None,
                "category": notification.category,
                "priority": notification.priority,
                "channels": notification.channels,
                "context": notification.context,
                "scheduled_for": notification.scheduled_for,
                "is_test": notification.is_test,
                "booking": notification.booking.external_id if notification.booking else None,
                "deliveries": [
                    {
                        **_values(delivery, DELIVERY_FIELDS),
                        "events": [_values(event, EVENT_FIELDS) for event in delivery.events.all()],
                    }
                    for delivery in notification.deliveries.all()
                ],
            }
            for notification in notifications
        ],
        "schedules": [
            {
                **_values(
                    schedule, ("id", "schedule_type", "channel", "status", "scheduled_for", "processed_at", "context")
                ),
                "template": schedule.template.key if schedule.template else None,
                "booking": schedule.booking.external_id if schedule.booking else None,
            }
            for schedule in schedules
        ],
        "bookings": [
            _values(booking, ("external_id", "status", "event_name", "start_time", "end_time", "details", "created_at"))
            for booking in bookings
        ],
        "devices": [
            _values(device, ("platform", "token", "active", "last_seen_at", "deactivated_at", "created_at"))
            for device in recipient.devices.order_by("created_at")
        ],
    }


def recipient_erase(*, account, external_id: str, source: str = "api") -> dict[str, int]:
    """Erase the account's recipient with this external id, in one transaction and a
    fixed number of statements whatever their history; returns what it changed. Raises
    RecipientNotFound. Their deliveries still waiting are cancelled, not sent."""
    now = timezone.now()
    with transaction.atomic():
        recipient = (
            Recipient.objects.select_for_update().filter(account=account, external_id=external_id).first()
            if external_id and "\x00" not in external_id
            else None
        )
        if recipient is None:
            raise RecipientNotFound(external_id)
        addresses = _addresses(recipient)
        hashes = {address_hash(channel, address) for channel, address in addresses}
        deliveries = Delivery.objects.filter(notification__recipient=recipient)
        counts = {
            "cancelled": _pending_cancel(deliveries, now, source),
            "suppressions_added": _opt_outs_suppress(account, recipient, addresses),
            # Every suppression of their addresses stays, found by its hash alone.
            "suppressions": Suppression.objects.filter(account=account, address_hash__in=hashes).update(address=""),
        }
        counts["deliveries"] = deliveries.update(
            to=ERASED, subject="", body=ERASED, html_body="", options={}, error_message="", updated_at=now
        )
        DeliveryAttempt.objects.filter(delivery__notification__recipient=recipient).update(error="")
        events = DeliveryEvent.objects.filter(delivery__notification__recipient=recipient)
        events.update(payload={})
        events.filter(status__in=ERROR_STATUSES).update(detail="")
        counts["notifications"] = Notification.objects.filter(recipient=recipient).update(context={})
        _receipts_erase(recipient)
        counts["bookings"] = _bookings_erase(recipient)
        # Schedules a worker holds right now are left to it; it finds no address to send to.
        counts["schedules"], _ = (
            NotificationSchedule.objects.filter(recipient=recipient).exclude(status=ScheduleStatus.PROCESSING).delete()
        )
        RecipientPreference.objects.filter(recipient=recipient).delete()
        counts["consent_records"], _ = ConsentRecord.objects.filter(
            Q(recipient=recipient) | Q(account=account, address_hash__in=hashes)
        ).delete()
        DailyCount.objects.filter(recipient=recipient).delete()
        counts["devices"], _ = Device.objects.filter(recipient=recipient).delete()
        Recipient.objects.filter(pk=recipient.pk).update(
            external_id="",
            name=ERASED,
            email="",
            phone="",
            slack_webhook_url="",
            teams_webhook_url="",
            discord_webhook_url="",
            timezone="",
            locale="",
            updated_at=now,
        )
    logger.info("recipient %s of account %s erased: %s", recipient.pk, account.pk, counts)
    return counts


def _pending_cancel(deliveries, now, source: str) -> int:
    """Cancel the deliveries not yet claimed by a worker (locked, so none is claimed meanwhile)."""
    pending = list(
        deliveries.filter(status__in=CANCELLABLE_STATUSES).select_for_update(of=("self",)).values_list("pk", "status")
    )
    if not pending:
        return 0
    Delivery.objects.filter(pk__in=[pk for pk, _ in pending]).update(
        status=DeliveryStatus.CANCELLED, next_attempt_at=None, enqueued_at=None, updated_at=now
    )
    events_record(
        [
            StatusChange(pk, status, DeliveryStatus.CANCELLED, source, now, detail="the recipient was erased")
            for pk, status in pending
        ]
    )
    return len(pending)


def _opt_outs_suppress(account, recipient: Recipient, addresses: set[tuple[str, str]]) -> int:
    """An opt-out of every category on a channel dies with the preferences; a hashed
    suppression of the recipient's addresses on that channel keeps it. (An opt-out of a
    single category needs none: marketing needs consent, and consent is erased too.)"""
    preference = RecipientPreference.objects.filter(recipient=recipient).first()
    channels = {
        opt_out.get("channel", "*")
        for opt_out in (preference.opt_outs if preference else [])
        if opt_out.get("category", "*") == "*"
    }
    if not channels:
        return 0
    rows = [
        Suppression(
            account=account,
            channel=channel,
            address="",
            address_hash=address_hash(channel, address),
            reason=SuppressionReason.UNSUBSCRIBED,
            detail="opted out of everything on this channel before being erased",
        )
        for channel, address in sorted(addresses)
        if channel in channels or "*" in channels
    ]
    hashes = [row.address_hash for row in rows]
    before = Suppression.objects.filter(account=account, address_hash__in=hashes).count()
    Suppression.objects.bulk_create(rows, ignore_conflicts=True)
    return Suppression.objects.filter(account=account, address_hash__in=hashes).count() - before


def _receipts_erase(recipient: Recipient) -> None:
    """Stored send receipts (answered again to a retried request) name the address."""
    keys = list(IdempotencyKey.objects.filter(notification__recipient=recipient).only("pk", "response_body"))
    for key in keys:
        for delivery in (key.response_body or {}).get("deliveries", []):
            if "to" in delivery:
                delivery["to"] = ERASED
    if keys:
        IdempotencyKey.objects.bulk_update(keys, ["response_body"])


def _bookings_erase(recipient: Recipient) -> int:
    """The recipient's bookings stay the account's, without the invitee's details (in the
    booking as the last event gave it, and in each event as received)."""
    bookings = list(Booking.objects.filter(invitee=recipient).only("pk", "details"))
    for booking in bookings:
        booking.details = {key: value for key, value in (booking.details or {}).items() if key != "invitee"}
    if bookings:
        Booking.objects.bulk_update(bookings, ["details"])
        BookingEvent.objects.filter(booking__in=bookings).update(payload={})
    return len(bookings)
