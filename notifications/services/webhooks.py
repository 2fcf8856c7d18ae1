"""Tell: deliveries' status changes posted to the account's webhook endpoints, signed per
Standard Webhooks (providers.webhook.post_signed), and the endpoints themselves.

Every status change passes through `events_record`, which hands the batch to
`deliveries_changed`: for the accounts with an endpoint subscribed to the change's type
(`delivery.sent`, `delivery.failed`, ..., or `*`), one WebhookMessage per endpoint and
change is written in the same transaction and sent after commit. A message that fails
waits in the database for its next attempt (about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
10 h after the one before): the periodic due scan claims what is due with
FOR UPDATE SKIP LOCKED, never a Celery countdown. A 410 Gone disables the endpoint at
once; an endpoint that has failed for BEACON_WEBHOOK_DISABLE_AFTER_DAYS without a success
is disabled too. Every attempt is kept.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from config.cache import ProcessCache
from config.encryption import decrypt, encrypt
from providers.base import ProviderError
from providers.webhook import post_signed, secret_generate

from ..bulk import rows_insert, rows_update
from ..models import (
    Delivery,
    DeliveryStatus,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
    WebhookMessageStatus,
)

logger = logging.getLogger("beacon.webhooks")

# Seconds after each failed attempt before the next; one attempt more than delays.
RETRY_DELAYS = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
# Status changes published as events: every status but the worker's own "sending".
EVENT_TYPES = tuple(f"delivery.{status}" for status in DeliveryStatus.values if status != DeliveryStatus.SENDING)
TEST_EVENT = "webhook.test"
SUBSCRIBABLE = (*EVENT_TYPES, TEST_EVENT)
# How long a process trusts what it read about which accounts have endpoints.
ENDPOINT_CACHE_SECONDS = 5.0


class EndpointInvalid(Exception):
    def __init__(self, errors: dict):
        super().__init__(str(errors))
        self.errors = errors


# --- Endpoints ----------------------------------------------------------------------------


def _check_event_types(event_types) -> list[str]:
    if not isinstance(event_types, list) or not event_types or not all(isinstance(t, str) for t in event_types):
        raise EndpointInvalid({"event_types": ['Give a list of event types, or ["*"] for all.']})
    unknown = sorted(set(event_types) - {"*", *SUBSCRIBABLE})
    if unknown:
        raise EndpointInvalid(
            {"event_types": [f"Unknown event type(s): {', '.join(unknown)}. Known: *, {', '.join(SUBSCRIBABLE)}."]}
        )
    return list(dict.fromkeys(event_types))


def endpoint_create(*, account, url: str, event_types: list[str], description: str = "") -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret, which is shown this once."""
    secret = secret_generate()
    endpoint = WebhookEndpoint.objects.create(
        account=account,
        url=url,
        description=description,
        event_types=_check_event_types(event_types),
        secret=encrypt(secret),
    )
    endpoints_forget()
    return endpoint, secret


def endpoint_update(*, endpoint: WebhookEndpoint, **changes) -> WebhookEndpoint:
    """Change the URL, event types, description, or `enabled` (enabling clears the
    failure run and the reason it was disabled)."""
    if "event_types" in changes:
        changes["event_types"] = _check_event_types(changes["event_types"])
    if "enabled" in changes:
        enabled = changes.pop("enabled")
        if enabled and not endpoint.enabled:
            endpoint.enabled, endpoint.disabled_at, endpoint.disabled_reason, endpoint.failing_since = (
                True,
                None,
                "",
                None,
            )
        elif not enabled and endpoint.enabled:
            endpoint.enabled, endpoint.disabled_at, endpoint.disabled_reason = False, timezone.now(), "disabled by hand"
    for field, value in changes.items():
        setattr(endpoint, field, value)
    endpoint.save()
    endpoints_forget()
    return endpoint


def endpoint_rotate_secret(*, endpoint: WebhookEndpoint, now: datetime | None = None) -> str:
    """A new secret, shown this once; the old one keeps signing beside it for
    BEACON_WEBHOOK_SECRET_OVERLAP_HOURS, so receivers can switch without losing a message."""
    now = now or timezone.now()
    secret = secret_generate()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + timedelta(hours=settings.BEACON_WEBHOOK_SECRET_OVERLAP_HOURS)
    endpoint.secret = encrypt(secret)
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"])
    return secret


def endpoint_secrets(endpoint: WebhookEndpoint, now: datetime | None = None) -> list[str]:
    """The secrets that sign now: the current one, and the previous one while it overlaps."""
    now = now or timezone.now()
    secrets = [decrypt(endpoint.secret)]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        secrets.append(decrypt(endpoint.previous_secret))
    return secrets


def endpoint_disable(endpoint_id: int, reason: str, now: datetime | None = None) -> None:
    now = now or timezone.now()
    WebhookEndpoint.objects.filter(pk=endpoint_id, enabled=True).update(
        enabled=False, disabled_at=now, disabled_reason=reason[:200], updated_at=now
    )
    endpoints_forget()
    logger.warning("webhook endpoint %s disabled: %s", endpoint_id, reason)


# --- Which accounts listen (cached per process) -----------------------------------------


def _accounts_with_endpoints() -> frozenset:
    return frozenset(
        WebhookEndpoint.objects.filter(enabled=True).values_list("account_id", flat=True).distinct().order_by()
    )


# The accounts with an enabled endpoint, read at most every ENDPOINT_CACHE_SECONDS: the hot
# path (every flush's events) asks nothing of the database when nobody listens.
LISTENERS = ProcessCache(_accounts_with_endpoints, ENDPOINT_CACHE_SECONDS)


def endpoints_forget() -> None:
    LISTENERS.forget()


def _listening_accounts() -> frozenset:
    return LISTENERS.get()


# --- Events -------------------------------------------------------------------------------


def deliveries_changed(changes) -> list[WebhookMessage]:
    """The webhook messages for a batch of status changes (StatusChange), written in one
    INSERT and sent after commit. Nothing is read when no account listens."""
    changes = [c for c in changes if f"delivery.{c.status}" in EVENT_TYPES]
    listening = _listening_accounts()
    if not changes or not listening:
        return []
    rows = {
        row["id"]: row
        for row in Delivery.objects.filter(pk__in={c.delivery_id for c in changes}, account_id__in=listening).values(
            "id",
            "account_id",
            "notification_id",
            "channel",
            "to",
            "provider",
            "provider_message_id",
            "error_code",
            "error_message",
            "notification__recipient__external_id",
        )
    }
    if not rows:
        return []
    endpoints: dict[int, list[WebhookEndpoint]] = {}
    for endpoint in WebhookEndpoint.objects.filter(
        enabled=True, account_id__in={row["account_id"] for row in rows.values()}
    ):
        endpoints.setdefault(endpoint.account_id, []).append(endpoint)
    now = timezone.now()
    messages = []
    for change in changes:
        row = rows.get(change.delivery_id) or rows.get(_as_uuid(change.delivery_id))
        if row is None:
            continue
        event_type = f"delivery.{change.status}"
        for endpoint in endpoints.get(row["account_id"], []):
            if "*" in endpoint.event_types or event_type in endpoint.event_types:
                messages.append(
                    WebhookMessage(
                        id=uuid.uuid4(),
                        account_id=row["account_id"],
                        endpoint=endpoint,
                        event_type=event_type,
                        payload=_delivery_event(event_type, change, row),
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
    if messages:
        rows_insert(WebhookMessage, [_message_row(m) for m in messages])
        ids = [str(m.pk) for m in messages]
        transaction.on_commit(lambda: _enqueue(ids))
    return messages


def _as_uuid(value):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _message_row(message: WebhookMessage) -> dict:
    return {
        "id": message.pk,
        "account_id": message.account_id,
        "endpoint_id": message.endpoint.pk,
        "event_type": message.event_type,
        "payload": message.payload,
        "status": WebhookMessageStatus.PENDING,
        "attempt_count": 0,
        "next_attempt_at": message.next_attempt_at,
        "last_error": "",
        "created_at": message.created_at,
    }


def _delivery_event(event_type: str, change, row: dict) -> dict:
    """The event's body, in the Standard Webhooks shape: type, timestamp, data."""
    return {
        "type": event_type,
        "timestamp": change.occurred_at.isoformat(),
        "data": {
            "delivery_id": str(row["id"]),
            "notification_id": str(row["notification_id"]),
            "channel": row["channel"],
            "status": change.status,
            "previous_status": change.from_status or None,
            "detail": change.detail,
            "provider": row["provider"],
            "provider_message_id": row["provider_message_id"],
            "error_code": row["error_code"],
            "recipient": {"external_id": row["notification__recipient__external_id"]},
        },
    }


def _enqueue(ids: list[str]) -> None:
    from ..tasks import webhook_messages_send

    size = settings.BEACON_WEBHOOK_BATCH_SIZE
    for start in range(0, len(ids), size):
        webhook_messages_send.delay(ids[start : start + size])


# --- Sending ------------------------------------------------------------------------------


def webhook_messages_send(*, ids: list, now: datetime | None = None) -> dict[str, str]:
    """Claim these messages if they are due and pending, and send them; their new status
    by id (a message another worker has, or not yet due, is left alone)."""
    return _send_claimed(_claim(Q(pk__in=ids), now=now, limit=len(ids)))


def webhook_messages_due(*, now: datetime | None = None, max_batches: int = 50) -> dict:
    """The due scan: send what is due, in batches claimed with FOR UPDATE SKIP LOCKED; and
    put back, as pending, messages a dead worker held past the lease."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.BEACON_SENDING_LEASE_SECONDS)
    recovered = WebhookMessage.objects.filter(status=WebhookMessageStatus.SENDING, claimed_at__lt=now - lease).update(
        status=WebhookMessageStatus.PENDING, next_attempt_at=now, claimed_at=None
    )
    counts = {"sent": 0, "recovered": recovered}
    for _ in range(max_batches):
        claimed = _claim(Q(next_attempt_at__lte=now), now=now, limit=settings.BEACON_WEBHOOK_BATCH_SIZE)
        if not claimed:
            break
        outcomes = _send_claimed(claimed)
        counts["sent"] += len(outcomes)
        if len(outcomes) < len(claimed):
            break  # the batch ran out of time: the next scan takes the rest
    return counts


def _claim(condition: Q, *, now: datetime | None, limit: int) -> list[WebhookMessage]:
    """pending -> sending for up to `limit` due rows matching `condition`; rows another
    transaction holds are skipped (PostgreSQL), so two workers never post one twice."""
    now = now or timezone.now()
    with transaction.atomic():
        due = WebhookMessage.objects.filter(
            condition, status=WebhookMessageStatus.PENDING, next_attempt_at__lte=now
        ).order_by("next_attempt_at", "created_at")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        ids = list(due.values_list("pk", flat=True)[:limit])
        if not ids:
            return []
        # The lease runs from the claim itself, not from the scan's `now` (a long scan's
        # later batches would otherwise start with part of their lease gone).
        WebhookMessage.objects.filter(pk__in=ids, status=WebhookMessageStatus.PENDING).update(
            status=WebhookMessageStatus.SENDING, claimed_at=timezone.now()
        )
    # Sent in the order claimed, the longest due first (the model's own order is newest first).
    claimed = {m.pk: m for m in WebhookMessage.objects.filter(pk__in=ids).select_related("endpoint")}
    return [claimed[pk] for pk in ids if pk in claimed]


def _send_claimed(messages: list[WebhookMessage]) -> dict[str, str]:
    """Post each claimed message once, then write the batch back together: its attempts in
    one INSERT and the messages' new states in one UPDATE; endpoints that answered 410
    Gone or failed too long are disabled, and a success ends an endpoint's failure run.

    A batch posts for at most half the sending lease (slow receivers: up to
    BEACON_WEBHOOK_TIMEOUT_SECONDS each); what it did not reach by then is put back as it
    was, unposted and left out of the answer, before the due scan would take the batch
    for a dead worker's and post it a second time."""
    if not messages:
        return {}
    budget = settings.BEACON_SENDING_LEASE_SECONDS / 2
    batch_started = time.monotonic()
    handled, released = messages, []
    attempts, secrets, ended = [], {}, {}
    # One instance per endpoint (select_related gives each message its own), so a later
    # message of the batch sees what an earlier one did to the endpoint's failure run.
    endpoints: dict[int, WebhookEndpoint] = {}
    failing_before: dict[int, datetime | None] = {}
    for index, message in enumerate(messages):
        if time.monotonic() - batch_started > budget:
            handled, released = messages[:index], messages[index:]
            break
        endpoint = endpoints.setdefault(message.endpoint_id, message.endpoint)
        failing_before.setdefault(endpoint.pk, endpoint.failing_since)
        now = timezone.now()
        number = message.attempt_count + 1
        if not endpoint.enabled or endpoint.pk in ended:
            reason = ended.get(endpoint.pk) or f"the endpoint is disabled ({endpoint.disabled_reason})"
            _settle(message, WebhookMessageStatus.FAILED, now, error=reason)
            continue
        if endpoint.pk not in secrets:
            secrets[endpoint.pk] = endpoint_secrets(endpoint, now)
        started = time.monotonic()
        response, error = None, None
        try:
            response = post_signed(
                endpoint.url,
                msg_id=message.webhook_id,
                payload=message.payload,
                secrets=secrets[endpoint.pk],
                timeout=settings.BEACON_WEBHOOK_TIMEOUT_SECONDS,
            )
        except ProviderError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - recorded and retried, never left "sending" with the batch
            logger.exception("webhook message %s: unexpected error while posting", message.pk)
            error = ProviderError(f"Unexpected error: {exc.__class__.__name__}", retryable=True)
        finished = timezone.now()
        message.attempt_count = number
        attempts.append(
            WebhookAttempt(
                message_id=message.pk,
                number=number,
                started_at=now,
                duration_ms=int((time.monotonic() - started) * 1000),
                response_status=response.status_code if response is not None else error.status_code,
                response_body=(response.text[:1000] if response is not None else ""),
                error=error.message[:500] if error else "",
                succeeded=error is None,
            )
        )
        if error is None:
            _settle(message, WebhookMessageStatus.DELIVERED, finished)
            endpoint.failing_since = None
            continue
        if endpoint.failing_since is None:
            endpoint.failing_since = finished
        limit = timedelta(days=settings.BEACON_WEBHOOK_DISABLE_AFTER_DAYS)
        if error.gone or finished - endpoint.failing_since >= limit:
            days = settings.BEACON_WEBHOOK_DISABLE_AFTER_DAYS
            ended[endpoint.pk] = (
                "the receiver answered 410 Gone" if error.gone else f"every attempt failed for {days} days"
            )
            endpoint_disable(endpoint.pk, ended[endpoint.pk], finished)
            _settle(message, WebhookMessageStatus.FAILED, finished, error=error.message)
        elif number >= MAX_ATTEMPTS:
            _settle(message, WebhookMessageStatus.FAILED, finished, error=error.message)
        else:
            delay = RETRY_DELAYS[number - 1]
            if error.retry_after:
                delay = max(delay, min(error.retry_after, RETRY_DELAYS[-1]))
            _settle(message, WebhookMessageStatus.PENDING, finished, error=error.message, retry_in=delay)
    for message in released:
        message.status, message.claimed_at = WebhookMessageStatus.PENDING, None
    with transaction.atomic():
        WebhookAttempt.objects.bulk_create(attempts)
        rows_update(WebhookMessage, messages, SETTLED_FIELDS)
        _failure_runs_write(endpoints.values(), failing_before)
    return {str(message.pk): message.status for message in handled}


def _failure_runs_write(endpoints, failing_before: dict) -> None:
    """Write where the batch left each endpoint's failure run: ended by a success (null),
    or begun by a failure (when, unless another worker's began it first)."""
    for endpoint in endpoints:
        before, after = failing_before[endpoint.pk], endpoint.failing_since
        if after == before:
            continue
        rows = WebhookEndpoint.objects.filter(pk=endpoint.pk)
        if after is not None and before is None:
            rows = rows.filter(failing_since__isnull=True)
        rows.update(failing_since=after)


SETTLED_FIELDS = ["status", "attempt_count", "next_attempt_at", "claimed_at", "delivered_at", "last_error"]


def _settle(message: WebhookMessage, status: str, at: datetime, *, error: str = "", retry_in: float = 0) -> None:
    """Set the message's new state in memory (written with its batch)."""
    message.status = status
    message.next_attempt_at = at + timedelta(seconds=retry_in) if status == WebhookMessageStatus.PENDING else None
    message.claimed_at = None
    message.delivered_at = at if status == WebhookMessageStatus.DELIVERED else None
    message.last_error = error[:500]


def endpoint_test(*, endpoint: WebhookEndpoint) -> WebhookMessage:
    """Send a `webhook.test` event to the endpoint now (in this request) and return the
    message with its attempt; a failure is retried on the usual schedule."""
    now = timezone.now()
    message = WebhookMessage.objects.create(
        account_id=endpoint.account_id,
        endpoint=endpoint,
        event_type=TEST_EVENT,
        payload={
            "type": TEST_EVENT,
            "timestamp": now.isoformat(),
            "data": {"endpoint_id": endpoint.pk, "message": "A test event from Beacon."},
        },
        next_attempt_at=now,
        created_at=now,
    )
    webhook_messages_send(ids=[message.pk], now=now)
    message.refresh_from_db()
    return message


# --- The webhook channel ------------------------------------------------------------------


def endpoints_for_deliveries(deliveries) -> dict:
    """Each webhook-channel delivery's enabled endpoint (the account's with that URL) and
    its signing secrets, by delivery id: one query."""
    now = timezone.now()
    found = {}
    for endpoint in WebhookEndpoint.objects.filter(
        account_id__in={d.account_id for d in deliveries}, url__in={d.to for d in deliveries}, enabled=True
    ):
        found.setdefault((endpoint.account_id, endpoint.url), endpoint)
    targets = {}
    for delivery in deliveries:
        endpoint = found.get((delivery.account_id, delivery.to))
        if endpoint is not None:
            targets[delivery.pk] = {
                "endpoint_id": endpoint.pk,
                "secrets": endpoint_secrets(endpoint, now),
                "timestamp": now.isoformat(),
            }
    return targets


def endpoints_gone(*, reports: list[tuple[int, str, str]]) -> None:
    """The webhook channel's receivers that answered 410 Gone: their endpoints are disabled."""
    for account_id, url, _ in reports:
        for endpoint_id in WebhookEndpoint.objects.filter(account_id=account_id, url=url, enabled=True).values_list(
            "pk", flat=True
        ):
            endpoint_disable(endpoint_id, "the receiver answered 410 Gone")


def registered_urls(*, account, urls: set[str]) -> set[str]:
    """Which of these URLs are the account's enabled webhook endpoints."""
    return set(
        WebhookEndpoint.objects.filter(account=account, url__in=urls, enabled=True).values_list("url", flat=True)
    )


# --- Operators and the API --------------------------------------------------------------


def endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Remove the endpoint with its messages and their attempts (the cascade)."""
    endpoint.delete()
    endpoints_forget()


def webhook_messages_retry_now(ids) -> int:
    """Put these messages, if pending or failed, back to be sent now (a failed one gets one
    more attempt; a message of a disabled endpoint fails again until it is enabled). They
    are sent after commit, or by the next due scan; how many were put back."""
    now = timezone.now()
    with transaction.atomic():
        chosen = list(
            WebhookMessage.objects.filter(
                pk__in=ids, status__in=[WebhookMessageStatus.PENDING, WebhookMessageStatus.FAILED]
            ).values_list("pk", flat=True)
        )
        if chosen:
            WebhookMessage.objects.filter(
                pk__in=chosen, status__in=[WebhookMessageStatus.PENDING, WebhookMessageStatus.FAILED]
            ).update(status=WebhookMessageStatus.PENDING, next_attempt_at=now, claimed_at=None)
            queued = [str(pk) for pk in chosen]
            transaction.on_commit(lambda: _enqueue(queued))
    return len(chosen)
