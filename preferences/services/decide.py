"""Decide: for each planned delivery, send now, defer until a time, or skip with a reason.

One function weighs, in this order:

1. suppression of the address on the channel (STOP, bounces, complaints, unsubscribes,
   by hand): skipped whatever the priority;
2. the recipient's opt-outs, `{category, channel}` pairs where either may be "*": a
   marketing opt-out never blocks a transactional or system message, and a critical
   message passes every opt-out;
3. consent: a marketing message needs a recorded grant for its channel (or "*") that no
   later withdrawal undid;
4. the account's toggle for the notification type on the channel
   (`booking_reminders_sms`, ...);
5. weekend exclusion of reminders, in the reader's time zone, at the time asked and
   again where a deferral would land (a late reminder is worse than none, so it is
   skipped rather than deferred);
6. time: do-not-disturb and the recipient's quiet hours (both in the reader's own time
   zone, across midnight and DST changes) and the daily reminder cap defer the delivery
   to the next allowed moment. A critical message is not held by either.

It runs over a whole batch with a constant number of queries (account preferences,
suppressions, recipient preferences, consent and daily counts: one each, the last two
only when the batch needs them; one upsert of the counts), whatever the batch's size.
"""

from __future__ import annotations

import enum
import functools
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db import connection
from django.db.models import Q

from ..models import ConsentRecord, DailyCount, RecipientPreference, Suppression, address_hash
from .settings import account_preference

CAPPED_KINDS = frozenset({"booking_reminder"})
WEEKEND_KINDS = frozenset({"booking_reminder"})
MARKETING = "marketing"
CRITICAL = "critical"


class Verdict(enum.Enum):
    SEND = "send"
    DEFER = "defer"
    SKIP = "skip"


@dataclass(frozen=True)
class Planned:
    """One delivery about to be written: who, where, of what kind, and when it was asked to go."""

    recipient_id: int
    channel: str
    category: str
    priority: str
    send_at: datetime  # now, or the scheduled time
    kind: str = "custom"  # the template's template_type
    address: str = ""
    timezone: str = ""  # the recipient's IANA zone; the account's when blank


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    until: datetime | None = None  # DEFER: when it may go
    reason: str = ""  # DEFER and SKIP: why (shown on the delivery's event and in the log)


SEND_NOW = Decision(Verdict.SEND)
SKIP_WEEKEND = Decision(Verdict.SKIP, reason="weekend: the account excludes reminders at weekends")


@functools.lru_cache(maxsize=512)
def local_zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def deliveries_decide(*, account, planned: list[Planned]) -> list[Decision]:
    """One decision per planned delivery, in order, in a constant number of queries."""
    if not planned:
        return []
    prefs = account_preference(account=account)
    recipient_ids = {p.recipient_id for p in planned}
    hashes = {address_hash(p.channel, p.address): p for p in planned if p.address}
    suppressed = dict(
        Suppression.objects.filter(account=account, address_hash__in=list(hashes)).values_list("address_hash", "reason")
    )
    recipient_prefs = {rp.recipient_id: rp for rp in RecipientPreference.objects.filter(recipient_id__in=recipient_ids)}
    consent = _consent(account, planned) if any(p.category == MARKETING for p in planned) else {}
    counts = _counts(planned) if any(p.kind in CAPPED_KINDS for p in planned) else defaultdict(int)
    added: dict[tuple[int, date], int] = defaultdict(int)

    decisions = []
    for p in planned:
        decision = _decide_one(p, prefs, suppressed, recipient_prefs.get(p.recipient_id), consent, counts)
        if decision.verdict is not Verdict.SKIP and p.kind in CAPPED_KINDS and p.priority != CRITICAL:
            when = decision.until or p.send_at
            day = when.astimezone(local_zone(p.timezone or prefs.timezone)).date()
            counts[(p.recipient_id, day)] += 1
            added[(p.recipient_id, day)] += 1
        decisions.append(decision)
    if added:
        _counts_add(added)
    return decisions


def _decide_one(p: Planned, prefs, suppressed, rp, consent, counts) -> Decision:
    if p.address:
        reason = suppressed.get(address_hash(p.channel, p.address))
        if reason:
            return Decision(Verdict.SKIP, reason=f"suppressed: the {p.channel} address is suppressed ({reason})")
    critical = p.priority == CRITICAL
    if rp is not None and not critical:
        for opt_out in rp.opt_outs or []:
            category, channel = opt_out.get("category", "*"), opt_out.get("channel", "*")
            if channel not in ("*", p.channel):
                continue
            if category == p.category or (category == "*"):
                return Decision(Verdict.SKIP, reason=f"opted_out: the recipient opted out of {category} on {channel}")
    if p.category == MARKETING and not consent.get((p.recipient_id, p.channel)):
        return Decision(Verdict.SKIP, reason=f"no_consent: no recorded consent to marketing on {p.channel}")
    if not prefs.channel_enabled(p.kind, p.channel):
        return Decision(Verdict.SKIP, reason=f"channel_off: the account's {p.kind} on {p.channel} is switched off")
    zone = local_zone(p.timezone or prefs.timezone)
    weekend_excluded = p.kind in WEEKEND_KINDS and prefs.exclude_weekends_reminders
    if weekend_excluded and _is_weekend(p.send_at, zone):
        return SKIP_WEEKEND
    if critical:
        return SEND_NOW

    windows = []
    if prefs.dnd_enabled:
        windows.append(("do-not-disturb", prefs.dnd_start_time, prefs.dnd_end_time))
    if rp is not None and rp.quiet_hours_enabled:
        windows.append(("quiet hours", rp.quiet_hours_start, rp.quiet_hours_end))
    cap = prefs.max_reminders_per_day if p.kind in CAPPED_KINDS else None
    when, why = p.send_at, []
    for _ in range(400):  # a year of full days at most; each turn moves forward or stops
        moved = False
        for name, start, end in windows:
            end_at = window_end(when, zone, start, end)
            if end_at is not None:
                when, moved = end_at, True
                why.append(name)
        if cap is not None:
            day = when.astimezone(zone).date()
            if counts[(p.recipient_id, day)] >= cap:
                when, moved = start_of_day(day + timedelta(days=1), zone), True
                why.append(f"daily cap of {cap} reminders")
        if not moved:
            break
    if when == p.send_at:
        return SEND_NOW
    # Judged again where the deferral lands: a reminder held past Friday night would
    # otherwise go out on the Saturday the account excluded.
    if weekend_excluded and _is_weekend(when, zone):
        return SKIP_WEEKEND
    reasons = ", ".join(dict.fromkeys(why))
    return Decision(Verdict.DEFER, until=when, reason=f"deferred: {reasons}")


def window_end(when: datetime, zone, start: time, end: time) -> datetime | None:
    """If `when` falls in the daily window [start, end) of local time in `zone` (which may
    run across midnight), the moment the window ends; else None."""
    if start == end:
        return None
    local = when.astimezone(zone)
    now, today = local.time().replace(tzinfo=None), local.date()
    if start < end:
        end_day = today if start <= now < end else None
    elif now >= start:
        end_day = today + timedelta(days=1)
    elif now < end:
        end_day = today
    else:
        end_day = None
    if end_day is None:
        return None
    end_at = datetime.combine(end_day, end, tzinfo=zone)
    # A wall time skipped by a DST change reads as the same offset as before it, which
    # lands after the gap; a repeated one takes its first occurrence.
    return end_at if end_at > when else None


def _is_weekend(when: datetime, zone) -> bool:
    return when.astimezone(zone).weekday() >= 5


def start_of_day(day: date, zone) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=zone)


def _consent(account, planned: list[Planned]) -> dict[tuple[int, str], bool]:
    """Whether each (recipient, channel) of the batch's marketing deliveries has consent in
    force: the latest record for its channel or "*" decides."""
    wanted = {(p.recipient_id, p.channel) for p in planned if p.category == MARKETING}
    records = ConsentRecord.objects.filter(
        Q(category=MARKETING) | Q(category="*"),
        account=account,
        recipient_id__in={rid for rid, _ in wanted},
    ).order_by("recorded_at", "id")
    channels_of: dict[int, list[str]] = defaultdict(list)
    for recipient_id, channel in wanted:
        channels_of[recipient_id].append(channel)
    latest: dict[tuple[int, str], bool] = {}
    for recipient_id, channel, granted in records.values_list("recipient_id", "channel", "granted"):
        if channel == "*":
            for ch in channels_of[recipient_id]:
                latest[(recipient_id, ch)] = granted
        else:
            latest[(recipient_id, channel)] = granted
    return latest


def _counts(planned: list[Planned]) -> defaultdict:
    earliest = min(p.send_at for p in planned) - timedelta(days=1)
    counts: defaultdict = defaultdict(int)
    rows = DailyCount.objects.filter(
        recipient_id__in={p.recipient_id for p in planned if p.kind in CAPPED_KINDS}, day__gte=earliest.date()
    ).values_list("recipient_id", "day", "count")
    for recipient_id, day, count in rows:
        counts[(recipient_id, day)] = count
    return counts


def _counts_add(added: dict[tuple[int, date], int]) -> None:
    """Add to the daily counts in one statement; concurrent deciders each add their own."""
    table = connection.ops.quote_name(DailyCount._meta.db_table)
    values = ", ".join(["(%s, %s, %s)"] * len(added))
    params = [value for (recipient_id, day), count in added.items() for value in (recipient_id, day, count)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (recipient_id, day, count) VALUES {values} "
            f"ON CONFLICT (recipient_id, day) DO UPDATE SET count = {table}.count + excluded.count",
            params,
        )
