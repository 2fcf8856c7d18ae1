"""Suppression and the consent ledger.

A suppression stops every message to an address on a channel (bounces, complaints, STOP);
the ledger records each grant and withdrawal of consent with how it was given. Both are
keyed by the address hash as well, so that they survive the erasure of the recipient.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from ..models import ConsentMethod, ConsentRecord, Suppression, address_hash

logger = logging.getLogger("beacon.preferences")


def suppressions_add(*, account, entries: list[tuple[str, str]], reason: str, detail: str = "") -> int:
    """Suppress (channel, address) pairs; those already suppressed keep their first reason.
    Returns how many were new."""
    rows = [
        Suppression(
            account=account,
            channel=channel,
            address=address,
            address_hash=address_hash(channel, address),
            reason=reason,
            detail=detail[:500],
        )
        for channel, address in dict.fromkeys(entries)
        if address
    ]
    if not rows:
        return 0
    before = Suppression.objects.filter(account=account, address_hash__in=[r.address_hash for r in rows]).count()
    Suppression.objects.bulk_create(rows, ignore_conflicts=True)
    added = (
        Suppression.objects.filter(account=account, address_hash__in=[r.address_hash for r in rows]).count() - before
    )
    for row in rows:
        logger.info("suppressed %s address on account %s: %s", row.channel, account.pk, reason)
    return added


def suppression_add(*, account, channel: str, address: str, reason: str, detail: str = "") -> bool:
    return suppressions_add(account=account, entries=[(channel, address)], reason=reason, detail=detail) == 1


def suppression_lift(*, account, channel: str, address: str) -> bool:
    """Lift a suppression (START, or an operator); True if there was one."""
    deleted, _ = Suppression.objects.filter(
        account=account, channel=channel, address_hash=address_hash(channel, address)
    ).delete()
    if deleted:
        logger.info("lifted %s suppression on account %s", channel, account.pk)
    return bool(deleted)


@transaction.atomic
def consent_record(
    *,
    account,
    recipient=None,
    address: tuple[str, str] | None = None,
    channel: str = "*",
    category: str = "marketing",
    granted: bool,
    method: str = ConsentMethod.API,
    detail: str = "",
) -> ConsentRecord:
    """Append one grant or withdrawal to the ledger. `address` is (channel, address) when
    the consent came by an address (a keyword from a phone, a link in an email)."""
    return ConsentRecord.objects.create(
        account=account,
        recipient=recipient,
        address_hash=address_hash(*address) if address else "",
        channel=channel,
        category=category,
        granted=granted,
        method=method,
        detail=detail[:500],
        recorded_at=timezone.now(),
    )
