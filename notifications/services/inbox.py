"""The in-app inbox: in_app deliveries become items in the recipient's inbox, which their
app lists, counts, marks read or archived, and follows live over server-sent events.

Dispatch hands a batch of in_app deliveries to the `inbox` provider below like any other
channel: one INSERT stores the batch's items (a batch sent twice stores nothing twice:
one item per delivery), and each item is published on the recipient's Redis channel, so
that whichever web process holds the recipient's stream passes it on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from functools import lru_cache

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from providers.base import OutboundMessage, Provider, ProviderError, SendResult

from ..models import Delivery, InboxItem, Recipient

logger = logging.getLogger("beacon.inbox")

CHANNEL_PREFIX = "beacon:inbox"
ACTION_URL_MAX = InboxItem._meta.get_field("action_url").max_length
# The filters of the inbox list (`status`): unread and read leave archived items out.
STATUSES = {
    "unread": Q(read_at__isnull=True, archived_at__isnull=True),
    "read": Q(read_at__isnull=False, archived_at__isnull=True),
    "archived": Q(archived_at__isnull=False),
    "all": Q(),
}


def stream_channel(account_id: int, recipient_id: int) -> str:
    return f"{CHANNEL_PREFIX}:{account_id}:{recipient_id}"


@lru_cache(maxsize=1)
def redis_client():
    """The process's Redis client for publishing (None without REDIS_URL: streams then
    read the database every second instead)."""
    if not settings.REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis

    return redis.Redis.from_url(settings.REDIS_URL)


def item_json(item: InboxItem) -> dict:
    return {
        "id": item.pk,
        "delivery_id": str(item.delivery_id),
        "category": item.category,
        "title": item.title,
        "body": item.body,
        "action_url": item.action_url,
        "data": item.data,
        "created_at": item.created_at.isoformat(),
        "read_at": item.read_at.isoformat() if item.read_at else None,
        "archived_at": item.archived_at.isoformat() if item.archived_at else None,
    }


# --- Storing (the inbox provider) ---------------------------------------------------------


def inbox_items_store(messages: list[OutboundMessage]) -> dict[str, InboxItem]:
    """Store an item per message (its reference is the delivery id), one INSERT for the
    batch; items already stored (a batch sent again) are kept. Returns them by delivery
    id, and publishes the new ones, in id order (a stream's Last-Event-ID is the last id
    it passed on). A message whose action URL does not fit the column is not stored (its
    delivery fails alone rather than the whole INSERT)."""
    owners = {
        str(row["id"]): row
        for row in Delivery.objects.filter(pk__in=[m.reference for m in messages]).values(
            "id", "account_id", "notification__recipient_id", "notification__category"
        )
    }
    now = timezone.now()
    rows = [
        InboxItem(
            account_id=owners[m.reference]["account_id"],
            recipient_id=owners[m.reference]["notification__recipient_id"],
            delivery_id=m.reference,
            category=owners[m.reference]["notification__category"],
            title=m.subject,
            body=m.body,
            action_url=(m.options or {}).get("action_url", ""),
            data=(m.options or {}).get("data") or {},
            created_at=now,
        )
        for m in messages
        if m.reference in owners and not action_url_too_long(m)
    ]
    InboxItem.objects.bulk_create(rows, ignore_conflicts=True)
    stored = {
        str(item.delivery_id): item
        for item in InboxItem.objects.filter(delivery_id__in=[r.delivery_id for r in rows]).order_by("pk")
    }
    inbox_items_publish([item for item in stored.values() if item.created_at == now])
    return stored


def action_url_too_long(message: OutboundMessage) -> bool:
    return len((message.options or {}).get("action_url") or "") > ACTION_URL_MAX


def inbox_items_publish(items: list[InboxItem]) -> None:
    """Each item on its recipient's channel, in one round trip; a Redis outage loses the
    live push only (the stream's resume and the list still have the item)."""
    client = redis_client()
    if client is None or not items:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for item in items:
            pipe.publish(stream_channel(item.account_id, item.recipient_id), json.dumps(item_json(item)))
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - the item is stored; only its live push is lost
        logger.warning("inbox: could not publish %d item(s): %s", len(items), exc.__class__.__name__)


class InboxProvider(Provider):
    """The in_app channel's provider: the inbox itself. A stored item is delivered."""

    kind = "inbox"
    channels = ("in_app",)

    def send(self, message: OutboundMessage) -> SendResult:
        (outcome,) = self.send_many([message])
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome

    def send_many(self, messages: list[OutboundMessage]) -> Iterator[SendResult | ProviderError]:
        stored = inbox_items_store(messages)
        for message in messages:
            item = stored.get(message.reference)
            if item is None and action_url_too_long(message):
                yield ProviderError(
                    f"The rendered action_url is longer than {ACTION_URL_MAX} characters.",
                    retryable=False,
                    code="action_url_too_long",
                )
            elif item is None:
                yield ProviderError("The delivery is gone; nothing was stored.", retryable=False, code="no_delivery")
            else:
                yield SendResult(provider_message_id=str(item.pk), status="delivered")


# --- Reading and marking ------------------------------------------------------------------


def recipient_for_inbox(*, account, external_id: str) -> Recipient | None:
    if not external_id or "\x00" in external_id:
        return None
    return Recipient.objects.filter(account=account, external_id=external_id).first()


def inbox_items(*, recipient: Recipient, status: str = "") -> object:
    """The recipient's items, newest first; `status` unread, read, archived or all (by
    default every item not archived)."""
    items = InboxItem.objects.filter(recipient=recipient)
    if status:
        return items.filter(STATUSES[status])
    return items.filter(archived_at__isnull=True)


def inbox_unread_count(*, recipient: Recipient) -> int:
    return InboxItem.objects.filter(recipient=recipient).filter(STATUSES["unread"]).count()


def inbox_item_read(*, item: InboxItem) -> InboxItem:
    if item.read_at is None:
        item.read_at = timezone.now()
        InboxItem.objects.filter(pk=item.pk, read_at__isnull=True).update(read_at=item.read_at)
    return item


def inbox_item_archive(*, item: InboxItem) -> InboxItem:
    if item.archived_at is None:
        item.archived_at = timezone.now()
        InboxItem.objects.filter(pk=item.pk, archived_at__isnull=True).update(archived_at=item.archived_at)
    return item


def inbox_read_all(*, recipient: Recipient) -> int:
    """Mark every unread item read, in one statement; how many (the unread count: archived
    items are left as they are)."""
    return InboxItem.objects.filter(recipient=recipient).filter(STATUSES["unread"]).update(read_at=timezone.now())


def inbox_backlog(*, recipient_id: int, after: int, limit: int = 500) -> list[InboxItem]:
    """The recipient's items after the id a stream last sent, oldest first (a resume)."""
    return list(InboxItem.objects.filter(recipient_id=recipient_id, pk__gt=after).order_by("pk")[:limit])
