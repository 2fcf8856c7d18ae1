"""Where each channel reaches a recipient: the address a send gives, the one stored on
the recipient, or (for a device-addressed channel such as push) each of the recipient's
active devices, one delivery per device."""

from __future__ import annotations

from providers.channels import ADDRESS_FIELDS, CHANNELS

from ..models import Device, Recipient


def channel_addresses(recipient: dict, channel: str) -> list[str]:
    """The addresses a channel's deliveries to this recipient go to: one, or none; for a
    device-addressed channel, each active device's token."""
    spec = CHANNELS[channel]
    value = recipient.get(spec.address_field)
    if spec.device_addressed:
        return [device["token"] for device in value or []]
    return [value] if value else []


def missing_addresses(channels: list[str], recipient: dict) -> dict[str, list[str]]:
    """The recipient fields the channels need and the recipient lacks, each with why."""
    missing = {}
    for channel in channels:
        spec = CHANNELS[channel]
        if channel_addresses(recipient, channel):
            continue
        if not spec.device_addressed:
            missing[spec.address_field] = [f"Required to send on the {channel} channel."]
        elif not recipient.get("external_id"):
            missing["external_id"] = [
                f"Required to send on the {channel} channel: it reaches the devices registered for it."
            ]
        else:
            missing[spec.address_field] = [
                f"The recipient has no active {channel} device; register one at "
                f"/api/v1/recipients/{{external_id}}/devices/."
            ]
    return missing


# How a reason for an unreachable channel names the recipient field it lacks.
FIELD_WORDS = {
    "email": "email address",
    "phone": "phone number",
    "external_id": "external id",
    "webhook_url": "webhook URL",
}


def reachable_channels(channels: list[str], recipient: dict) -> list[str]:
    """The channels, in order, that have an address for this recipient."""
    return [channel for channel in channels if channel_addresses(recipient, channel)]


def unreachable_reason(recipient: dict, channel: str) -> str:
    """Why a channel has no address for this recipient, in a few words ("no phone number
    for sms", "no active push device"): what a fallback send records for it."""
    spec = CHANNELS[channel]
    if spec.device_addressed:
        if not recipient.get("external_id"):
            return f"no external id for {channel}: it reaches the devices registered for one"
        return f"no active {channel} device"
    field = spec.address_field
    words = FIELD_WORDS.get(field) or (
        f"{spec.label} webhook URL" if field.endswith("_webhook_url") else field.replace("_", " ")
    )
    return f"no {words} for {channel}"


def recipient_addresses_fill(*, account, channels: list[str], details: list[dict]) -> list[dict]:
    """The details, each with the addresses its channels need and it leaves out taken from
    the account's stored recipient with the same external id: a chat webhook URL (or an
    email address, a phone number) given once serves the sends after it, and push reaches
    the devices registered for that id. One query for the stored fields and one for the
    devices, none when nothing is missing; the dicts given are not changed."""
    specs = [CHANNELS[channel] for channel in channels]
    stored_fields = [f for f in dict.fromkeys(s.address_field for s in specs) if f in ADDRESS_FIELDS]
    device_fields = [s.address_field for s in specs if s.device_addressed]
    wanting = {
        item["external_id"]
        for item in details
        if item.get("external_id") and any(not item.get(field) for field in stored_fields)
    }
    stored = {}
    if wanting:
        stored = {
            row["external_id"]: row
            for row in Recipient.objects.filter(account=account, external_id__in=wanting).values(
                "external_id", *stored_fields
            )
        }
    # Devices are looked up for the items that do not carry them yet (a serializer that
    # filled them in leaves nothing to look up when accept asks again).
    device_less = [item for item in details if device_fields and not any(f in item for f in device_fields)]
    devices = _active_devices(account, {item["external_id"] for item in device_less if item.get("external_id")})
    if not stored and not device_less:
        return details
    filled = []
    for item in details:
        row = stored.get(item.get("external_id") or None)
        if row is not None:
            item = {**item, **{field: row[field] for field in stored_fields if not item.get(field) and row[field]}}
        if device_less and not any(field in item for field in device_fields):
            found = devices.get(item.get("external_id") or None, [])
            item = {**item, **{field: found for field in device_fields}}
        filled.append(item)
    return filled


def _active_devices(account, external_ids: set[str]) -> dict[str, list[dict]]:
    """The active devices of the account's recipients with these external ids, the most
    recently seen first: one query."""
    if not external_ids:
        return {}
    found: dict[str, list[dict]] = {}
    rows = (
        Device.objects.filter(account=account, active=True, recipient__external_id__in=external_ids)
        .order_by("-last_seen_at")
        .values_list("recipient__external_id", "token", "platform")
    )
    for external_id, token, platform in rows:
        found.setdefault(external_id, []).append({"token": token, "platform": platform})
    return found
