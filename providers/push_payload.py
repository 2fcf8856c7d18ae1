"""What a push says, as Firebase Cloud Messaging's HTTP v1 message takes it, built in one
place for the render check (a payload over the channel's limit is refused before it is
stored) and for the adapters (which check again before sending).

No Django and no client library here: templates import it.
"""

from __future__ import annotations

import json

# A silent (background) push: no alert; iOS wakes the app with content-available, Android
# delivers the data at normal priority.
SILENT_ANDROID = {"priority": "normal"}
SILENT_APNS = {
    "headers": {"apns-push-type": "background", "apns-priority": "5"},
    "payload": {"aps": {"content-available": 1}},
}


def _merged(base: dict, extra: dict) -> dict:
    """`extra` over `base`, one level of nested dicts deep."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def fcm_message_fields(*, title: str, body: str, options: dict, reference: str = "") -> dict:
    """The message's fields besides its target: notification, data and the per-platform
    options. The action URL travels in the data (apps open it) and as the web link."""
    options = options or {}
    silent = bool(options.get("silent"))
    data = {str(k): str(v) for k, v in (options.get("data") or {}).items()}
    if options.get("action_url"):
        data.setdefault("action_url", options["action_url"])
    if reference:
        data.setdefault("beacon_delivery", reference)
    fields: dict = {}
    if not silent:
        notification = {"title": title, "body": body}
        if options.get("image_url"):
            notification["image"] = options["image_url"]
        fields["notification"] = {key: value for key, value in notification.items() if value}
    if data:
        fields["data"] = data
    android = _merged(SILENT_ANDROID, options.get("android") or {}) if silent else options.get("android") or {}
    apns = _merged(SILENT_APNS, options.get("apns") or {}) if silent else options.get("apns") or {}
    webpush = dict(options.get("webpush") or {})
    if options.get("action_url", "").startswith("https://") and not silent:
        webpush = _merged({"fcm_options": {"link": options["action_url"]}}, webpush)
    for name, value in (("android", android), ("apns", apns), ("webpush", webpush)):
        if value:
            fields[name] = value
    return fields


def web_push_payload(*, title: str, body: str, options: dict, reference: str = "") -> dict:
    """The JSON a browser's service worker receives in its push event."""
    options = options or {}
    payload = {"title": title, "body": body}
    if options.get("image_url"):
        payload["image"] = options["image_url"]
    if options.get("action_url"):
        payload["url"] = options["action_url"]
    if options.get("data"):
        payload["data"] = {str(k): str(v) for k, v in options["data"].items()}
    if options.get("silent"):
        payload["silent"] = True
    if reference:
        payload["beacon_delivery"] = reference
    return payload


# What aes128gcm adds to a Web Push payload: an 86-byte header (salt, record size, key),
# the padding delimiter and the 16-byte tag. Push services refuse bodies over 4,096 bytes.
WEB_PUSH_OVERHEAD = 86 + 1 + 16


def encoded(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def payload_size(*, title: str, body: str, options: dict) -> int:
    """The bytes of the larger of the two forms a push takes (FCM's message fields, the
    encrypted Web Push body), with room for the delivery reference both carry."""
    reference = "00000000-0000-0000-0000-000000000000"
    return max(
        len(encoded(fcm_message_fields(title=title, body=body, options=options, reference=reference))),
        len(encoded(web_push_payload(title=title, body=body, options=options, reference=reference)))
        + WEB_PUSH_OVERHEAD,
    )
