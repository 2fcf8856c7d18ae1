"""Accept: a send (one recipient) or a batch send (up to BEACON_BATCH_MAX_RECIPIENTS) becomes
Notification and Delivery rows, rendered and decided, written with a few multi-row
statements in one transaction; dispatch is enqueued after commit, in batches.

With `fallback` the channels are tried in order (notifications.services.fallback): every
channel is still rendered and decided here, each delivery carries its channel's rank, the
first rank the decision lets through is live and the later ranks' deliveries wait as
standby. A channel the recipient has no address for is recorded as a skipped (suppressed)
delivery rather than refused, unless no channel has one."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from providers.channels import ADDRESS_FIELDS
from templates.models import Template

from ..bulk import rows_insert_many, rows_insert_returning, rows_update
from ..models import (
    Delivery,
    DeliveryEvent,
    DeliveryStatus,
    IdempotencyKey,
    Notification,
    NotificationSchedule,
    Recipient,
    ScheduleType,
)
from ..queue import Dispatch, enqueue_dispatch
from ..receipts import batch_receipt, receipt
from .addresses import channel_addresses, reachable_channels, recipient_addresses_fill, unreachable_reason
from .decide import Planned, Verdict, deliveries_decide
from .events import StatusChange, events_published
from .render import messages_render

# What a send may say about its recipient: every channel's address, and who they are.
RECIPIENT_DETAILS = (*ADDRESS_FIELDS, "name", "timezone", "locale")
logger = logging.getLogger("beacon.decide")


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different request body."""


class BatchInvalid(Exception):
    """Some items of a batch cannot be sent; `errors` maps each one's index to its errors."""

    def __init__(self, errors: dict[str, dict]):
        super().__init__(f"{len(errors)} item(s) refused")
        self.errors = errors


@dataclass
class Accepted:
    """What accept answers: the receipt (stored with the idempotency key) and the rows."""

    body: dict
    notifications: list[Notification]
    status_code: int = 202
    replayed: bool = False
    deliveries: dict = dataclasses.field(default_factory=dict)  # notification id -> its new deliveries

    @property
    def notification(self) -> Notification:
        return self.notifications[0]


@dataclass
class Item:
    """One recipient of a send: their details (the send API's `recipient`) and context."""

    recipient: dict
    context: dict


# --- Recipients -----------------------------------------------------------------------


def _recipient_key(details: dict) -> tuple[str, str]:
    if details.get("external_id"):
        return ("external_id", details["external_id"])
    if details.get("email"):
        return ("email", details["email"])
    return ("phone", details.get("phone", ""))


def recipients_resolve(*, account, details: list[dict]) -> list[Recipient]:
    """The account's recipient for each details dict (matched by external id, else email,
    else phone), created or updated with the non-empty details given, as a run of single
    sends would leave them: one SELECT, then one INSERT for the new and one UPDATE for
    the changed, whatever the count."""
    keys = [_recipient_key(d) for d in details]
    wanted: dict[tuple[str, str], dict] = {}
    for key, item in zip(keys, details, strict=True):
        given = {field: item[field] for field in RECIPIENT_DETAILS if item.get(field)}
        wanted.setdefault(key, {}).update(given)

    found = _recipients_by_key(account, wanted.keys())
    aliases = _same_phone_aliases(wanted, found)
    for key, target in aliases.items():
        wanted[target].update(wanted.pop(key))
    missing = [key for key in wanted if key not in found]
    if missing:
        found.update(_recipients_create(account, {key: wanted[key] for key in missing}))
    changed = []
    for key, recipient in found.items():
        updates = {field: value for field, value in wanted.get(key, {}).items() if getattr(recipient, field) != value}
        if updates:
            for field, value in updates.items():
                setattr(recipient, field, value)
            changed.append(recipient)
    if changed:
        now = timezone.now()
        for recipient in changed:
            recipient.updated_at = now
        rows_update(Recipient, changed, [*RECIPIENT_DETAILS, "updated_at"])
    return [found[aliases.get(key, key)] for key in keys]


def _same_phone_aliases(wanted: dict, found: dict) -> dict:
    """A phone-only item that no stored recipient matches is the recipient an earlier item
    (matched by email) gives that phone to: a single send after that one would find it."""
    phones: dict[str, tuple[str, str]] = {}
    aliases = {}
    for key, given in wanted.items():
        if key[0] == "email":
            phone = given.get("phone") or (found[key].phone if key in found else "")
            if phone:
                phones.setdefault(phone, key)
        elif key[0] == "phone" and key not in found and key[1] in phones:
            aliases[key] = phones[key[1]]
    return aliases


def _recipients_create(account, wanted: dict) -> dict[tuple[str, str], Recipient]:
    rows = [
        Recipient(account=account, external_id=value if field == "external_id" else "", **details)
        for (field, value), details in wanted.items()
    ]
    # A concurrent request may create the same external id first: those rows are skipped
    # here and read back.
    inserted = rows_insert_returning(Recipient, rows, ignore_conflicts=True)
    created = {_recipient_key(vars(row)): row for row in inserted}
    late = [key for key in wanted if key not in created]
    if late:
        created.update(_recipients_by_key(account, late))
    return created


def _recipients_by_key(account, keys) -> dict[tuple[str, str], Recipient]:
    by_field: dict[str, list[str]] = {"external_id": [], "email": [], "phone": []}
    for field, value in keys:
        by_field[field].append(value)
    query = Q()
    if by_field["external_id"]:
        query |= Q(external_id__in=by_field["external_id"])
    for field in ("email", "phone"):
        if by_field[field]:
            query |= Q(external_id="", **{f"{field}__in": by_field[field]})
    found: dict[tuple[str, str], Recipient] = {}
    # The oldest match wins, as it always has for email/phone matches without an external id.
    for recipient in Recipient.objects.filter(query, account=account).order_by("-pk"):
        if recipient.external_id:
            found[("external_id", recipient.external_id)] = recipient
        else:
            found[("email", recipient.email)] = recipient
            found[("phone", recipient.phone)] = recipient
    return {key: found[key] for key in keys if key in found}


# --- Accept ---------------------------------------------------------------------------


def notification_accept(
    *,
    account,
    channels: list[str],
    recipient: dict,
    template: Template | None = None,
    context: dict | None = None,
    subject: str = "",
    message: str = "",
    options: dict | None = None,
    scheduled_for: datetime | None = None,
    priority: str = "normal",
    category: str | None = None,
    is_test: bool = False,
    source: str = "api",
    idempotency_key: str = "",
    request_hash: str = "",
    booking=None,
    fallback: bool = False,
) -> Accepted:
    """Write one Notification and a Delivery per channel, rendered and ready, in one
    transaction; dispatch is enqueued after commit. With an idempotency key, a repeat of
    the same request returns the first answer and sends nothing. With `fallback`, the
    channels are tried in order rather than all at once (see the module docstring)."""
    return _accept(
        account=account,
        channels=channels,
        items=[Item(recipient=recipient, context=context or {})],
        template=template,
        subject=subject,
        message=message,
        options=options,
        scheduled_for=scheduled_for,
        priority=priority,
        category=category,
        is_test=is_test,
        source=source,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        batch=False,
        booking=booking,
        fallback=fallback,
    )


def notifications_accept_batch(
    *,
    account,
    channels: list[str],
    items: list[Item],
    template: Template | None = None,
    subject: str = "",
    message: str = "",
    options: dict | None = None,
    scheduled_for: datetime | None = None,
    priority: str = "normal",
    category: str | None = None,
    source: str = "api",
    idempotency_key: str = "",
    request_hash: str = "",
    bookings: list | None = None,
    fallback: bool = False,
) -> Accepted:
    """One notification per item, validated as a whole: if any item cannot be rendered,
    BatchInvalid names each by its index and nothing is written."""
    return _accept(
        account=account,
        channels=channels,
        items=items,
        template=template,
        subject=subject,
        message=message,
        options=options,
        scheduled_for=scheduled_for,
        priority=priority,
        category=category,
        is_test=False,
        source=source,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        batch=True,
        bookings=bookings,
        fallback=fallback,
    )


def _accept(
    *,
    account,
    channels,
    items: list[Item],
    template,
    subject,
    message,
    options,
    scheduled_for,
    priority,
    category,
    is_test,
    source,
    idempotency_key,
    request_hash,
    batch: bool,
    booking=None,
    bookings: list | None = None,
    fallback: bool = False,
) -> Accepted:
    if idempotency_key:
        replay = _idempotent_replay(account=account, key=idempotency_key, request_hash=request_hash)
        if replay is not None:
            return replay
    recipients = recipient_addresses_fill(
        account=account, channels=channels, details=[item.recipient for item in items]
    )
    items = [dataclasses.replace(item, recipient=recipient) for item, recipient in zip(items, recipients, strict=True)]
    # A fallback send renders the channels it can reach; one that reaches none is refused
    # as any send is (rendering names the missing addresses).
    channels_of = [
        (reachable_channels(channels, item.recipient) if fallback else None) or list(channels) for item in items
    ]
    rendered = _render_items(
        channels_of=channels_of,
        items=items,
        template=template,
        subject=subject,
        message=message,
        options=options,
        batch=batch,
    )
    now = timezone.now()
    scheduled = scheduled_for is not None and scheduled_for > now + timedelta(seconds=1)
    send_at = scheduled_for if scheduled else now
    category = category or (template.category if template else "transactional")
    version = template.current_version if template else None
    kind = template.template_type if template else "custom"
    bookings = bookings or [booking] * len(items)
    try:
        with transaction.atomic():
            people = recipients_resolve(account=account, details=[item.recipient for item in items])
            notifications = [
                Notification(
                    id=uuid.uuid4(),
                    account=account,
                    recipient=person,
                    template=template,
                    template_version=version,
                    context=item.context,
                    channels=list(channels),
                    priority=priority,
                    category=category,
                    scheduled_for=scheduled_for if scheduled else None,
                    is_test=is_test,
                    fallback=fallback,
                    booking=booking_of,
                )
                for item, person, booking_of in zip(items, people, bookings, strict=True)
            ]
            # One delivery per channel, or per device on a device-addressed channel.
            targets = [
                _targets(channels, item.recipient, messages, fallback)
                for item, messages in zip(items, rendered, strict=True)
            ]
            planned = [
                Planned(
                    recipient_id=person.pk,
                    channel=m.channel,
                    category=category,
                    priority=priority,
                    send_at=send_at,
                    kind=kind,
                    address=address,
                    timezone=person.timezone,
                )
                for person, item_targets in zip(people, targets, strict=True)
                for _, _, m, address in item_targets
                if m is not None
            ]
            decisions = iter(deliveries_decide(account=account, planned=planned))
            deliveries, changes, schedules = [], [], []
            by_notification: dict = {}
            for notification, item, item_targets in zip(notifications, items, targets, strict=True):
                made = []
                for rank, channel, m, address in item_targets:
                    if m is None:
                        reason = unreachable_reason(item.recipient, channel)
                        made.append((_skipped_delivery(account, notification, channel, rank, reason), reason))
                        continue
                    decision = next(decisions)
                    delivery = _new_delivery(account, notification, address, m, decision, send_at, now)
                    delivery.fallback_rank = rank
                    made.append((delivery, _detail(decision)))
                    if decision.verdict is not Verdict.SEND:
                        logger.info("delivery %s %s: %s", delivery.pk, decision.verdict.value, _detail(decision))
                if fallback:
                    made = _standby_after_live(made, channels)
                by_notification[notification.pk] = [delivery for delivery, _ in made]
                for delivery, detail in made:
                    deliveries.append(delivery)
                    changes.append(StatusChange(delivery.pk, "", delivery.status, source, now, detail))
                    if scheduled and delivery.status == DeliveryStatus.SCHEDULED:
                        schedules.append(_schedule_of(notification, delivery, send_at))
            rows_insert_many(
                [
                    (Notification, notifications),
                    (Delivery, deliveries),
                    (DeliveryEvent, [change.as_row() for change in changes]),
                    (NotificationSchedule, schedules),
                ]
            )
            events_published(changes)
            body = (
                batch_receipt(notifications, by_notification)
                if batch
                else receipt(notifications[0], by_notification[notifications[0].pk])
            )
            if idempotency_key:
                IdempotencyKey.objects.create(
                    account=account,
                    key=idempotency_key,
                    request_hash=request_hash,
                    notification=notifications[0] if notifications else None,
                    response_status=202,
                    response_body=body,
                )
            enqueue_dispatch([Dispatch(d.pk, d.channel, 0) for d in deliveries if d.status == DeliveryStatus.QUEUED])
    except IntegrityError:
        if not idempotency_key:
            raise
        # Another request with the same key committed first: answer as it did.
        replay = _idempotent_replay(account=account, key=idempotency_key, request_hash=request_hash)
        if replay is None:
            raise
        return replay
    return Accepted(body=body, notifications=notifications, deliveries=by_notification)


def _render_items(
    *, channels_of: list[list[str]], items: list[Item], template, subject, message, options, batch: bool
) -> list[list]:
    """Each item's messages, one per channel of `channels_of` (the item's channels)."""

    def render(item: Item, channels: list[str]):
        return messages_render(
            channels=channels,
            recipient=item.recipient,
            template=template,
            context=item.context,
            subject=subject,
            message=message,
            options=options,
        )

    if not batch:
        return [render(items[0], channels_of[0])]
    if template is None:
        # A literal message reads the same for everyone: a problem with it is the
        # request's, named once, not once per recipient.
        render(items[0], channels_of[0])
    rendered, errors = [], {}
    for index, (item, channels) in enumerate(zip(items, channels_of, strict=True)):
        try:
            rendered.append(render(item, channels))
        except ValidationError as exc:
            errors[str(index)] = exc.message_dict
    if errors:
        raise BatchInvalid(errors)
    return rendered


def _targets(channels: list[str], recipient: dict, messages: list, fallback: bool) -> list[tuple]:
    """(rank, channel, rendered message, address) for each delivery of one recipient, in
    channel order; the rank is None unless the send has fallback. A fallback channel the
    recipient has no address for has no message (it was not rendered) and one target, to
    be recorded as skipped."""
    by_channel = {m.channel: m for m in messages}
    found = []
    for rank, channel in enumerate(channels):
        message = by_channel.get(channel)
        if message is None:
            if fallback:
                found.append((rank, channel, None, ""))
            continue
        found += [(rank if fallback else None, channel, message, a) for a in channel_addresses(recipient, channel)]
    return found


def _standby_after_live(made: list[tuple[Delivery, str]], channels: list[str]) -> list[tuple[Delivery, str]]:
    """A fallback notification's deliveries with those after its live rank (the first
    with a delivery the decision lets through) held as standby, each with its event's
    detail. A held delivery keeps its decided time for when it is released."""
    waiting = (DeliveryStatus.QUEUED, DeliveryStatus.SCHEDULED)
    live = min((d.fallback_rank for d, _ in made if d.status in waiting), default=None)
    if live is None:
        return made
    held = []
    for delivery, detail in made:
        if delivery.fallback_rank > live and delivery.status in waiting:
            delivery.status, delivery.enqueued_at = DeliveryStatus.STANDBY, None
            before = _words(channels[live : delivery.fallback_rank])
            detail = f"standby: tried if {before} cannot reach the recipient ({detail})"
        held.append((delivery, detail))
    return held


def _words(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _skipped_delivery(account, notification, channel: str, rank: int, reason: str) -> Delivery:
    """A fallback channel the recipient has no address for: recorded, never sent."""
    return Delivery(
        id=uuid.uuid4(),
        account=account,
        notification=notification,
        channel=channel,
        to="",
        body="",
        status=DeliveryStatus.SUPPRESSED,
        max_attempts=settings.BEACON_MAX_ATTEMPTS,
        next_attempt_at=None,
        error_code="skipped",
        error_message=reason,
        fallback_rank=rank,
    )


def _detail(decision) -> str:
    if decision.verdict is Verdict.DEFER:
        return f"{decision.reason or 'deferred'} until {decision.until.isoformat()}"
    return decision.reason or "accepted"


def _schedule_of(notification: Notification, delivery: Delivery, send_at: datetime) -> NotificationSchedule:
    """A scheduled send's row in the schedule list: its delivery is already written and
    rendered, and the sweep queues it when due."""
    return NotificationSchedule(
        id=uuid.uuid4(),
        account_id=notification.account_id,
        schedule_type=ScheduleType.SEND,
        channel=delivery.channel,
        recipient_id=notification.recipient_id,
        booking_id=notification.booking_id,
        template_id=notification.template_id,
        priority=notification.priority,
        category=notification.category,
        scheduled_for=send_at,
        notification_id=notification.pk,
        delivery_id=delivery.pk,
    )


def _new_delivery(account, notification, to: str, message, decision, send_at, now) -> Delivery:
    status = DeliveryStatus.QUEUED if send_at <= now else DeliveryStatus.SCHEDULED
    next_attempt_at, error_code, error_message = send_at, "", ""
    if decision.verdict is Verdict.DEFER:
        status, next_attempt_at = DeliveryStatus.SCHEDULED, max(decision.until, send_at)
    elif decision.verdict is Verdict.SKIP:
        status, next_attempt_at = DeliveryStatus.SUPPRESSED, None
        error_code, error_message = "skipped", decision.reason
    return Delivery(
        id=uuid.uuid4(),
        account=account,
        notification=notification,
        channel=message.channel,
        to=to,
        locale=message.locale,
        subject=message.subject,
        body=message.body,
        html_body=message.html_body,
        options=message.options,
        encoding=message.encoding,
        segments=message.segments,
        status=status,
        max_attempts=settings.BEACON_MAX_ATTEMPTS,
        next_attempt_at=next_attempt_at,
        enqueued_at=now if status == DeliveryStatus.QUEUED else None,
        error_code=error_code,
        error_message=error_message,
    )


def _idempotent_replay(*, account, key: str, request_hash: str) -> Accepted | None:
    stored = IdempotencyKey.objects.filter(account=account, key=key).select_related("notification").first()
    if stored is None:
        return None
    if stored.request_hash != request_hash:
        raise IdempotencyConflict(key)
    return Accepted(
        body=stored.response_body,
        notifications=[stored.notification] if stored.notification else [],
        status_code=stored.response_status,
        replayed=True,
    )
