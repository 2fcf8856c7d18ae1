"""Dispatch: claim a batch of queued deliveries with one conditional UPDATE ... RETURNING,
hand them to the channel's provider outside any transaction over its kept-open
connection, and write attempts, statuses and events back in bulk.

Crash safety. A batch is handed to the provider in flushes of BEACON_DISPATCH_FLUSH_SIZE:
before each flush its attempt rows (outcome "pending") are committed, after it their
outcomes are. So at any moment at most one flush of a worker's deliveries may have
reached the provider without Beacon knowing: the sweep holds those as `worker_lost` for an
operator, and sends again, automatically, the claimed deliveries that have no attempt
(they never left Beacon).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import groupby

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from preferences.models import Suppression, address_hash
from providers.base import OutboundMessage, ProviderConfigurationError, ProviderError, SendResult
from providers.channels import CHANNELS
from providers.registry import Link, account_records, provider_chain, providers_for
from templates.models import Category, Channel

from ..bulk import rows_update, rows_upsert
from ..models import Delivery, DeliveryAttempt, DeliveryStatus, Notification
from ..queue import Dispatch, enqueue_dispatch
from ..unsubscribe import unsubscribe_headers
from .devices import devices_for_deliveries, devices_gone
from .events import StatusChange, events_record
from .inbound import unsubscribed_errors_suppress
from .webhooks import endpoints_for_deliveries, endpoints_gone

logger = logging.getLogger(__name__)

NOT_CLAIMED = "not-claimed"

# Channels whose addresses Beacon keeps a record of, read with each claimed batch: how to
# look the records up (deliveries -> {delivery id: what the adapter needs}), what a
# delivery whose record is gone says, and what a provider's "gone" answer does.
TARGETS = {
    "push": (devices_for_deliveries, "the push device was removed or deactivated", devices_gone),
    "webhook": (endpoints_for_deliveries, "the webhook endpoint was removed or disabled", endpoints_gone),
}
ATTEMPT_RESULT_FIELDS = [
    "outcome",
    "finished_at",
    "duration_ms",
    "response_code",
    "provider_message_id",
    "error",
    "retry_after_seconds",
]
DELIVERY_RESULT_FIELDS = [
    "status",
    "provider",
    "provider_message_id",
    "cost",
    "sent_at",
    "failed_at",
    "next_attempt_at",
    "enqueued_at",
    "error_code",
    "error_message",
    "updated_at",
]


def status_callback_url(delivery: Delivery) -> str:
    route = CHANNELS[delivery.channel].callback_route
    if not route:
        return ""
    return f"{_callback_base(route, settings.PUBLIC_BASE_URL)}?delivery={delivery.pk}"


@lru_cache(maxsize=64)
def _callback_base(route: str, public_base_url: str) -> str:
    return f"{public_base_url}{reverse(route)}"


def retry_delay(*, attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter, never sooner than the provider's Retry-After."""
    ceiling = min(settings.BEACON_RETRY_MAX_SECONDS, settings.BEACON_RETRY_BASE_SECONDS * 2 ** (attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.BEACON_RETRY_MAX_SECONDS))
    return delay


def waits_for_sweep(delay: float) -> bool:
    """A wait longer than a sweep interval is kept in the database (next_attempt_at) and the
    sweep queues it when due; a shorter one rides on a task countdown."""
    return delay >= settings.BEACON_SWEEP_INTERVAL_SECONDS


# --- The batch ------------------------------------------------------------------------


def deliveries_dispatch(*, items: list[tuple[object, int | None]]) -> dict[str, str]:
    """Claim, send and record a batch of (delivery id, attempts so far) pairs.

    A pair whose delivery is no longer queued at that attempt count (another worker has
    it, or this message is a stale duplicate) is not claimed, so a batch task run twice
    sends nothing twice. Returns each delivery's new status, or "not-claimed", by id.
    """
    position = {str(delivery_id): index for index, (delivery_id, _) in enumerate(items)}
    # By channel and the provider route of the address (a Web Push endpoint among push
    # tokens), each in the order given.
    claimed = sorted(_claim(items), key=lambda d: (d.channel, CHANNELS[d.channel].route(d.to), position[str(d.pk)]))
    claimed, outcomes = _drop_suppressed(claimed)
    claimed, unreachable, targets = _targets_of(claimed)
    outcomes.update(unreachable)
    for (channel, _), group in groupby(claimed, key=lambda d: (d.channel, CHANNELS[d.channel].route(d.to))):
        group = list(group)
        records = account_records(channel, {d.account_id for d in group})
        if not records:
            outcomes.update(_dispatch_channel(channel, group, targets))
            continue
        # Accounts with providers of their own send through them: one chain per account.
        for account_id in dict.fromkeys(d.account_id for d in group):
            mine = [d for d in group if d.account_id == account_id]
            link = provider_chain(channel, mine[0].to, records.get(account_id, []))[0]
            outcomes.update(_dispatch_channel(channel, mine, targets, link))
    return {str(delivery_id): outcomes.get(str(delivery_id), NOT_CLAIMED) for delivery_id, _ in items}


def delivery_dispatch(*, delivery_id, attempts_before: int | None = None) -> str:
    """One delivery through the batch path; "not-claimed" or its new status."""
    outcomes = deliveries_dispatch(items=[(delivery_id, attempts_before)])
    return outcomes.get(str(delivery_id), NOT_CLAIMED)


def _claim(items: list[tuple[object, int | None]]) -> list[Delivery]:
    """queued -> sending for the rows still queued at the expected attempt count, in one
    statement; a row another worker has is simply not returned."""
    if not items:
        return []
    pk = Delivery._meta.pk
    quote = connection.ops.quote_name
    table = quote(Delivery._meta.db_table)
    columns = ", ".join(f"{table}.{quote(f.column)}" for f in Delivery._meta.concrete_fields)
    # An attempt count of -1 matches any (a message from before counts were carried).
    pairs = [
        (pk.get_db_prep_value(pk.to_python(delivery_id), connection), -1 if attempts is None else attempts)
        for delivery_id, attempts in items
    ]
    stamp = Delivery._meta.get_field("claimed_at").get_db_prep_value(timezone.now(), connection)
    if connection.vendor == "postgresql":
        # Joined to the given ids through the primary key: with a filter on status alone
        # the planner may walk every queued row for each batch.
        values = ", ".join(["(%s::uuid, %s::integer)"] * len(pairs))
        sql = (
            f"UPDATE {table} SET status = %s, claimed_at = %s, updated_at = %s, attempt_count = attempt_count + 1 "
            f"FROM (VALUES {values}) AS v(id, attempts) WHERE {table}.id = v.id AND {table}.status = %s "
            f"AND (v.attempts = -1 OR {table}.attempt_count = v.attempts) RETURNING {columns}"
        )
        params = [DeliveryStatus.SENDING, stamp, stamp, *(x for pair in pairs for x in pair), DeliveryStatus.QUEUED]
    else:
        match = " OR ".join(["(id = %s AND (%s = -1 OR attempt_count = %s))"] * len(pairs))
        sql = (
            f"UPDATE {table} SET status = %s, claimed_at = %s, updated_at = %s, attempt_count = attempt_count + 1 "
            f"WHERE status = %s AND ({match}) RETURNING {columns}"
        )
        matches = [x for delivery_id, attempts in pairs for x in (delivery_id, attempts, attempts)]
        params = [DeliveryStatus.SENDING, stamp, stamp, DeliveryStatus.QUEUED, *matches]
    with transaction.atomic():
        return list(Delivery.objects.raw(sql, params))


def _drop_suppressed(claimed: list[Delivery]) -> tuple[list[Delivery], dict[str, str]]:
    """Deliveries whose address was suppressed after they were accepted (a STOP, a bounce
    or an erasure while they waited) are not sent: they end as suppressed, with the reason.
    One query per batch."""
    if not claimed:
        return claimed, {}
    keyed = [(delivery, address_hash(delivery.channel, delivery.to)) for delivery in claimed]
    found = {
        (account_id, channel, key): reason
        for account_id, channel, key, reason in Suppression.objects.filter(
            account_id__in={d.account_id for d in claimed},
            channel__in={d.channel for d in claimed},
            address_hash__in={key for _, key in keyed},
        ).values_list("account_id", "channel", "address_hash", "reason")
    }
    stopped = {}
    for delivery, key in keyed:
        reason = found.get((delivery.account_id, delivery.channel, key))
        if reason:
            stopped[delivery.pk] = (
                f"suppressed: the {delivery.channel} address was suppressed ({reason}) before it was sent"
            )
    return _stop(claimed, stopped)


def _targets_of(claimed: list[Delivery]) -> tuple[list[Delivery], dict[str, str], dict]:
    """The kept record of each delivery's address where its channel has one (a push
    device, a webhook endpoint), one query per channel and batch; a delivery whose record
    was removed or disabled while it waited (a logout, a provider's "gone") is not sent:
    it ends as suppressed, with why."""
    targets, stopped = {}, {}
    for channel, (lookup, gone_words, _) in TARGETS.items():
        addressed = [d for d in claimed if d.channel == channel]
        if not addressed:
            continue
        found = lookup(addressed)
        targets.update(found)
        stopped.update({d.pk: f"suppressed: {gone_words} before it was sent" for d in addressed if d.pk not in found})
    claimed, outcomes = _stop(claimed, stopped)
    return claimed, outcomes, targets


def _stop(claimed: list[Delivery], stopped: dict) -> tuple[list[Delivery], dict[str, str]]:
    """End the claimed deliveries of `stopped` (id -> why) as suppressed, unsent and with no
    attempt counted: one UPDATE per distinct reason, not per row."""
    if not stopped:
        return claimed, {}
    now = timezone.now()
    by_message: dict[str, list] = {}
    for pk, message in stopped.items():
        by_message.setdefault(message, []).append(pk)
    changes = [
        StatusChange(pk, DeliveryStatus.SENDING, DeliveryStatus.SUPPRESSED, "dispatch", now, message)
        for pk, message in stopped.items()
    ]
    with transaction.atomic():
        for message, pks in by_message.items():
            Delivery.objects.filter(pk__in=pks, status=DeliveryStatus.SENDING).update(
                status=DeliveryStatus.SUPPRESSED,
                attempt_count=F("attempt_count") - 1,
                next_attempt_at=None,
                enqueued_at=None,
                error_code="skipped",
                error_message=message,
                updated_at=now,
            )
        events_record(changes)
    logger.info("%d claimed deliveries were not sent: %s", len(stopped), ", ".join(sorted(by_message)))
    return [d for d in claimed if d.pk not in stopped], {str(pk): DeliveryStatus.SUPPRESSED for pk in stopped}


@dataclass
class _Sent:
    delivery: Delivery
    attempt: DeliveryAttempt
    outcome: SendResult | ProviderError
    duration_ms: int


def _dispatch_channel(channel: str, claimed: list[Delivery], targets: dict, link: Link | None = None) -> dict[str, str]:
    """Hand the claimed deliveries to the provider flush by flush. One transaction between
    two flushes records the outcomes of the last one and hands off the next (its attempts
    committed as pending before any of it is sent): a few statements per flush."""
    if link is not None:
        provider, failure, record_id = link.provider, link.error, link.record_id
    else:
        record_id = None
        try:
            provider, failure = providers_for(channel, claimed[0].to)[0], None
        except ProviderConfigurationError as error:
            provider, failure = None, error
    kind = provider.kind if provider else ""
    size = settings.BEACON_DISPATCH_FLUSH_SIZE if provider else len(claimed)
    lease = settings.BEACON_SENDING_LEASE_SECONDS
    outcomes: dict[str, str] = {}
    extras = _message_extras(channel, claimed, targets)
    pending, sent, unsent, throttled = list(claimed), [], [], None
    renewed = time.monotonic()
    while True:
        chunk, pending = ([], pending) if throttled else (pending[:size], pending[size:])
        changes: list[StatusChange] = []
        with transaction.atomic():
            recorded, overtaken = _record(sent, changes)
            if throttled is not None:
                # The provider asked us to slow down: the rest of the batch waits rather
                # than hammering it, and goes out together after its Retry-After.
                recorded.update(_release(handed=unsent, not_handed=pending, error=throttled, changes=changes))
            attempts = _hand_off(chunk, kind, changes, record_id)
            # One statement writes the last flush's outcomes and the next one's pending
            # attempts (an upsert on delivery + number).
            _attempts_write([item.attempt for item in sent] + attempts)
            if pending and time.monotonic() - renewed > lease / 4:
                # A long batch (a slow provider) keeps its claim: the sweep must not take
                # its waiting deliveries for a dead worker's.
                Delivery.objects.filter(pk__in=[d.pk for d in pending]).update(claimed_at=timezone.now())
                renewed = time.monotonic()
            events_record(changes)
        outcomes.update(recorded)
        if overtaken:
            current = Delivery.objects.filter(pk__in=overtaken).values_list("pk", "status")
            outcomes.update({str(pk): status for pk, status in current})
        if not chunk:
            return outcomes
        if provider is None:
            sent = [_Sent(d, a, failure, 0) for d, a in zip(chunk, attempts, strict=True)]
            continue
        sent, throttled = _send(provider, chunk, attempts, extras)
        unsent = list(zip(chunk[len(sent) :], attempts[len(sent) :], strict=True))


def _hand_off(
    chunk: list[Delivery], provider_kind: str, changes: list[StatusChange], record_id: int | None = None
) -> list[DeliveryAttempt]:
    """The attempts (outcome pending) of the deliveries about to reach the provider."""
    if not chunk:
        return []
    now = timezone.now()
    changes += [
        StatusChange(
            d.pk,
            DeliveryStatus.QUEUED,
            DeliveryStatus.SENDING,
            "dispatch",
            now,
            detail=f"attempt {d.attempt_count} via {provider_kind or '-'}",
        )
        for d in chunk
    ]
    return [
        DeliveryAttempt(
            delivery_id=d.pk,
            number=d.attempt_count,
            provider=provider_kind,
            provider_config_id=record_id,
            started_at=now,
        )
        for d in chunk
    ]


def _attempts_write(attempts: list[DeliveryAttempt]) -> None:
    """Attempts are keyed by delivery and number: new ones are inserted, known ones get
    their outcome, in one statement."""
    rows_upsert(DeliveryAttempt, attempts, unique_fields=["delivery", "number"], update_fields=ATTEMPT_RESULT_FIELDS)


def _send(
    provider, chunk: list[Delivery], attempts: list[DeliveryAttempt], extras: dict
) -> tuple[list[_Sent], ProviderError | None]:
    """Send a flush; stop at a throttling answer (429), leaving the rest unsent."""
    messages = [_message(d, **extras.get(d.pk, {})) for d in chunk]
    stream = iter(provider.send_many(messages))
    sent: list[_Sent] = []
    for delivery, attempt in zip(chunk, attempts, strict=True):
        started = time.monotonic()
        try:
            outcome = next(stream)
        except StopIteration:
            outcome = ProviderError(f"{provider.kind} returned no result for this message.", retryable=True)
        except Exception as exc:  # noqa: BLE001 - an adapter bug must not strand the batch in "sending"
            logger.exception("provider %s raised an unclassified error", provider.kind)
            outcome = ProviderError(f"Unexpected error: {exc.__class__.__name__}", retryable=True)
        sent.append(_Sent(delivery, attempt, outcome, int((time.monotonic() - started) * 1000)))
        if isinstance(outcome, ProviderError) and outcome.status_code == 429:
            return sent, outcome
    return sent, None


def _message_extras(channel: str, deliveries: list[Delivery], targets: dict) -> dict:
    """What each message carries besides the delivery's own fields, by delivery id: a
    marketing email's one-click unsubscribe headers (one query for the batch), the kept
    record of its address (read with the claim)."""
    if channel == Channel.EMAIL:
        return {pk: {"headers": headers} for pk, headers in _message_headers(deliveries).items()}
    if channel in TARGETS:
        return {d.pk: {"target": targets[d.pk]} for d in deliveries if d.pk in targets}
    return {}


def _message_headers(deliveries: list[Delivery]) -> dict:
    """Extra headers by delivery id: a marketing email carries a one-click unsubscribe link
    for its recipient (RFC 8058)."""
    if not deliveries:
        return {}
    marketing = dict(
        Notification.objects.filter(
            pk__in={d.notification_id for d in deliveries}, category=Category.MARKETING
        ).values_list("pk", "recipient_id")
    )
    return {
        d.pk: unsubscribe_headers(account_id=d.account_id, recipient_id=marketing[d.notification_id])
        for d in deliveries
        if d.notification_id in marketing
    }


def _message(delivery: Delivery, headers: dict | None = None, target: dict | None = None) -> OutboundMessage:
    return OutboundMessage(
        channel=delivery.channel,
        to=delivery.to,
        subject=delivery.subject,
        body=delivery.body,
        html_body=delivery.html_body,
        reference=str(delivery.pk),
        status_callback_url=status_callback_url(delivery),
        locale=delivery.locale,
        metadata={"beacon_delivery": str(delivery.pk)},
        headers=headers or {},
        options=delivery.options or {},
        target=target or {},
    )


def _record(sent: list[_Sent], changes: list[StatusChange]) -> tuple[dict[str, str], list]:
    """Write a flush's statuses (one statement, whatever its size), set its attempts'
    outcomes for the caller to write, and add its events to `changes`. Returns the new statuses of the deliveries it moved, and the ids
    of those a provider callback had already moved on (they keep their status)."""
    if not sent:
        return {}, []
    finished = timezone.now()
    ours: list[StatusChange] = []
    retry_now: list[tuple[Delivery, float]] = []
    for item in sent:
        _apply(item, finished, ours, retry_now)
    errors = [item for item in sent if isinstance(item.outcome, ProviderError)]
    unsubscribed_errors_suppress(
        reports=[
            (item.delivery.account_id, item.delivery.channel, item.delivery.to, item.outcome.code)
            for item in errors
            if item.outcome.code
        ]
    )
    for channel, (_, _, gone) in TARGETS.items():
        reports = [
            (item.delivery.account_id, item.delivery.to, item.outcome.message)
            for item in errors
            if item.outcome.gone and item.delivery.channel == channel
        ]
        if reports:
            gone(reports=reports)
    movable = rows_update(
        Delivery,
        [item.delivery for item in sent],
        DELIVERY_RESULT_FIELDS,
        only_where={"status": DeliveryStatus.SENDING},
    )
    changes += [change for change in ours if change.delivery_id in movable]
    overtaken = [item for item in sent if item.delivery.pk not in movable]
    if overtaken:
        _keep_overtaken(overtaken, finished)
    retries = [(d, delay) for d, delay in retry_now if d.pk in movable]
    if retries:
        enqueue_dispatch(
            [Dispatch(d.pk, d.channel, d.attempt_count) for d, _ in retries],
            countdown=max(delay for _, delay in retries),
        )
    moved = {str(item.delivery.pk): item.delivery.status for item in sent if item.delivery.pk in movable}
    return moved, [item.delivery.pk for item in overtaken]


def _apply(item: _Sent, finished: datetime, changes: list[StatusChange], retry_now: list) -> None:
    """Set the in-memory attempt and delivery to what the provider's answer means."""
    delivery, attempt, outcome = item.delivery, item.attempt, item.outcome
    attempt.finished_at, attempt.duration_ms = finished, item.duration_ms
    delivery.updated_at = finished
    if isinstance(outcome, SendResult):
        attempt.outcome = DeliveryAttempt.Outcome.SUCCESS
        attempt.response_code, attempt.provider_message_id = outcome.response_code, outcome.provider_message_id
        delivery.status, delivery.sent_at = outcome.status, finished
        delivery.provider, delivery.provider_message_id, delivery.cost = (
            attempt.provider,
            outcome.provider_message_id,
            outcome.cost,
        )
        delivery.next_attempt_at, delivery.enqueued_at, delivery.error_code, delivery.error_message = None, None, "", ""
        changes.append(
            StatusChange(
                delivery.pk,
                DeliveryStatus.SENDING,
                outcome.status,
                "dispatch",
                finished,
                detail=f"accepted by {attempt.provider}",
            )
        )
        return
    error = outcome
    attempt.outcome = DeliveryAttempt.Outcome.RETRYABLE if error.retryable else DeliveryAttempt.Outcome.PERMANENT
    attempt.response_code, attempt.error = error.status_code, error.message[:2000]
    attempt.retry_after_seconds = error.retry_after
    delivery.error_code, delivery.error_message = (error.code or "")[:64], error.message[:2000]
    if error.retryable and delivery.attempt_count < delivery.max_attempts:
        delay = retry_delay(attempt=delivery.attempt_count, retry_after=error.retry_after)
        delivery.status, delivery.next_attempt_at = DeliveryStatus.QUEUED, finished + timedelta(seconds=delay)
        if waits_for_sweep(delay):
            delivery.enqueued_at = None
        else:
            delivery.enqueued_at = finished
            retry_now.append((delivery, delay))
        detail = f"retry in {delay:.1f}s: {error.message}"
    else:
        delivery.status, delivery.failed_at = DeliveryStatus.FAILED, finished
        delivery.next_attempt_at, delivery.enqueued_at = None, None
        detail = f"{'gave up after retries' if error.retryable else 'permanent error'}: {error.message}"
    changes.append(StatusChange(delivery.pk, DeliveryStatus.SENDING, delivery.status, "dispatch", finished, detail))


def _keep_overtaken(overtaken: list[_Sent], finished: datetime) -> None:
    """A callback moved these on first: keep its status and error, add what we learned."""
    accepted = [item.delivery for item in overtaken if isinstance(item.outcome, SendResult)]
    if not accepted:
        return
    rows_update(Delivery, accepted, ["provider", "provider_message_id", "cost", "updated_at"])
    Delivery.objects.filter(pk__in=[d.pk for d in accepted], sent_at__isnull=True).update(sent_at=finished)


def _release(
    *,
    handed: list[tuple[Delivery, DeliveryAttempt]],
    not_handed: list[Delivery],
    error: ProviderError,
    changes: list[StatusChange],
) -> dict[str, str]:
    """Put back, unsent, the deliveries a throttling provider kept us from sending: they
    keep their attempt count and go out after the provider's Retry-After."""
    deliveries = [d for d, _ in handed] + not_handed
    if not deliveries:
        return {}
    now = timezone.now()
    delay = retry_delay(attempt=1, retry_after=error.retry_after)
    sweep_waits = waits_for_sweep(delay)
    DeliveryAttempt.objects.filter(
        delivery_id__in=[d.pk for d, _ in handed], outcome=DeliveryAttempt.Outcome.PENDING
    ).delete()
    Delivery.objects.filter(pk__in=[d.pk for d in deliveries], status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.QUEUED,
        attempt_count=F("attempt_count") - 1,
        next_attempt_at=now + timedelta(seconds=delay),
        enqueued_at=None if sweep_waits else now,
        updated_at=now,
    )
    changes += [
        StatusChange(
            d.pk,
            DeliveryStatus.SENDING,
            DeliveryStatus.QUEUED,
            "dispatch",
            now,
            detail=f"not sent: the provider is throttling; retry in {delay:.1f}s",
        )
        for d, _ in handed
    ]
    if not sweep_waits:
        enqueue_dispatch([Dispatch(d.pk, d.channel, d.attempt_count - 1) for d in deliveries], countdown=delay)
    return {str(d.pk): DeliveryStatus.QUEUED for d in deliveries}
