"""Campaigns: create, start, pause, resume, cancel, and the fan-out that turns an audience
into notifications through the same accept (decision, rendering, bulk writes, enqueue
after commit) as every other send.

Fan-out walks the audience's members in id order from the campaign's cursor, a page at a
time. Each page is one transaction, holding the campaign's row: it writes the page's
notifications and deliveries (accept), a campaign recipient per member (unique per
campaign) and the new cursor together. So a fan-out killed mid-page leaves nothing of the
page, one run twice waits for the first and finds the cursor moved, and a pause (which
takes the same row) lands between two pages: no recipient is sent twice or skipped.

A pause also holds the campaign's deliveries still queued (status `paused`, which no
worker claims); a resume queues them again and fan-out goes on from the cursor. A cancel
cancels what has not been sent.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from notifications.models import Delivery, DeliveryStatus, Recipient
from notifications.queue import Dispatch, enqueue_dispatch
from notifications.services import Item, notifications_accept_batch
from notifications.services.accept import RECIPIENT_DETAILS, BatchInvalid
from notifications.services.addresses import reachable_channels, recipient_addresses_fill, unreachable_reason
from notifications.services.events import StatusChange, events_record
from providers.channels import CHANNELS
from templates.models import Category
from templates.selectors import template_resolve

from .models import Audience, AudienceKind, AudienceMember, Campaign, CampaignRecipient, CampaignStatus, CampaignVariant

logger = logging.getLogger(__name__)

# What accept resolves a recipient by and sends to (chat webhook URLs too).
RECIPIENT_FIELDS = ("external_id", *RECIPIENT_DETAILS)
# Statuses an action may start from.
STARTABLE = {CampaignStatus.DRAFT, CampaignStatus.SCHEDULED}
PAUSABLE = {CampaignStatus.RUNNING, CampaignStatus.SCHEDULED}
CANCELLABLE = {CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED}


class CampaignConflict(Exception):
    """The action does not apply to the campaign's status (a 409)."""


# --- Create ---------------------------------------------------------------------------------


def campaign_create(
    account,
    *,
    name: str,
    audience: Audience,
    channels: list[str],
    template: str | None = None,
    context: dict | None = None,
    subject: str = "",
    message: str = "",
    variants: list[dict] | None = None,
    fallback: bool = False,
    category: str = Category.MARKETING,
    scheduled_for: datetime | None = None,
    local_send_time=None,
    throttle_per_minute: int | None = None,
) -> Campaign:
    """A draft campaign. Its message is one template (id or key) or a literal subject and
    message, or `variants`: [{"name", "template" | "subject" + "message", "split"}] whose
    splits add up to 100. Templates are pinned to their current version."""
    errors: dict[str, list[str]] = {}
    if audience.account_id != account.pk:
        errors["audience"] = ["No such audience."]
    if not channels or any(channel not in CHANNELS for channel in channels):
        errors["channels"] = [f"Give one or more of: {', '.join(CHANNELS)}."]
    elif len(set(channels)) != len(channels):
        errors["channels"] = ["Name each channel once."]
    if fallback and len(channels or []) < 2:
        errors["fallback"] = ["Fallback tries the channels in order: give at least two channels."]
    if throttle_per_minute is not None and throttle_per_minute < 1:
        errors["throttle_per_minute"] = ["At least 1 message a minute."]
    given = variants or [{"name": "A", "template": template, "subject": subject, "message": message, "split": 100}]
    if variants and (template or message):
        errors["variants"] = ["Give the message once: in the variants, or as template/message."]
    built = []
    for index, variant in enumerate(given):
        problem, row = _variant(account, variant, index)
        if problem:
            errors.setdefault("variants" if variants else "template", []).append(problem)
        built.append(row)
    if sum(row.split for row in built) != 100:
        errors.setdefault("variants", []).append("The splits must add up to 100.")
    if len({row.name for row in built}) != len(built):
        errors.setdefault("variants", []).append("Name each variant once.")
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        campaign = Campaign.objects.create(
            account=account,
            name=name,
            audience=audience,
            channels=list(channels),
            fallback=fallback,
            category=category,
            context=context or {},
            scheduled_for=scheduled_for,
            local_send_time=local_send_time,
            throttle_per_minute=throttle_per_minute,
        )
        for position, row in enumerate(built):
            row.campaign, row.position = campaign, position
        CampaignVariant.objects.bulk_create(built)
    return campaign


def _variant(account, variant: dict, index: int) -> tuple[str, CampaignVariant]:
    name = str(variant.get("name") or chr(ord("A") + index))[:50]
    split = variant.get("split", 100)
    row = CampaignVariant(name=name, split=split if isinstance(split, int) and 0 < split <= 100 else 0)
    if not row.split:
        return f"Variant {name}: split is a whole per cent from 1 to 100.", row
    reference = variant.get("template")
    if reference:
        found = template_resolve(account=account, reference=str(reference))
        if found is None or found.current_version is None:
            return f"Variant {name}: no template {reference!r}.", row
        row.template, row.template_version = found, found.current_version
        return "", row
    row.subject, row.message = str(variant.get("subject") or "")[:500], str(variant.get("message") or "")
    if not row.message.strip():
        return f"Variant {name}: give a template, or a message.", row
    return "", row


# --- Actions --------------------------------------------------------------------------------


def campaign_start(campaign: Campaign) -> Campaign:
    """Draft (or scheduled and due) -> running, and fan-out begins; with `scheduled_for`
    ahead -> scheduled (the watch starts it when due). A filter audience is frozen into
    members now: who matches at the start is who is sent to."""
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if campaign.status not in STARTABLE:
            raise CampaignConflict(f"A {campaign.status} campaign cannot be started.")
        now = timezone.now()
        if campaign.scheduled_for and campaign.scheduled_for > now:
            campaign.status = CampaignStatus.SCHEDULED
            campaign.save(update_fields=["status", "updated_at"])
            return campaign
        if campaign.audience.kind == AudienceKind.FILTER:
            from .audiences import audience_freeze

            audience_freeze(campaign.audience)
        campaign.status, campaign.started_at = CampaignStatus.RUNNING, campaign.started_at or now
        campaign.save(update_fields=["status", "started_at", "updated_at"])
        _fan_out_later(campaign)
    return campaign


def campaign_pause(campaign: Campaign) -> Campaign:
    """Running -> paused: no page is fanned out after the one in progress (the row lock),
    and the campaign's queued deliveries are held until a resume."""
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if campaign.status not in PAUSABLE:
            raise CampaignConflict(f"A {campaign.status} campaign cannot be paused.")
        campaign.status, campaign.paused_at = CampaignStatus.PAUSED, timezone.now()
        campaign.save(update_fields=["status", "paused_at", "updated_at"])
        _deliveries_move(campaign, DeliveryStatus.QUEUED, DeliveryStatus.PAUSED, "campaign paused")
    return campaign


def campaign_resume(campaign: Campaign) -> Campaign:
    """Paused -> running: the held deliveries are queued again and fan-out goes on from
    where it stopped."""
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if campaign.status != CampaignStatus.PAUSED:
            raise CampaignConflict(f"A {campaign.status} campaign cannot be resumed.")
        if campaign.started_at is None and campaign.scheduled_for and campaign.scheduled_for > timezone.now():
            # Paused before its time: it waits for it again.
            campaign.status, campaign.paused_at = CampaignStatus.SCHEDULED, None
            campaign.save(update_fields=["status", "paused_at", "updated_at"])
            return campaign
        campaign.status, campaign.paused_at = CampaignStatus.RUNNING, None
        campaign.started_at = campaign.started_at or timezone.now()
        campaign.save(update_fields=["status", "paused_at", "started_at", "updated_at"])
        moved = _deliveries_move(campaign, DeliveryStatus.PAUSED, DeliveryStatus.QUEUED, "campaign resumed")
        enqueue_dispatch([Dispatch(pk, channel, attempts) for pk, channel, attempts in moved])
        if campaign.fanned_out_at is None:
            _fan_out_later(campaign)
    return campaign


def campaign_cancel(campaign: Campaign) -> Campaign:
    """-> cancelled: nothing more is fanned out, and what has not been sent is cancelled."""
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if campaign.status not in CANCELLABLE:
            raise CampaignConflict(f"A {campaign.status} campaign cannot be cancelled.")
        campaign.status, campaign.cancelled_at = CampaignStatus.CANCELLED, timezone.now()
        campaign.save(update_fields=["status", "cancelled_at", "updated_at"])
        for status in (DeliveryStatus.QUEUED, DeliveryStatus.PAUSED, DeliveryStatus.SCHEDULED, DeliveryStatus.STANDBY):
            _deliveries_move(campaign, status, DeliveryStatus.CANCELLED, "campaign cancelled")
    return campaign


def _deliveries_move(campaign: Campaign, from_status: str, to_status: str, why: str) -> list[tuple]:
    """Move the campaign's deliveries in `from_status` to `to_status`, with an event each:
    one UPDATE ... RETURNING and one multi-row insert of events, in batches."""
    moved: list[tuple] = []
    now = timezone.now()
    queryset = Delivery.objects.filter(notification__campaign_recipient__campaign=campaign, status=from_status)
    while True:
        batch = list(queryset.values_list("pk", "channel", "attempt_count")[:5000])
        if not batch:
            return moved
        extra = {"enqueued_at": now} if to_status == DeliveryStatus.QUEUED else {"enqueued_at": None}
        Delivery.objects.filter(pk__in=[pk for pk, _, _ in batch], status=from_status).update(
            status=to_status, updated_at=now, **extra
        )
        events_record([StatusChange(pk, from_status, to_status, "campaign", now, why) for pk, _, _ in batch])
        moved += batch


def _fan_out_later(campaign: Campaign, countdown: float | None = None) -> None:
    from .tasks import campaign_fan_out

    transaction.on_commit(lambda: campaign_fan_out.apply_async(args=[campaign.pk], countdown=countdown))


# --- Fan-out --------------------------------------------------------------------------------


@dataclass
class FanOut:
    pages: int = 0
    recipients: int = 0
    skipped: int = 0
    done: bool = False


def campaign_fan_out(campaign_id: int, *, seconds: float | None = None, page_size: int | None = None) -> FanOut:
    """Fan out pages of the campaign's audience for up to `seconds`; then, if it is still
    running and not done, hand over to a new task (another worker may take it). With a
    throttle, one page of a tenth of the minute's messages every six seconds."""
    seconds = settings.BEACON_CAMPAIGN_SLICE_SECONDS if seconds is None else seconds
    page_size = page_size or settings.BEACON_CAMPAIGN_PAGE_SIZE
    deadline = time.monotonic() + seconds
    result = FanOut()
    while True:
        with transaction.atomic():
            campaign = Campaign.objects.select_for_update().select_related("audience").get(pk=campaign_id)
            if campaign.status != CampaignStatus.RUNNING or campaign.fanned_out_at:
                result.done = campaign.fanned_out_at is not None
                return result
            size = page_size
            if campaign.throttle_per_minute:
                size = min(page_size, max(1, math.ceil(campaign.throttle_per_minute / 10)))
            members = list(
                AudienceMember.objects.filter(audience_id=campaign.audience_id, id__gt=campaign.cursor)
                .select_related("recipient")
                .order_by("id")[:size]
            )
            if not members:
                campaign.fanned_out_at = campaign.fanned_out_at or timezone.now()
                campaign.save(update_fields=["fanned_out_at", "updated_at"])
                campaign_complete_if_settled(campaign)
                result.done = True
                return result
            sent, skipped = _page(campaign, members)
            campaign.cursor = members[-1].pk
            campaign.save(update_fields=["cursor", "updated_at"])
            result.pages += 1
            result.recipients += sent
            result.skipped += skipped
            if campaign.throttle_per_minute:
                _fan_out_later(campaign, countdown=6.0)
                return result
        if time.monotonic() > deadline:
            with transaction.atomic():
                _fan_out_later(Campaign(pk=campaign_id))
            return result


def _page(campaign: Campaign, members: list[AudienceMember]) -> tuple[int, int]:
    """One page: the members not reached yet get their variant, their notification through
    accept (one batch per variant and send time), and their campaign recipient row; a
    member no channel can reach is recorded as skipped with why. Returns (sent, skipped)."""
    known = set(
        CampaignRecipient.objects.filter(
            campaign=campaign, recipient_id__in=[m.recipient_id for m in members]
        ).values_list("recipient_id", flat=True)
    )
    members = [m for m in members if m.recipient_id not in known]
    variants = list(campaign.variants.select_related("template", "template_version"))
    details = recipient_addresses_fill(
        account=campaign.account,
        channels=campaign.channels,
        details=[_details(m.recipient) for m in members],
    )
    rows: list[CampaignRecipient] = []
    groups: dict[tuple, list[tuple[AudienceMember, dict, CampaignRecipient]]] = {}
    for member, detail in zip(members, details, strict=True):
        variant = variant_for(campaign.pk, member.recipient_id, variants)
        row = CampaignRecipient(campaign=campaign, recipient_id=member.recipient_id, variant=variant)
        rows.append(row)
        why = _unreachable(campaign, detail)
        if why:
            row.skipped_reason = why[:500]
            continue
        send_at = _send_at(campaign, member.recipient)
        groups.setdefault((variant.pk, send_at), []).append((member, detail, row))
    for (variant_id, send_at), group in groups.items():
        variant = next(v for v in variants if v.pk == variant_id)
        _accept(campaign, variant, send_at, group)
    CampaignRecipient.objects.bulk_create(rows)
    skipped = sum(1 for row in rows if row.notification_id is None)
    return len(rows) - skipped, skipped


def _unreachable(campaign: Campaign, detail: dict) -> str:
    """Why the campaign cannot send to this member ("no phone number for sms"), or "": no
    channel has an address for it, or (without fallback) one of them has none."""
    missing = [c for c in campaign.channels if c not in reachable_channels(campaign.channels, detail)]
    if not missing or (campaign.fallback and len(missing) < len(campaign.channels)):
        return ""
    return "; ".join(unreachable_reason(detail, c) for c in missing)


def _accept(campaign: Campaign, variant: CampaignVariant, send_at, group: list) -> None:
    """Accept a group's notifications in one batch. An item accept refuses (a missing
    required placeholder, an address it rejects) is skipped with the reason, and the
    rest accepted."""
    while group:
        items = [
            Item(recipient=detail, context={**campaign.context, **member.attributes}) for member, detail, _ in group
        ]
        try:
            accepted = notifications_accept_batch(
                account=campaign.account,
                channels=campaign.channels,
                items=items,
                template=variant.template,
                subject=variant.subject,
                message=variant.message,
                scheduled_for=send_at,
                category=campaign.category,
                source="campaign",
                fallback=campaign.fallback,
            )
        except BatchInvalid as exc:
            refused = {int(index): errors for index, errors in exc.errors.items()}
            for index, errors in refused.items():
                group[index][2].skipped_reason = _reason(errors)[:500]
            group = [entry for index, entry in enumerate(group) if index not in refused]
            continue
        for (_, _, row), notification in zip(group, accepted.notifications, strict=True):
            row.notification = notification
        return


def _reason(errors) -> str:
    if isinstance(errors, dict):
        return "; ".join(f"{field}: {_reason(value)}" for field, value in errors.items())
    if isinstance(errors, list):
        return " ".join(_reason(value) for value in errors)
    return str(errors)


def _details(recipient: Recipient) -> dict:
    return {field: getattr(recipient, field) for field in RECIPIENT_FIELDS if getattr(recipient, field)}


def variant_for(campaign_id: int, recipient_id: int, variants: list[CampaignVariant]) -> CampaignVariant:
    """The recipient's variant: a stable hash of (campaign, recipient) onto the splits, so
    that a recipient always lands in the same one, and the shares follow the splits."""
    digest = hashlib.sha256(f"{campaign_id}:{recipient_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % 10_000 / 100
    total = 0
    for variant in variants:
        total += variant.split
        if point < total:
            return variant
    return variants[-1]


def _send_at(campaign: Campaign, recipient: Recipient):
    """When this recipient's message goes: now (None), at scheduled_for, or at the next
    local_send_time in the recipient's own zone (the account's zone, else UTC, for one
    with none) on or after the campaign's start."""
    if campaign.local_send_time is None:
        return None
    try:
        zone = ZoneInfo(recipient.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    start = max(campaign.scheduled_for or timezone.now(), timezone.now()).astimezone(zone)
    moment = start.replace(
        hour=campaign.local_send_time.hour, minute=campaign.local_send_time.minute, second=0, microsecond=0
    )
    if moment < start:
        moment += timedelta(days=1)
    return moment


# --- Progress -------------------------------------------------------------------------------


def campaign_counts(campaign: Campaign) -> dict:
    """Counts by delivery status, the skipped with their reasons, and the audience's
    progress: a few aggregate queries."""
    by_status = dict(
        Delivery.objects.filter(notification__campaign_recipient__campaign=campaign)
        .values_list("status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    reasons: dict[str, int] = {}
    for reason, n in (
        Delivery.objects.filter(notification__campaign_recipient__campaign=campaign, status=DeliveryStatus.SUPPRESSED)
        .values_list("error_message")
        .annotate(n=Count("pk"))
        .order_by()
    ):
        reasons[reason or "suppressed"] = reasons.get(reason or "suppressed", 0) + n
    unreached = dict(
        CampaignRecipient.objects.filter(campaign=campaign, notification__isnull=True)
        .values_list("skipped_reason")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for reason, n in unreached.items():
        reasons[reason or "skipped"] = reasons.get(reason or "skipped", 0) + n
    results = campaign_results(campaign)
    reached = CampaignRecipient.objects.filter(campaign=campaign).count()
    audience = campaign.audience.member_count or AudienceMember.objects.filter(audience=campaign.audience).count()
    return {
        "by_status": {status: by_status.get(status, 0) for status in DeliveryStatus.values},
        "skipped": sum(reasons.values()),
        "skipped_reasons": [{"reason": reason, "count": n} for reason, n in sorted(reasons.items())],
        "recipients_reached": reached,
        "audience_size": audience,
        "progress": round(reached / audience, 4) if audience else None,
        "results": results,
    }


def campaign_results(campaign: Campaign) -> list[dict]:
    """Per variant and channel: deliveries, sent, delivered, opened, clicked, failed, their
    rates (delivered / sent, opened and clicked / delivered) and cost per currency. Two
    aggregate queries."""
    from django.db.models import Q, Sum

    from notifications.models import DeliveryAttempt
    from notifications.services.stats import DELIVERED, FAILED_STATUSES, SENT

    variant = "notification__campaign_recipient__variant__name"
    rows = (
        Delivery.objects.filter(notification__campaign_recipient__campaign=campaign)
        .values(variant, "channel")
        .annotate(
            deliveries=Count("pk"),
            # Counted as the stats endpoint counts them.
            sent=Count("pk", filter=SENT),
            delivered=Count("pk", filter=DELIVERED),
            opened=Count(
                "pk", filter=Q(status__in=[DeliveryStatus.OPENED, DeliveryStatus.CLICKED]) | Q(opened_at__isnull=False)
            ),
            clicked=Count("pk", filter=Q(status=DeliveryStatus.CLICKED) | Q(clicked_at__isnull=False)),
            failed=Count("pk", filter=Q(status__in=FAILED_STATUSES)),
        )
        .order_by(variant, "channel")
    )
    costs: dict[tuple, dict] = {}
    for name, channel, currency, amount in (
        DeliveryAttempt.objects.filter(
            delivery__notification__campaign_recipient__campaign=campaign, cost__isnull=False
        )
        .values_list(f"delivery__{variant}", "delivery__channel", "currency")
        .annotate(amount=Sum("cost"))
        .order_by()
    ):
        costs.setdefault((name, channel), {})[currency] = amount

    def rate(part: int, whole: int):
        return round(part / whole, 4) if whole else None

    return [
        {
            "variant": row[variant],
            "channel": row["channel"],
            **{key: row[key] for key in ("deliveries", "sent", "delivered", "opened", "clicked", "failed")},
            "delivery_rate": rate(row["delivered"], row["sent"]),
            "open_rate": rate(row["opened"], row["delivered"]),
            "click_rate": rate(row["clicked"], row["delivered"]),
            "cost": [
                {"currency": currency, "amount": f"{amount:.6f}"}
                for currency, amount in sorted(costs.get((row[variant], row["channel"]), {}).items())
            ],
        }
        for row in rows
    ]


# --- The watch ------------------------------------------------------------------------------


def campaigns_watch() -> dict:
    """Start the scheduled campaigns that fell due, and hand each running campaign whose
    fan-out has written nothing for BEACON_CAMPAIGN_STALL_SECONDS (its worker died, its task
    was lost) to a new fan-out task. A duplicate task is harmless: it waits for the
    campaign's row and goes on from the cursor."""
    now = timezone.now()
    started = 0
    for campaign in Campaign.objects.filter(status=CampaignStatus.SCHEDULED, scheduled_for__lte=now):
        try:
            campaign_start(campaign)
            started += 1
        except CampaignConflict:
            continue
    stalled = list(
        Campaign.objects.filter(
            status=CampaignStatus.RUNNING,
            fanned_out_at__isnull=True,
            updated_at__lt=now - timedelta(seconds=settings.BEACON_CAMPAIGN_STALL_SECONDS),
        ).values_list("pk", flat=True)
    )
    for campaign_id in stalled:
        _fan_out_later(Campaign(pk=campaign_id))
    completed = sum(
        campaign_complete_if_settled(campaign)
        for campaign in Campaign.objects.filter(status=CampaignStatus.RUNNING, fanned_out_at__isnull=False)
    )
    return {"started": started, "resumed": len(stalled), "completed": completed}


# Deliveries that may still be sent.
LIVE_STATUSES = (
    DeliveryStatus.SCHEDULED,
    DeliveryStatus.QUEUED,
    DeliveryStatus.SENDING,
    DeliveryStatus.PAUSED,
    DeliveryStatus.STANDBY,
)


def campaign_complete_if_settled(campaign: Campaign) -> bool:
    """A running campaign fanned out whose deliveries have all settled (none scheduled,
    queued, sending, paused or on standby) -> completed. One EXISTS query."""
    if campaign.status != CampaignStatus.RUNNING or campaign.fanned_out_at is None:
        return False
    if Delivery.objects.filter(notification__campaign_recipient__campaign=campaign, status__in=LIVE_STATUSES).exists():
        return False
    moved = Campaign.objects.filter(pk=campaign.pk, status=CampaignStatus.RUNNING).update(
        status=CampaignStatus.COMPLETED, completed_at=timezone.now(), updated_at=timezone.now()
    )
    return bool(moved)


# --- The dry run ----------------------------------------------------------------------------


def campaign_preview(campaign: Campaign, *, page_size: int = 1000) -> dict:
    """What a start would do, writing nothing: how many of the audience would be sent to
    after addresses, suppression, opt-outs and consent (the same decision accept makes),
    and how many skipped, by reason. Reads the audience in keyset pages."""
    from notifications.services.decide import Planned, Verdict, deliveries_decide

    from . import audiences

    recipients = audiences.audience_recipients(campaign.audience).order_by("pk")
    variants = list(campaign.variants.select_related("template"))
    now = timezone.now()
    counts = {"audience": 0, "would_send": 0, "skipped": 0}
    reasons: dict[str, int] = {}
    last = 0
    while True:
        page = list(Recipient.objects.filter(pk__in=recipients.filter(pk__gt=last)[:page_size]).order_by("pk"))
        if not page:
            break
        last = page[-1].pk
        details = recipient_addresses_fill(
            account=campaign.account, channels=campaign.channels, details=[_details(r) for r in page]
        )
        planned, owners = [], []
        for person, detail in zip(page, details, strict=True):
            counts["audience"] += 1
            reason = _unreachable(campaign, detail)
            if reason:
                reasons[reason] = reasons.get(reason, 0) + 1
                continue
            variant = variant_for(campaign.pk, person.pk, variants)
            kind = variant.template.template_type if variant.template else "custom"
            for channel in reachable_channels(campaign.channels, detail):
                planned.append(
                    Planned(
                        recipient_id=person.pk,
                        channel=channel,
                        category=campaign.category,
                        priority="normal",
                        send_at=_send_at(campaign, person) or now,
                        kind=kind,
                        address=detail.get(CHANNELS[channel].address_field) or "",
                        timezone=person.timezone,
                    )
                )
                owners.append(person.pk)
        verdicts: dict[int, list] = {}
        for owner, decision in zip(owners, deliveries_decide(account=campaign.account, planned=planned), strict=True):
            verdicts.setdefault(owner, []).append(decision)
        for decisions in verdicts.values():
            if any(d.verdict is not Verdict.SKIP for d in decisions):
                counts["would_send"] += 1
            else:
                reason = decisions[0].reason or "skipped"
                reasons[reason] = reasons.get(reason, 0) + 1
    counts["skipped"] = sum(reasons.values())
    counts["skipped_reasons"] = [{"reason": reason, "count": n} for reason, n in sorted(reasons.items())]
    return counts
