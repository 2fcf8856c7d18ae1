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
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
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
from providers.health import CLOSED, Admission, Outcomes, provider_admit, provider_pause, provider_record
from providers.limits import NO_LIMIT, provider_token_wait, tokens_take
from providers.registry import Link, account_records, provider_chain
from templates.models import Category, Channel

from ..bulk import rows_update, rows_upsert
from ..models import Delivery, DeliveryAttempt, DeliveryStatus, Notification
from ..queue import Dispatch, enqueue_dispatch
from ..unsubscribe import unsubscribe_headers
from .devices import devices_for_deliveries, devices_gone
from .events import StatusChange, events_record
from .fallback import fallbacks_settle
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
    "cost",
    "currency",
]
DELIVERY_RESULT_FIELDS = [
    "status",
    "provider",
    "provider_message_id",
    "cost",
    "sent_at",
    "failed_at",
    "max_attempts",
    "providers_tried",
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
        # Accounts with providers of their own send through them: one chain per account.
        parts: dict = {}
        for delivery in group:
            parts.setdefault(delivery.account_id if records else None, []).append(delivery)
        for part in parts.values():
            chain = provider_chain(channel, part[0].to, records.get(part[0].account_id, []))
            routes, held = _route(chain, part)
            outcomes.update(_hold(held))
            for link, deliveries in routes:
                outcomes.update(_dispatch_channel(channel, deliveries, targets, chain, link))
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


def _stop(
    claimed: list[Delivery],
    stopped: dict,
    *,
    status: str = DeliveryStatus.SUPPRESSED,
    code: str = "skipped",
    counted: bool = False,
) -> tuple[list[Delivery], dict[str, str]]:
    """End the claimed deliveries of `stopped` (id -> why) unsent, as suppressed (no
    attempt counted) or, with `counted`, as failed on the attempt their claim counted: one
    UPDATE per distinct reason, not per row."""
    if not stopped:
        return claimed, {}
    now = timezone.now()
    by_message: dict[str, list] = {}
    for pk, message in stopped.items():
        by_message.setdefault(message, []).append(pk)
    changes = [
        StatusChange(pk, DeliveryStatus.SENDING, status, "dispatch", now, message) for pk, message in stopped.items()
    ]
    ended_at = {"failed_at": now} if status == DeliveryStatus.FAILED else {}
    with transaction.atomic():
        for message, pks in by_message.items():
            Delivery.objects.filter(pk__in=pks, status=DeliveryStatus.SENDING).update(
                status=status,
                attempt_count=F("attempt_count") - (0 if counted else 1),
                next_attempt_at=None,
                enqueued_at=None,
                error_code=code,
                error_message=message,
                updated_at=now,
                **ended_at,
            )
        # A fallback notification's next channel is released (its events join these).
        ended = [d for d in claimed if d.pk in stopped and d.fallback_rank is not None]
        for delivery in ended:
            delivery.status, delivery.error_message = status, stopped[delivery.pk]
        fallbacks_settle(ended, changes=changes)
        events_record(changes)
    logger.info("%d claimed deliveries were not sent: %s", len(stopped), ", ".join(sorted(by_message)))
    return [d for d in claimed if d.pk not in stopped], {str(pk): status for pk in stopped}


def _route(chain: list[Link], deliveries: list[Delivery]) -> tuple[list[tuple[Link, list]], dict]:
    """Which provider of the chain sends each delivery: the first one it has not failed
    on in this round whose breaker lets it through (one shared-state round trip per
    provider and batch). A half-open provider takes one delivery, its probe. A delivery
    every remaining provider of which is open or paused waits, unsent, until the first
    of them may be tried again: returned as {delivery: when}."""
    admissions: dict[str, Admission] = {}

    def admit(link: Link) -> Admission:
        if not link.shared:
            return CLOSED  # a broken record fails at once; a recipient's own endpoint has no breaker
        admission = admissions.get(link.key)
        if admission is None:
            admission = admissions[link.key] = provider_admit(link.key)
        if admission.verdict == "probe":
            # The one message a half-open breaker lets through; the rest skip it.
            admissions[link.key] = Admission("open", time.time() + settings.BEACON_BREAKER_PROBE_SECONDS)
        return admission

    routed: dict[str, tuple[Link, list]] = {}
    held: dict = {}
    for delivery in deliveries:
        tried = set(delivery.providers_tried or ())
        untried = [link for link in chain if link.key not in tried]
        if not untried:
            # The chain changed under it (a record disabled): a new round.
            untried, delivery.providers_tried = chain, []
        until, chosen = None, None
        for link in untried:
            admission = admit(link)
            if admission.sends:
                chosen = link
                break
            until = admission.until if until is None else min(until, admission.until)
        if chosen is None and len(untried) < len(chain):
            # Every provider it has not tried is open or paused, but one it failed on
            # earlier in this round may have recovered: a new round from there.
            chosen = next((link for link in chain if link.key in tried and admit(link).sends), None)
            if chosen is not None:
                delivery.providers_tried = []
        if chosen is None:
            held[delivery] = until if until is not None else time.time()
        else:
            routed.setdefault(chosen.key, (chosen, []))[1].append(delivery)
    return list(routed.values()), held


def _hold(held: dict) -> dict[str, str]:
    """Put back, unsent, the deliveries whose providers are all open or paused, each until
    the first may be tried again. A hold uses one of the delivery's attempts, so that a
    long outage ends in failure like retries do: one that has no attempt left, or whose
    notification has a fallback channel waiting behind it (which is then tried), ends
    failed instead."""
    if not held:
        return {}
    behind = _standby_behind([d for d in held if d.fallback_rank is not None])
    ending = {
        d.pk: "every provider of the channel is unavailable (circuit open or paused)"
        for d in held
        if d.attempt_count >= d.max_attempts or d.notification_id in behind
    }
    _, outcomes = _stop(list(held), ending, status=DeliveryStatus.FAILED, code="providers_unavailable", counted=True)
    now, longest = time.time(), settings.BEACON_RETRY_MAX_SECONDS
    waits = {d: min(max(0.0, until - now), longest) for d, until in held.items() if d.pk not in ending}
    with transaction.atomic():
        outcomes.update(_put_back_each(waits, counted=True))
    logger.info("%d deliveries wait for their providers' breakers or pauses", len(held) - len(ending))
    return outcomes


def _standby_behind(deliveries: list[Delivery]) -> set:
    """The notifications among these deliveries' that have a fallback channel on standby."""
    if not deliveries:
        return set()
    return set(
        Delivery.objects.filter(
            notification_id__in={d.notification_id for d in deliveries}, status=DeliveryStatus.STANDBY
        ).values_list("notification_id", flat=True)
    )


@dataclass
class _Sent:
    delivery: Delivery
    attempt: DeliveryAttempt
    outcome: SendResult | ProviderError
    duration_ms: int


def _dispatch_channel(
    channel: str, claimed: list[Delivery], targets: dict, chain: list[Link], link: Link
) -> dict[str, str]:
    """Hand the claimed deliveries to the link's provider flush by flush. One transaction
    between two flushes records the outcomes of the last one and hands off the next (its
    attempts committed as pending before any of it is sent): a few statements per flush.
    A flush's answers count into the provider's health and breaker; when the provider
    throttles (429) or its breaker opens, the rest of the batch goes back to the queue,
    unsent, for the next provider or the end of the pause."""
    provider = link.provider
    size = settings.BEACON_DISPATCH_FLUSH_SIZE if provider else len(claimed)
    lease = settings.BEACON_SENDING_LEASE_SECONDS
    outcomes: dict[str, str] = {}
    extras = _message_extras(channel, claimed, targets)
    pending, waiting = _own_limits(claimed) if provider is not None else (list(claimed), {})
    sent, unsent, stopped = [], [], None
    renewed = time.monotonic()
    while True:
        chunk, pending = ([], pending) if stopped else (pending[:size], pending[size:])
        changes: list[StatusChange] = []
        with transaction.atomic():
            recorded, overtaken = _record(sent, changes, chain, link)
            if waiting:
                # Over a rate limit: back to the queue, unsent, until their tokens are due.
                recorded.update(_wait_out(waiting))
                waiting = {}
            if stopped is not None:
                # The rest of the batch waits rather than hammering the provider: it goes
                # to the next provider of the chain, or out together after the pause.
                detail, delay = stopped
                recorded.update(
                    _put_back(
                        [d for d, _ in unsent] + pending, delay=delay, handed=unsent, changes=changes, detail=detail
                    )
                )
            attempts = _hand_off(chunk, link, changes)
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
        token_wait = 0.0
        if provider is None:
            sent = [_Sent(d, a, link.error, 0) for d, a in zip(chunk, attempts, strict=True)]
        else:
            sent, token_wait = _send(link, chunk, attempts, extras)
        unsent = list(zip(chunk[len(sent) :], attempts[len(sent) :], strict=True))
        stopped = _provider_watch(link, sent, chain)
        if stopped is None and token_wait:
            stopped = (f"not sent: {link.label}'s rate limit; retry in {token_wait:.1f}s", token_wait)


def _own_limits(deliveries: list[Delivery]) -> tuple[list[Delivery], dict]:
    """The deliveries their account's and recipient's rate limits let through now, in
    order, and those that must wait, with their seconds (staggered at the limit's rate
    over the whole batch): one shared-state round trip, none when no such limit is set."""
    grant = tokens_take(
        provider_key="",
        provider=NO_LIMIT,
        messages=[(d.account_id, f"{d.account_id}:{address_hash(d.channel, d.to)}") for d in deliveries],
    )
    granted = [d for d, wait in zip(deliveries, grant.waits, strict=True) if not wait]
    return granted, {d: wait for d, wait in zip(deliveries, grant.waits, strict=True) if wait}


def _wait_out(waiting: dict) -> dict[str, str]:
    """Put back unsent the deliveries over a rate limit, each for its wait."""
    outcomes = _put_back_each(waiting)
    logger.info("%d deliveries wait for their rate limits", len(waiting))
    return outcomes


def _put_back_each(waits: dict, *, counted: bool = False) -> dict[str, str]:
    """`_put_back` for deliveries that each wait their own time ({delivery: seconds}),
    rounded up (never sooner than due) to a tenth of a second under one second and to
    whole seconds beyond: one statement per distinct wait."""
    by_delay: dict[float, list] = {}
    for delivery, wait in waits.items():
        step = 0.1 if wait < 1 else 1.0
        by_delay.setdefault(round(math.ceil(wait / step) * step, 1), []).append(delivery)
    outcomes = {}
    for delay, deliveries in by_delay.items():
        outcomes.update(_put_back(deliveries, delay=delay, counted=counted))
    return outcomes


def _provider_watch(link: Link, sent: list[_Sent], chain: list[Link]) -> tuple[str, float] | None:
    """Count a flush into the provider's shared health and breaker. When the rest of the
    batch must not go to this provider now (it throttled us, its breaker opened): why,
    and how long the rest waits (at once to the next provider of a longer chain, else
    until this one may be tried again)."""
    if not link.shared:
        throttle = next(
            (i.outcome for i in sent if isinstance(i.outcome, ProviderError) and i.outcome.status_code == 429), None
        )
        if throttle is None:
            return None
        wait = retry_delay(attempt=1, retry_after=throttle.retry_after)
        return f"not sent: {link.label} is throttling; retry in {wait:.1f}s", wait
    results, latencies, last_error, throttle = [], [], "", None
    for item in sent:
        error = item.outcome if isinstance(item.outcome, ProviderError) else None
        if error is not None and error.status_code == 429:
            throttle = error
            continue
        failed = error is not None and provider_failure(error)
        results.append(not failed)
        latencies.append(item.duration_ms)
        if failed:
            last_error = error.message
    state = provider_record(link.key, Outcomes(results, latencies, last_error))
    if throttle is not None:
        pause = throttle.retry_after if throttle.retry_after is not None else settings.BEACON_THROTTLE_PAUSE_SECONDS
        provider_pause(link.key, pause, f"throttled: {throttle.message}")
        why, wait = f"{link.label} is throttling", retry_delay(attempt=1, retry_after=pause)
    elif state == "open":
        why, wait = f"{link.label}'s circuit breaker opened", settings.BEACON_BREAKER_COOLDOWN_SECONDS
    else:
        return None
    if len(chain) > 1:
        # A second later (the pause keeps every worker off this provider meanwhile), by
        # the next provider of the chain.
        return f"not sent: {why}; trying the next provider", 1.0
    return f"not sent: {why}; retry in {wait:.1f}s", wait


def provider_failure(error: ProviderError) -> bool:
    """An error about the provider rather than the message or its recipient: its
    configuration or credentials, or a retryable failure (5xx, a timeout, a throttle).
    These count against its breaker and move a delivery to the next provider; an error
    about the recipient (an invalid number, a hard bounce) does neither."""
    return isinstance(error, ProviderConfigurationError) or error.retryable


def _hand_off(chunk: list[Delivery], link: Link, changes: list[StatusChange]) -> list[DeliveryAttempt]:
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
            detail=f"attempt {d.attempt_count} via {link.label}",
        )
        for d in chunk
    ]
    return [
        DeliveryAttempt(
            delivery_id=d.pk,
            number=d.attempt_count,
            provider=link.kind,
            provider_config_id=link.record_id,
            started_at=now,
        )
        for d in chunk
    ]


def _attempts_write(attempts: list[DeliveryAttempt]) -> None:
    """Attempts are keyed by delivery and number: new ones are inserted, known ones get
    their outcome, in one statement."""
    rows_upsert(DeliveryAttempt, attempts, unique_fields=["delivery", "number"], update_fields=ATTEMPT_RESULT_FIELDS)


def _send(
    link: Link, chunk: list[Delivery], attempts: list[DeliveryAttempt], extras: dict
) -> tuple[list[_Sent], float]:
    """Send a flush, each request after its token of the provider's rate limit; stop at a
    throttling answer (429), or when the next token is further off than a batch should
    wait (then also returned: the wait), leaving the rest unsent."""
    provider = link.provider
    messages = [_message(d, **extras.get(d.pk, {})) for d in chunk]
    stream = iter(provider.send_many(messages))
    most = settings.BEACON_RATE_LIMIT_MAX_WAIT_SECONDS
    sent: list[_Sent] = []
    for delivery, attempt in zip(chunk, attempts, strict=True):
        if link.limit.limited:
            wait = provider_token_wait(link.key, link.limit, most=most)
            if wait:
                return sent, wait
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
            break
    return sent, 0.0


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


def _record(
    sent: list[_Sent], changes: list[StatusChange], chain: list[Link], link: Link
) -> tuple[dict[str, str], list]:
    """Write a flush's statuses (one statement, whatever its size), set its attempts'
    outcomes for the caller to write, and add its events to `changes`. Returns the new statuses of the deliveries it moved, and the ids
    of those a provider callback had already moved on (they keep their status)."""
    if not sent:
        return {}, []
    finished = timezone.now()
    ours: list[StatusChange] = []
    retry_now: list[tuple[Delivery, float]] = []
    for item in sent:
        _apply(item, finished, ours, retry_now, chain, link)
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
    # A fallback notification's standby deliveries are released or cancelled with these.
    fallbacks_settle(
        [i.delivery for i in sent if i.delivery.pk in movable and i.delivery.fallback_rank is not None], changes=changes
    )
    overtaken = [item for item in sent if item.delivery.pk not in movable]
    if overtaken:
        _keep_overtaken(overtaken, finished)
    retries = [(d, delay) for d, delay in retry_now if d.pk in movable]
    # Failovers go at once, to the next provider; retries after their backoff.
    for now_or_later in ([r for r in retries if r[1] == 0], [r for r in retries if r[1] > 0]):
        if now_or_later:
            enqueue_dispatch(
                [Dispatch(d.pk, d.channel, d.attempt_count) for d, _ in now_or_later],
                countdown=max(delay for _, delay in now_or_later),
            )
    moved = {str(item.delivery.pk): item.delivery.status for item in sent if item.delivery.pk in movable}
    return moved, [item.delivery.pk for item in overtaken]


def _apply(
    item: _Sent, finished: datetime, changes: list[StatusChange], retry_now: list, chain: list[Link], link: Link
) -> None:
    """Set the in-memory attempt and delivery to what the provider's answer means."""
    delivery, attempt, outcome = item.delivery, item.attempt, item.outcome
    attempt.finished_at, attempt.duration_ms = finished, item.duration_ms
    delivery.updated_at = finished
    if isinstance(outcome, SendResult):
        attempt.outcome = DeliveryAttempt.Outcome.SUCCESS
        attempt.response_code, attempt.provider_message_id = outcome.response_code, outcome.provider_message_id
        attempt.cost, attempt.currency = _cost(delivery, link)
        delivery.status, delivery.sent_at = outcome.status, finished
        delivery.provider, delivery.provider_message_id = attempt.provider, outcome.provider_message_id
        delivery.cost = str(attempt.cost) if attempt.cost is not None else outcome.cost
        delivery.next_attempt_at, delivery.enqueued_at, delivery.error_code, delivery.error_message = None, None, "", ""
        delivery.providers_tried = []
        changes.append(
            StatusChange(
                delivery.pk,
                DeliveryStatus.SENDING,
                outcome.status,
                "dispatch",
                finished,
                detail=f"accepted by {link.label}",
            )
        )
        return
    error = outcome
    attempt.outcome = DeliveryAttempt.Outcome.RETRYABLE if error.retryable else DeliveryAttempt.Outcome.PERMANENT
    attempt.response_code, attempt.error = error.status_code, error.message[:2000]
    attempt.retry_after_seconds = error.retry_after
    delivery.error_code, delivery.error_message = (error.code or "")[:64], error.message[:2000]
    if provider_failure(error):
        tried = [*dict.fromkeys([*(delivery.providers_tried or ()), link.key])]
        following = [other for other in chain if other.key not in tried]
        if following:
            # The next provider of the chain takes it now. Each provider gets at least
            # one attempt, even when this one used the last of the delivery's.
            delivery.providers_tried = tried
            delivery.max_attempts = max(delivery.max_attempts, delivery.attempt_count + 1)
            delivery.status, delivery.next_attempt_at, delivery.enqueued_at = DeliveryStatus.QUEUED, finished, finished
            retry_now.append((delivery, 0))
            detail = f"failing over from {link.label} to {following[0].label}: {error.message}"
            changes.append(
                StatusChange(delivery.pk, DeliveryStatus.SENDING, delivery.status, "dispatch", finished, detail)
            )
            return
        # The chain is done for this round: a retry starts again from its first provider,
        # unless every provider refused it for good (when one failed only for now, the
        # round is worth repeating whatever the last one said).
        delivery.providers_tried = []
        retryable = error.retryable or len(tried) > 1
    else:
        retryable = error.retryable
    if retryable and delivery.attempt_count < delivery.max_attempts:
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
        if len(chain) > 1 and provider_failure(error):
            detail = f"every provider failed: {error.message}"
        else:
            detail = f"{'gave up after retries' if error.retryable else 'permanent error'}: {error.message}"
    changes.append(StatusChange(delivery.pk, DeliveryStatus.SENDING, delivery.status, "dispatch", finished, detail))


def _cost(delivery: Delivery, link: Link) -> tuple[Decimal | None, str]:
    """What an accepted message cost: the provider record's price, per segment for SMS."""
    if link.cost_per_message is None:
        return None, ""
    units = max(delivery.segments, 1) if delivery.channel == Channel.SMS else 1
    return link.cost_per_message * units, link.currency


def _keep_overtaken(overtaken: list[_Sent], finished: datetime) -> None:
    """A callback moved these on first: keep its status and error, add what we learned."""
    accepted = [item.delivery for item in overtaken if isinstance(item.outcome, SendResult)]
    if not accepted:
        return
    rows_update(Delivery, accepted, ["provider", "provider_message_id", "cost", "updated_at"])
    Delivery.objects.filter(pk__in=[d.pk for d in accepted], sent_at__isnull=True).update(sent_at=finished)


def _put_back(
    deliveries: list[Delivery],
    *,
    delay: float,
    handed: list[tuple[Delivery, DeliveryAttempt]] = (),
    changes: list[StatusChange] | None = None,
    detail: str = "",
    counted: bool = False,
) -> dict[str, str]:
    """Put claimed deliveries back in the queue unsent, their attempt count as it was
    (or, `counted`, with the attempt their claim counted used up), to be dispatched again
    after `delay`; those already handed off lose their pending attempt and get an event
    saying why."""
    if not deliveries:
        return {}
    now = timezone.now()
    sweep_waits = waits_for_sweep(delay)
    if handed:
        DeliveryAttempt.objects.filter(
            delivery_id__in=[d.pk for d, _ in handed], outcome=DeliveryAttempt.Outcome.PENDING
        ).delete()
    Delivery.objects.filter(pk__in=[d.pk for d in deliveries], status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.QUEUED,
        attempt_count=F("attempt_count") - (0 if counted else 1),
        next_attempt_at=now + timedelta(seconds=delay),
        enqueued_at=None if sweep_waits else now,
        updated_at=now,
    )
    if changes is not None:
        changes += [
            StatusChange(d.pk, DeliveryStatus.SENDING, DeliveryStatus.QUEUED, "dispatch", now, detail=detail)
            for d, _ in handed
        ]
    if not sweep_waits:
        enqueue_dispatch(
            [Dispatch(d.pk, d.channel, d.attempt_count - (0 if counted else 1)) for d in deliveries], countdown=delay
        )
    return {str(d.pk): DeliveryStatus.QUEUED for d in deliveries}
