"""A recipient's own say, addressed by the account's external id for them: their details,
preferred channel, quiet hours and opt-outs, and the consent ledger.

The rows live in `preferences` (RecipientPreference, ConsentRecord); this module is where
the notifications app, which owns Recipient, writes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Q

from preferences.models import ConsentMethod, ConsentRecord, RecipientPreference
from preferences.services import consent_record

from ..models import Recipient
from .accept import RECIPIENT_DETAILS

logger = logging.getLogger("beacon.preferences")

RECIPIENT_FIELDS = RECIPIENT_DETAILS
PREFERENCE_FIELDS = ("preferred_channel", "quiet_hours_enabled", "quiet_hours_start", "quiet_hours_end", "opt_outs")


@dataclass
class RecipientPreferences:
    """A recipient with their preferences (the defaults, unsaved, until first written)."""

    recipient: Recipient
    preference: RecipientPreference
    created: bool = False


def recipient_preferences_get(*, account, external_id: str) -> RecipientPreferences | None:
    """The account's recipient with that external id and their preferences, or None."""
    if not external_id or "\x00" in external_id:
        return None
    recipient = Recipient.objects.filter(account=account, external_id=external_id).first()
    if recipient is None:
        return None
    preference = RecipientPreference.objects.filter(recipient=recipient).first()
    return RecipientPreferences(recipient, preference or _default_preference(recipient))


@transaction.atomic
def recipient_preferences_update(*, account, external_id: str, data: dict) -> RecipientPreferences:
    """Write the given details and preferences of the account's recipient with that
    external id, creating the recipient first if the account has none; fields not given
    keep their values."""
    recipient, created = recipient_for_update(account, external_id)
    details = {name: data[name] for name in RECIPIENT_FIELDS if name in data}
    if details:
        for name, value in details.items():
            setattr(recipient, name, value)
        recipient.save(update_fields=[*details, "updated_at"])
    preference = _preference_for_update(account, recipient)
    changes = {name: data[name] for name in PREFERENCE_FIELDS if name in data}
    if "opt_outs" in changes:
        changes["opt_outs"] = opt_outs_normalise(changes["opt_outs"])
    for name, value in changes.items():
        setattr(preference, name, value)
    preference.save()
    return RecipientPreferences(recipient, preference, created)


@transaction.atomic
def recipient_unsubscribe(
    *,
    account,
    recipient: Recipient,
    category: str = "marketing",
    channel: str = "*",
    method: str = ConsentMethod.API,
    detail: str = "",
) -> RecipientPreferences:
    """Opt the recipient out of a category on a channel (either may be "*") and append the
    withdrawal to the consent ledger: from the API, or from an unsubscribe link (method
    link). Doing it again adds no second opt-out and no second withdrawal while one is in
    force. The preference row is locked for its read-modify-write: a mail client's
    one-click request and a click on the page may arrive together."""
    preference = _preference_for_update(account, recipient)
    wanted = opt_outs_normalise([*preference.opt_outs, {"category": category, "channel": channel}])
    changed = wanted != preference.opt_outs
    if changed:
        preference.opt_outs = wanted
        preference.save(update_fields=["opt_outs", "updated_at"])
    in_force = (
        ConsentRecord.objects.filter(
            Q(channel=channel) | Q(channel="*"), Q(category=category) | Q(category="*"), recipient=recipient
        )
        .values_list("granted", flat=True)
        .first()  # newest first
    )
    if in_force is not False:
        consent_record(
            account=account,
            recipient=recipient,
            address=(channel, recipient.email) if channel == "email" and recipient.email else None,
            channel=channel,
            category=category,
            granted=False,
            method=method,
            detail=detail or "unsubscribed through the API",
        )
        changed = True
    if changed:
        logger.info("recipient %s of account %s opted out of %s on %s", recipient.pk, account.pk, category, channel)
    return RecipientPreferences(recipient, preference)


@transaction.atomic
def recipient_consent_record(
    *, account, recipient: Recipient, granted: bool, channel: str = "*", category: str = "marketing", detail: str = ""
) -> ConsentRecord:
    """Append a grant or withdrawal to the recipient's consent ledger. A grant also lifts
    the recipient's opt-out of exactly that category and channel (a re-subscribe)."""
    if granted:
        preference = RecipientPreference.objects.select_for_update().filter(recipient=recipient).first()
        wanted = {"category": category, "channel": channel}
        if preference is not None and wanted in preference.opt_outs:
            preference.opt_outs = [entry for entry in preference.opt_outs if entry != wanted]
            preference.save(update_fields=["opt_outs", "updated_at"])
    return consent_record(
        account=account,
        recipient=recipient,
        channel=channel,
        category=category,
        granted=granted,
        method=ConsentMethod.API,
        detail=detail,
    )


def recipient_consent_list(*, recipient: Recipient):
    """The recipient's consent ledger, newest first."""
    return ConsentRecord.objects.filter(recipient=recipient).order_by("-recorded_at", "-id")


def opt_outs_normalise(entries: list[dict]) -> list[dict]:
    """{category, channel} pairs, each once, in the order first given."""
    unique = dict.fromkeys((entry["category"], entry["channel"]) for entry in entries)
    return [{"category": category, "channel": channel} for category, channel in unique]


def _default_preference(recipient: Recipient) -> RecipientPreference:
    return RecipientPreference(account_id=recipient.account_id, recipient=recipient)


def recipient_for_update(account, external_id: str) -> tuple[Recipient, bool]:
    """The account's recipient with this external id, locked, created if new (inside a
    transaction); returns (recipient, created)."""
    found = Recipient.objects.select_for_update().filter(account=account, external_id=external_id).first()
    if found is not None:
        return found, False
    try:
        # A concurrent request may create the same external id first; then use its row.
        with transaction.atomic():
            return Recipient.objects.create(account=account, external_id=external_id), True
    except IntegrityError:
        return Recipient.objects.select_for_update().get(account=account, external_id=external_id), False


def _preference_for_update(account, recipient: Recipient) -> RecipientPreference:
    preference = RecipientPreference.objects.select_for_update().filter(recipient=recipient).first()
    if preference is not None:
        return preference
    try:
        with transaction.atomic():
            return RecipientPreference.objects.create(account=account, recipient=recipient)
    except IntegrityError:
        return RecipientPreference.objects.select_for_update().get(recipient=recipient)
