"""Writes for notifications: accept, dispatch, track, resend, cancel, sweep.

Every way in (API, admin, management commands, tasks) calls these functions; they are the
only place the rules of a delivery's life live.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from providers.base import OutboundMessage, ProviderConfigurationError, ProviderError
from providers.registry import provider_for_channel
from templates.models import Channel, Template
from templates.rendering import RenderError
from templates.services import RenderedMessage, check_rendered, template_render

from .models import (
    CANCELLABLE_STATUSES,
    FINAL_STATUSES,
    PROGRESS_RANK,
    RESENDABLE_STATUSES,
    Delivery,
    DeliveryAttempt,
    DeliveryEvent,
    DeliveryStatus,
    IdempotencyKey,
    Notification,
    Recipient,
)
from .queue import enqueue_dispatch

logger = logging.getLogger(__name__)

ADDRESS_FIELD = {Channel.EMAIL: "email", Channel.SMS: "phone"}
# What a delivery sends: a resend copies exactly these.
MESSAGE_FIELDS = ("channel", "to", "locale", "subject", "body", "html_body", "encoding", "segments")
TIMESTAMP_FIELD = {
    DeliveryStatus.SENT: "sent_at",
    DeliveryStatus.DELIVERED: "delivered_at",
    DeliveryStatus.OPENED: "opened_at",
    DeliveryStatus.CLICKED: "clicked_at",
    DeliveryStatus.FAILED: "failed_at",
    DeliveryStatus.UNDELIVERED: "failed_at",
    DeliveryStatus.BOUNCED: "failed_at",
}


class InvalidTransition(Exception):
    """The delivery's status does not allow the requested action."""


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different request body."""


@dataclass
class Accepted:
    notification: Notification
    status_code: int
    body: dict
    replayed: bool = False


def can_move(current: str, new: str) -> bool:
    """Status only moves forward; a final status never changes."""
    if current in FINAL_STATUSES or current == new:
        return False
    if new in FINAL_STATUSES:
        return True
    return PROGRESS_RANK[new] > PROGRESS_RANK[current]


# --- Accept ---------------------------------------------------------------------------


def recipient_resolve(
    *,
    account,
    email: str = "",
    phone: str = "",
    name: str = "",
    external_id: str = "",
    timezone_name: str = "",
    locale: str = "",
) -> Recipient:
    """The account's recipient with this external id (else email, else phone), created or
    updated with the details given."""
    lookup = Recipient.objects.filter(account=account)
    if external_id:
        lookup = lookup.filter(external_id=external_id)
    elif email:
        lookup = lookup.filter(email=email, external_id="")
    else:
        lookup = lookup.filter(phone=phone, external_id="")
    recipient = lookup.order_by("pk").first()
    details = {"email": email, "phone": phone, "name": name, "timezone": timezone_name, "locale": locale}
    details = {key: value for key, value in details.items() if value}
    if recipient is None:
        try:
            with transaction.atomic():
                return Recipient.objects.create(account=account, external_id=external_id, **details)
        except IntegrityError:
            recipient = Recipient.objects.get(account=account, external_id=external_id)
    changed = [key for key, value in details.items() if getattr(recipient, key) != value]
    if changed:
        for key in changed:
            setattr(recipient, key, details[key])
        recipient.save(update_fields=[*changed, "updated_at"])
    return recipient


def _render_all(
    *, channels, recipient: dict, template: Template | None, context: dict, subject: str, message: str
) -> list[RenderedMessage]:
    errors: dict[str, list[str]] = {}
    rendered = []
    for channel in channels:
        if not recipient.get(ADDRESS_FIELD[channel]):
            errors.setdefault(f"recipient.{ADDRESS_FIELD[channel]}", []).append(
                f"Required to send on the {channel} channel."
            )
            continue
        try:
            if template is not None:
                values = {
                    "recipient_name": recipient.get("name") or "",
                    "recipient_email": recipient.get("email") or "",
                    "recipient_phone": recipient.get("phone") or "",
                    **context,
                }
                item = template_render(
                    version=template.current_version, channel=channel, locale=recipient.get("locale"), context=values
                )
            else:
                item = RenderedMessage(
                    channel=channel, locale="", subject=subject, body=message, html_body="", filled_defaults=[]
                )
                check_rendered(item)
        except RenderError as exc:
            for field, messages in exc.errors.items():
                errors.setdefault(field, []).extend(f"{channel}: {m}" for m in messages)
            continue
        rendered.append(item)
    if errors:
        raise ValidationError(errors)
    return rendered


def notification_accept(
    *,
    account,
    channels: list[str],
    recipient: dict,
    template: Template | None = None,
    context: dict | None = None,
    subject: str = "",
    message: str = "",
    scheduled_for: datetime | None = None,
    priority: str = "normal",
    category: str | None = None,
    is_test: bool = False,
    source: str = "api",
    idempotency_key: str = "",
    request_hash: str = "",
    respond: Callable[[Notification, list[Delivery]], dict] | None = None,
) -> Accepted:
    """Write one Notification and a Delivery per channel, rendered and ready, in one
    transaction; dispatch is enqueued after commit. With an idempotency key, a repeat of
    the same request returns the first answer and sends nothing."""
    if idempotency_key:
        replay = _idempotent_replay(account=account, key=idempotency_key, request_hash=request_hash)
        if replay is not None:
            return replay
    context = context or {}
    rendered = _render_all(
        channels=channels, recipient=recipient, template=template, context=context, subject=subject, message=message
    )
    now = timezone.now()
    scheduled = scheduled_for is not None and scheduled_for > now + timedelta(seconds=1)
    status = DeliveryStatus.SCHEDULED if scheduled else DeliveryStatus.QUEUED
    try:
        with transaction.atomic():
            person = recipient_resolve(
                account=account,
                email=recipient.get("email", ""),
                phone=recipient.get("phone", ""),
                name=recipient.get("name", ""),
                external_id=recipient.get("external_id", ""),
                timezone_name=recipient.get("timezone", ""),
                locale=recipient.get("locale", ""),
            )
            notification = Notification.objects.create(
                account=account,
                recipient=person,
                template=template,
                template_version=template.current_version if template else None,
                context=context,
                channels=list(channels),
                priority=priority,
                category=category or (template.category if template else "transactional"),
                scheduled_for=scheduled_for if scheduled else None,
                is_test=is_test,
            )
            deliveries = Delivery.objects.bulk_create(
                [
                    Delivery(
                        account=account,
                        notification=notification,
                        channel=item.channel,
                        to=recipient[ADDRESS_FIELD[item.channel]],
                        locale=item.locale,
                        subject=item.subject,
                        body=item.body,
                        html_body=item.html_body,
                        encoding=item.encoding,
                        segments=item.segments,
                        status=status,
                        max_attempts=settings.BEACON_MAX_ATTEMPTS,
                        next_attempt_at=scheduled_for if scheduled else now,
                    )
                    for item in rendered
                ]
            )
            DeliveryEvent.objects.bulk_create(
                [
                    DeliveryEvent(delivery=d, status=status, source=source, occurred_at=now, detail="accepted")
                    for d in deliveries
                ]
            )
            body = respond(notification, deliveries) if respond else {}
            if idempotency_key:
                with transaction.atomic():
                    IdempotencyKey.objects.create(
                        account=account,
                        key=idempotency_key,
                        request_hash=request_hash,
                        notification=notification,
                        response_status=202,
                        response_body=body,
                    )
            if not scheduled:
                enqueue_dispatch([(d.pk, 0) for d in deliveries])
    except IntegrityError:
        if not idempotency_key:
            raise
        # Another request with the same key committed first: answer as it did.
        replay = _idempotent_replay(account=account, key=idempotency_key, request_hash=request_hash)
        if replay is None:
            raise
        return replay
    return Accepted(notification=notification, status_code=202, body=body)


def _idempotent_replay(*, account, key: str, request_hash: str) -> Accepted | None:
    stored = IdempotencyKey.objects.filter(account=account, key=key).select_related("notification").first()
    if stored is None:
        return None
    if stored.request_hash != request_hash:
        raise IdempotencyConflict(key)
    return Accepted(
        notification=stored.notification, status_code=stored.response_status, body=stored.response_body, replayed=True
    )


# --- Dispatch -------------------------------------------------------------------------


def status_callback_url(delivery: Delivery) -> str:
    if delivery.channel != Channel.SMS:
        return ""
    return f"{settings.PUBLIC_BASE_URL}{reverse('sms-status-callback')}?delivery={delivery.pk}"


def retry_delay(*, attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter, never sooner than the provider's Retry-After."""
    ceiling = min(settings.BEACON_RETRY_MAX_SECONDS, settings.BEACON_RETRY_BASE_SECONDS * 2 ** (attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.BEACON_RETRY_MAX_SECONDS))
    return delay


def delivery_dispatch(*, delivery_id, attempts_before: int | None = None) -> str:
    """Claim a queued delivery, send it outside any transaction, record the attempt.

    `attempts_before` is the attempt count the task was enqueued for: a stale duplicate
    message (say, a lost one the sweep re-enqueued) finds the count moved on and does
    nothing, so it can neither send twice nor jump a retry's backoff. Returns
    "not-claimed" when another worker (or an earlier run of the same task) has it, else
    the delivery's new status.
    """
    now = timezone.now()
    # The claim, the attempt and its event commit together: a delivery in "sending"
    # always has the attempt that may have reached the provider.
    with transaction.atomic():
        claimable = Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.QUEUED)
        if attempts_before is not None:
            claimable = claimable.filter(attempt_count=attempts_before)
        claimed = claimable.update(
            status=DeliveryStatus.SENDING, claimed_at=now, attempt_count=F("attempt_count") + 1, updated_at=now
        )
        if claimed != 1:
            return "not-claimed"
        delivery = Delivery.objects.get(pk=delivery_id)
        try:
            provider = provider_for_channel(delivery.channel)
            provider_kind, config_error = provider.kind, None
        except ProviderConfigurationError as exc:
            provider, provider_kind, config_error = None, "", exc
        attempt = DeliveryAttempt.objects.create(
            delivery=delivery, number=delivery.attempt_count, provider=provider_kind, started_at=now
        )
        _event(
            delivery,
            DeliveryStatus.QUEUED,
            DeliveryStatus.SENDING,
            "dispatch",
            now,
            detail=f"attempt {attempt.number} via {provider_kind or '-'}",
        )
    if provider is None:
        return _record_failure(delivery, attempt, config_error, duration_ms=0)
    message = OutboundMessage(
        channel=delivery.channel,
        to=delivery.to,
        subject=delivery.subject,
        body=delivery.body,
        html_body=delivery.html_body,
        reference=str(delivery.pk),
        status_callback_url=status_callback_url(delivery),
        metadata={"beacon_delivery": str(delivery.pk)},
    )
    started = time.monotonic()
    try:
        result = provider.send(message)
    except ProviderError as exc:
        return _record_failure(delivery, attempt, exc, duration_ms=_ms_since(started))
    except Exception as exc:  # noqa: BLE001 - an adapter bug must not strand the delivery in "sending"
        logger.exception("provider %s raised an unclassified error", provider_kind)
        error = ProviderError(f"Unexpected error: {exc.__class__.__name__}", retryable=True)
        return _record_failure(delivery, attempt, error, duration_ms=_ms_since(started))
    duration = _ms_since(started)
    finished = timezone.now()
    with transaction.atomic():
        DeliveryAttempt.objects.filter(pk=attempt.pk).update(
            outcome=DeliveryAttempt.Outcome.SUCCESS,
            finished_at=finished,
            duration_ms=duration,
            response_code=result.response_code,
            provider_message_id=result.provider_message_id,
        )
        common = {
            "provider": provider_kind,
            "provider_message_id": result.provider_message_id,
            "cost": result.cost,
            "updated_at": finished,
        }
        moved = Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
            status=result.status, sent_at=finished, next_attempt_at=None, error_code="", error_message="", **common
        )
        if moved:
            _event(
                delivery,
                DeliveryStatus.SENDING,
                result.status,
                "dispatch",
                finished,
                detail=f"accepted by {provider_kind}",
            )
            return result.status
        # A provider callback overtook us; keep its status and error, add what we learned.
        Delivery.objects.filter(pk=delivery.pk).update(**common)
        Delivery.objects.filter(pk=delivery.pk, sent_at__isnull=True).update(sent_at=finished)
    return Delivery.objects.values_list("status", flat=True).get(pk=delivery.pk)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _record_failure(delivery: Delivery, attempt: DeliveryAttempt, error: ProviderError, *, duration_ms: int) -> str:
    finished = timezone.now()
    retry = error.retryable and delivery.attempt_count < delivery.max_attempts
    with transaction.atomic():
        DeliveryAttempt.objects.filter(pk=attempt.pk).update(
            outcome=DeliveryAttempt.Outcome.RETRYABLE if error.retryable else DeliveryAttempt.Outcome.PERMANENT,
            finished_at=finished,
            duration_ms=duration_ms,
            response_code=error.status_code,
            error=error.message[:2000],
            retry_after_seconds=error.retry_after,
        )
        fields = {"error_code": (error.code or "")[:64], "error_message": error.message[:2000], "updated_at": finished}
        if retry:
            delay = retry_delay(attempt=delivery.attempt_count, retry_after=error.retry_after)
            moved = Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
                status=DeliveryStatus.QUEUED, next_attempt_at=finished + timedelta(seconds=delay), **fields
            )
            if moved:
                _event(
                    delivery,
                    DeliveryStatus.SENDING,
                    DeliveryStatus.QUEUED,
                    "dispatch",
                    finished,
                    detail=f"retry in {delay:.1f}s: {error.message}"[:500],
                )
                enqueue_dispatch([(delivery.pk, delivery.attempt_count)], countdown=delay)
                return DeliveryStatus.QUEUED
            return "not-claimed"
        moved = Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(
            status=DeliveryStatus.FAILED, failed_at=finished, next_attempt_at=None, **fields
        )
        if moved:
            reason = "gave up after retries" if error.retryable else "permanent error"
            _event(
                delivery,
                DeliveryStatus.SENDING,
                DeliveryStatus.FAILED,
                "dispatch",
                finished,
                detail=f"{reason}: {error.message}"[:500],
            )
            return DeliveryStatus.FAILED
    return "not-claimed"


def _event(delivery, from_status, status, source, occurred_at, *, detail="", payload=None) -> DeliveryEvent:
    return DeliveryEvent.objects.create(
        delivery_id=delivery.pk if isinstance(delivery, Delivery) else delivery,
        from_status=from_status,
        status=status,
        source=source,
        detail=detail,
        payload=payload or {},
        occurred_at=occurred_at,
    )


# --- Track ----------------------------------------------------------------------------


def delivery_track(
    *,
    delivery: Delivery,
    status: str,
    source: str,
    occurred_at: datetime | None = None,
    payload: dict | None = None,
    error_code: str = "",
    error_message: str = "",
) -> bool:
    """Apply a provider-reported status. Moves only forward: late, repeated or
    out-of-order reports change nothing. Returns whether the delivery changed."""
    occurred_at = occurred_at or timezone.now()
    for _ in range(5):
        current = Delivery.objects.values_list("status", flat=True).get(pk=delivery.pk)
        if not can_move(current, status):
            return False
        fields = {"status": status, "updated_at": timezone.now()}
        if status in TIMESTAMP_FIELD:
            fields[TIMESTAMP_FIELD[status]] = occurred_at
        if error_code or error_message:
            fields.update(error_code=error_code[:64], error_message=error_message[:2000])
        with transaction.atomic():
            # Conditional on the status we read: a concurrent callback makes this a no-op
            # and we read again.
            if Delivery.objects.filter(pk=delivery.pk, status=current).update(**fields):
                _event(delivery, current, status, source, occurred_at, payload=payload, detail=error_message[:500])
                return True
    return False


# --- Resend, cancel -------------------------------------------------------------------


@transaction.atomic
def delivery_resend(*, delivery: Delivery, source: str = "api") -> Delivery:
    """Send a failed delivery again as a new delivery; the failed one keeps its history."""
    # Lock the original so two concurrent resends of it queue one copy.
    delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
    pending = delivery.resends.exclude(status__in=RESENDABLE_STATUSES).first()
    if pending is not None:
        raise InvalidTransition(f"This delivery was already resent as {pending.pk} ({pending.status}).")
    if delivery.status not in RESENDABLE_STATUSES:
        raise InvalidTransition(
            f"Only a delivery that is {', '.join(sorted(RESENDABLE_STATUSES))} can be resent; this one is {delivery.status}."
        )
    now = timezone.now()
    copy = Delivery.objects.create(
        account_id=delivery.account_id,
        notification_id=delivery.notification_id,
        resent_from=delivery,
        **{field: getattr(delivery, field) for field in MESSAGE_FIELDS},
        status=DeliveryStatus.QUEUED,
        max_attempts=settings.BEACON_MAX_ATTEMPTS,
        next_attempt_at=now,
    )
    _event(copy, "", DeliveryStatus.QUEUED, source, now, detail=f"resend of {delivery.pk}")
    enqueue_dispatch([(copy.pk, 0)])
    return copy


def delivery_cancel(*, delivery: Delivery, source: str = "api") -> Delivery:
    """Cancel a delivery that no worker has claimed yet."""
    now = timezone.now()
    current = Delivery.objects.values_list("status", flat=True).get(pk=delivery.pk)
    with transaction.atomic():
        moved = current in CANCELLABLE_STATUSES and Delivery.objects.filter(pk=delivery.pk, status=current).update(
            status=DeliveryStatus.CANCELLED, next_attempt_at=None, updated_at=now
        )
        if not moved:
            raise InvalidTransition(f"Only a scheduled or queued delivery can be cancelled; this one is {current}.")
        _event(delivery, current, DeliveryStatus.CANCELLED, source, now, detail="cancelled")
    delivery.refresh_from_db()
    return delivery


# --- Sweep ----------------------------------------------------------------------------


def deliveries_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """The periodic pass: queue what is due, re-enqueue what a lost message left queued,
    and settle deliveries whose worker died mid-send. Rows are claimed with
    SELECT ... FOR UPDATE SKIP LOCKED, so two sweepers never take the same one."""
    now = now or timezone.now()
    batch = settings.BEACON_SWEEP_BATCH_SIZE
    counts = {"due": 0, "requeued": 0, "abandoned": 0}

    with transaction.atomic():
        due = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status=DeliveryStatus.SCHEDULED, next_attempt_at__lte=now)
            .order_by("next_attempt_at")
            .values_list("pk", "attempt_count")[:batch]
        )
        if due:
            Delivery.objects.filter(pk__in=[pk for pk, _ in due]).update(
                status=DeliveryStatus.QUEUED, next_attempt_at=now, updated_at=now
            )
            DeliveryEvent.objects.bulk_create(
                [
                    DeliveryEvent(
                        delivery_id=pk,
                        from_status=DeliveryStatus.SCHEDULED,
                        status=DeliveryStatus.QUEUED,
                        source="schedule",
                        detail="due",
                        occurred_at=now,
                    )
                    for pk, _ in due
                ]
            )
            enqueue_dispatch(due)
            counts["due"] = len(due)

    grace = timedelta(seconds=settings.BEACON_REQUEUE_GRACE_SECONDS)
    with transaction.atomic():
        stuck = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status=DeliveryStatus.QUEUED, next_attempt_at__lte=now - grace)
            .values_list("pk", "attempt_count")[:batch]
        )
        if stuck:
            Delivery.objects.filter(pk__in=[pk for pk, _ in stuck]).update(next_attempt_at=now, updated_at=now)
            enqueue_dispatch(stuck)
            counts["requeued"] = len(stuck)

    lease = timedelta(seconds=settings.BEACON_SENDING_LEASE_SECONDS)
    abandoned = Delivery.objects.filter(status=DeliveryStatus.SENDING, claimed_at__lte=now - lease)
    for delivery in abandoned[:batch]:
        # The worker died during the provider call: the message may have gone out, so
        # sending it again could duplicate it. Fail it and let an operator resend.
        if delivery_track(
            delivery=delivery,
            status=DeliveryStatus.FAILED,
            source="sweep",
            error_code="worker_lost",
            error_message="The worker stopped during the provider call; the outcome is unknown and it was not retried.",
        ):
            DeliveryAttempt.objects.filter(delivery=delivery, outcome=DeliveryAttempt.Outcome.PENDING).update(
                outcome=DeliveryAttempt.Outcome.PERMANENT, finished_at=now, error="worker lost; outcome unknown"
            )
            counts["abandoned"] += 1
    return counts
