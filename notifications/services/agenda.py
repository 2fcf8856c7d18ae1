"""Daily agendas: each organizer gets the day's bookings by email at the account's
`daily_agenda_time`, in the account's time zone, once a day (weekends skipped when the
account excludes them). A periodic task runs this every few minutes: an agenda goes out on
the first run at or after its time, and an idempotency key per organizer and day keeps a
second run, or a second beat, from sending it again."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date, datetime, time, timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from preferences.models import AccountPreference
from preferences.services import account_preference, local_zone
from templates.models import TemplateType
from templates.selectors import template_resolve

from ..models import Booking, BookingStatus
from .accept import notification_accept

logger = logging.getLogger("beacon.agenda")


def daily_agendas_send(*, now: datetime | None = None, dry_run: bool = False, account=None) -> dict[str, int]:
    """Send the agendas that are due now; returns counts (sent, already sent, skipped)."""
    now = now or timezone.now()
    counts = {"sent": 0, "already_sent": 0, "skipped": 0, "accounts": 0}
    # Accounts with a confirmed booking within a day either side of now: whatever their
    # zone, "today" for them falls in that window.
    bookings = Booking.objects.filter(
        status=BookingStatus.CONFIRMED,
        start_time__gte=now - timedelta(hours=38),
        start_time__lt=now + timedelta(hours=38),
    )
    if account is not None:
        bookings = bookings.filter(account=account)
    account_ids = set(bookings.values_list("account_id", flat=True).distinct())
    users = {user.pk: user for user in get_user_model().objects.filter(pk__in=account_ids)}
    prefs = {p.account_id: p for p in AccountPreference.objects.filter(account_id__in=account_ids)}
    for account_id in sorted(account_ids):
        user = users[account_id]
        pref = prefs.get(account_id) or account_preference(account=user)
        counts["accounts"] += 1
        day = _agenda_day(pref, now)
        if day is None:
            continue
        for outcome in _agendas_for(user, pref, day, dry_run=dry_run):
            counts[outcome] += 1
    return counts


def _agenda_day(pref, now: datetime) -> date | None:
    """The local day whose agenda is due now, or None (too early, off, or a weekend)."""
    if not (pref.daily_agenda_email or pref.daily_agenda_sms):
        return None
    local = now.astimezone(local_zone(pref.timezone))
    if local.time() < pref.daily_agenda_time:
        return None
    if pref.exclude_weekends_agenda and local.weekday() >= 5:
        return None
    return local.date()


def _agendas_for(account, pref, day: date, *, dry_run: bool) -> list[str]:
    zone = local_zone(pref.timezone)
    start = datetime.combine(day, time(0, 0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=zone)
    bookings = Booking.objects.filter(
        account=account, status=BookingStatus.CONFIRMED, start_time__gte=start, start_time__lt=end
    ).order_by("start_time")
    by_organizer: dict[str, list[Booking]] = defaultdict(list)
    names: dict[str, str] = {}
    for booking in bookings:
        organizer = booking.details.get("organizer") or {}
        email = organizer.get("email") or account.email
        if not email:
            continue
        by_organizer[email.lower()].append(booking)
        names.setdefault(email.lower(), organizer.get("name") or "")
    template = template_resolve(account=account, reference=TemplateType.DAILY_AGENDA)
    if template is None or template.current_version_id is None:
        logger.warning("account %s: no daily_agenda template; %s agenda(s) not sent", account.pk, len(by_organizer))
        return ["skipped"] * len(by_organizer)
    outcomes = []
    for email, items in by_organizer.items():
        context = {
            "date": day.strftime("%a %d %b %Y"),
            "organizer_name": names[email],
            "booking_count": len(items),
            "bookings": [
                {
                    "time": b.start_time.astimezone(zone).strftime("%H:%M"),
                    "end_time": b.end_time.astimezone(zone).strftime("%H:%M"),
                    "event_name": b.event_name,
                    "invitee_name": (b.details.get("invitee") or {}).get("name", ""),
                    "location": b.details.get("location", ""),
                    "meeting_link": b.details.get("meeting_link", ""),
                }
                for b in items
            ],
        }
        if dry_run:
            outcomes.append("sent")
            continue
        accepted = notification_accept(
            account=account,
            channels=["email"],
            recipient={"email": email, "name": names[email], "timezone": pref.timezone},
            template=template,
            context={k: v for k, v in context.items() if v != ""},
            source="agenda",
            idempotency_key=f"daily-agenda:{day.isoformat()}:{email}",
            request_hash=f"daily-agenda:{day.isoformat()}",
        )
        outcomes.append("already_sent" if accepted.replayed else "sent")
    return outcomes
