"""Delivery statistics: what an account's deliveries came to over a window, per channel and
per provider, from a fixed number of aggregate queries whatever the number of rows.

- Which deliveries: the account's, created in [start, end). Test sends are counted like
  any other (they went out and cost money).
- `sent`: the provider accepted it (sent_at set; a delivery confirmed delivered counts as
  sent even when its sent_at is missing, so that delivered is always within sent).
- `delivered`: status delivered, opened or clicked, or delivered_at set, unless its
  status is now a failure: a delivery that bounced after it was delivered counts as
  failed, not delivered.
- `failed`: status failed, undelivered or bounced.
- `delivery_rate` = delivered / sent; `failure_rate` = failed / (deliveries sent or
  failed, each counted once); both rounded to 4 places, None when the divisor is 0.
- `cost`: the sum of the attempts' cost, per currency, over every attempt of those
  deliveries (failed attempts included, attempts with no known cost left out).
- Per provider: a delivery counts under the provider of its successful attempt, else of
  its last attempt (the one that refused it), else the kind in Delivery.provider; a
  provider is the account's record (provider_id) or, with none, the platform's kind. A
  delivery that never reached a provider counts under provider None. A provider's cost
  is the cost of the attempts made through it, whichever provider the delivery ended on.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Case, Count, F, IntegerField, OuterRef, Q, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce, NullIf

from providers.models import ProviderConfig

from ..models import Delivery, DeliveryAttempt, DeliveryStatus

DEFAULT_WINDOW = timedelta(days=7)
MAX_WINDOW = timedelta(days=366)

DELIVERED_STATUSES = (DeliveryStatus.DELIVERED, DeliveryStatus.OPENED, DeliveryStatus.CLICKED)
FAILED_STATUSES = (DeliveryStatus.FAILED, DeliveryStatus.UNDELIVERED, DeliveryStatus.BOUNCED)

# Counted per (channel, status, provider) group, so the status-only rules (failed, and the
# failure rate's divisor) are read off each group's status instead of counted again.
SENT = (
    Q(sent_at__isnull=False) | Q(delivered_at__isnull=False) | Q(status__in=(DeliveryStatus.SENT, *DELIVERED_STATUSES))
)
DELIVERED = (Q(status__in=DELIVERED_STATUSES) | Q(delivered_at__isnull=False)) & ~Q(status__in=FAILED_STATUSES)


def delivery_stats(*, account, start: datetime, end: datetime) -> dict:
    """Counts, rates and cost of the account's deliveries created in [start, end): in
    total, per channel and per provider. Three queries at most (two with no provider
    record involved)."""
    groups = _delivery_groups(account=account, start=start, end=end)
    costs = _attempt_costs(account=account, start=start, end=end)
    record_ids = {row["record_id"] for row in groups} | {row["provider_config_id"] for row in costs}
    record_ids.discard(None)
    names = (
        dict(ProviderConfig.objects.filter(account=account, pk__in=record_ids).values_list("pk", "name"))
        if record_ids
        else {}
    )

    totals = _Tally()
    by_channel: dict[str, _Tally] = defaultdict(_Tally)
    by_provider: dict[tuple, _Tally] = defaultdict(_Tally)
    for row in groups:
        key = (row["channel"], row["record_id"], row["kind"])
        for tally in (totals, by_channel[row["channel"]], by_provider[key]):
            tally.add_group(row)
    for row in costs:
        key = (row["delivery__channel"], row["provider_config_id"], row["provider"] or None)
        for tally in (totals, by_channel[row["delivery__channel"]], by_provider[key]):
            tally.cost[row["currency"]] += row["amount"]

    providers = []
    for (channel, record_id, kind), tally in sorted(by_provider.items(), key=_provider_order(names)):
        name = names.get(record_id) or kind
        providers.append({"provider": name, "provider_id": record_id, "kind": kind, "channel": channel, **tally.out()})
    return {
        "from": start,
        "to": end,
        "totals": totals.out(),
        "by_channel": [{"channel": channel, **by_channel[channel].out()} for channel in sorted(by_channel)],
        "by_provider": providers,
    }


def _delivery_groups(*, account, start: datetime, end: datetime) -> list[dict]:
    """One row per (channel, status, provider record, provider kind) with its counts."""
    # The attempt a delivery is counted under: its successful one, else its last.
    attempt = DeliveryAttempt.objects.filter(delivery=OuterRef("pk")).order_by(
        Case(
            When(outcome=DeliveryAttempt.Outcome.SUCCESS, then=Value(0)), default=Value(1), output_field=IntegerField()
        ),
        "-number",
    )
    return list(
        Delivery.objects.filter(account=account, created_at__gte=start, created_at__lt=end)
        .annotate(
            record_id=Subquery(attempt.values("provider_config_id")[:1]),
            kind=Coalesce(Subquery(attempt.values("provider")[:1]), NullIf(F("provider"), Value(""))),
        )
        .values("channel", "status", "record_id", "kind")
        .annotate(total=Count("pk"), sent=Count("pk", filter=SENT), delivered=Count("pk", filter=DELIVERED))
        .order_by()
    )


def _attempt_costs(*, account, start: datetime, end: datetime) -> list[dict]:
    """The summed cost of the deliveries' attempts per (channel, record, kind, currency)."""
    return list(
        DeliveryAttempt.objects.filter(
            delivery__account=account,
            delivery__created_at__gte=start,
            delivery__created_at__lt=end,
            cost__isnull=False,
        )
        .values("delivery__channel", "provider_config_id", "provider", "currency")
        .annotate(amount=Sum("cost"))
        .order_by()
    )


def _provider_order(names: dict):
    """Per channel, named providers by name then id; the unreached (no kind) last."""

    def order(item):
        (channel, record_id, kind), _ = item
        name = names.get(record_id) or kind or ""
        return (channel, kind is None, name, record_id is not None, record_id or 0)

    return order


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


class _Tally:
    """The counts and cost of one slice (totals, a channel, a provider)."""

    def __init__(self):
        self.total = self.sent = self.delivered = self.failed = self.sent_or_failed = 0
        self.by_status = dict.fromkeys(DeliveryStatus.values, 0)
        self.cost: dict[str, Decimal] = defaultdict(Decimal)

    def add_group(self, row: dict) -> None:
        failed = row["status"] in FAILED_STATUSES
        self.total += row["total"]
        self.sent += row["sent"]
        self.delivered += row["delivered"]
        self.failed += row["total"] if failed else 0
        self.sent_or_failed += row["total"] if failed else row["sent"]
        self.by_status[row["status"]] = self.by_status.get(row["status"], 0) + row["total"]

    def out(self) -> dict:
        return {
            "total": self.total,
            "sent": self.sent,
            "delivered": self.delivered,
            "failed": self.failed,
            "delivery_rate": _rate(self.delivered, self.sent),
            "failure_rate": _rate(self.failed, self.sent_or_failed),
            "by_status": self.by_status,
            "cost": [{"currency": currency, "amount": self.cost[currency]} for currency in sorted(self.cost)],
        }
