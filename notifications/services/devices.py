"""The device registry: a recipient's push targets, registered by their apps.

Registering is idempotent per token: the same token again refreshes `last_seen_at`,
reactivates it and moves it to the recipient now given (a phone passed to a new user). A
provider's answer that the token is gone (FCM UNREGISTERED, Web Push 404/410) deactivates
it; long-inactive tokens are pruned.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from ..models import Device
from .recipients import recipient_for_update


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def device_register(*, account, external_id: str, token: str, platform: str, subscription: dict | None = None):
    """Register a token for the account's recipient with this external id (created if new:
    an app may register a device before anything was sent to its user); returns (device,
    created)."""
    recipient, _ = recipient_for_update(account, external_id)
    now = timezone.now()
    values = {
        "recipient": recipient,
        "platform": platform,
        "token": token,
        "subscription": subscription or {},
        "active": True,
        "last_seen_at": now,
        "deactivated_at": None,
        "deactivation_reason": "",
    }
    device, created = Device.objects.select_for_update().update_or_create(
        account=account, token_hash=token_hash(token), defaults=values
    )
    return device, created


def device_remove(*, device: Device) -> None:
    device.delete()


def devices_deactivate(*, account_id: int, tokens: list[str], reason: str) -> int:
    """Deactivate the account's devices with these tokens (a provider said they are gone),
    in one statement."""
    if not tokens:
        return 0
    return Device.objects.filter(
        account_id=account_id, token_hash__in=[token_hash(t) for t in tokens], active=True
    ).update(active=False, deactivated_at=timezone.now(), deactivation_reason=reason[:200])


def devices_prune(*, inactive_days: int, now: datetime | None = None, dry_run: bool = False) -> int:
    """Delete devices deactivated, or not seen, for `inactive_days`; returns how many."""
    cutoff = (now or timezone.now()) - timedelta(days=inactive_days)
    stale = Device.objects.filter(last_seen_at__lt=cutoff) | Device.objects.filter(
        active=False, deactivated_at__lt=cutoff
    )
    if dry_run:
        return stale.count()
    deleted, _ = stale.delete()
    return deleted


def devices_gone(*, reports: list[tuple[int, str, str]]) -> int:
    """Deactivate the devices a provider said are gone: (account id, token, reason) each;
    one statement per account and reason."""
    grouped: dict[tuple[int, str], list[str]] = {}
    for account_id, token, reason in reports:
        grouped.setdefault((account_id, reason[:200]), []).append(token)
    return sum(
        devices_deactivate(account_id=account_id, tokens=tokens, reason=reason)
        for (account_id, reason), tokens in grouped.items()
    )


def devices_for_deliveries(deliveries) -> dict:
    """Each delivery's ACTIVE device (platform, Web Push keys) by delivery id: one query.
    A delivery whose device is gone or inactive is left out."""
    hashes = {token_hash(d.to): d for d in deliveries}
    if not hashes:
        return {}
    found = {
        (account_id, key): {"platform": platform, "subscription": subscription}
        for account_id, key, platform, subscription in Device.objects.filter(
            account_id__in={d.account_id for d in deliveries}, token_hash__in=hashes, active=True
        ).values_list("account_id", "token_hash", "platform", "subscription")
    }
    return {
        d.pk: found[(d.account_id, key)]
        for d in deliveries
        if (key := token_hash(d.to)) in hashes and (d.account_id, key) in found
    }
