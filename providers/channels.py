"""The channel spec: everything Beacon knows about a channel, declared once.

The send serializer (which recipient field a channel needs), template validation and
rendering (content fields and limits), the provider registry and settings (which provider
kinds may send it, and which one is the default), the status-callback views and the admin
all read `CHANNELS`. Adding a channel is one `ChannelSpec` here plus one adapter module
(see the README's "Adding a channel").

This module imports nothing of Django's, so that `config.settings` can read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .kinds import ANYMAIL_ESPS

# A phone number as the phone channels take it: E.164.
E164 = r"^\+[1-9]\d{6,14}$"

# Kinds every channel accepts: development and dry runs, no network.
UNIVERSAL_PROVIDER_KINDS = ("console",)


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    label: str
    # The recipient field that addresses this channel (`email`, `phone`, ...). For a
    # device-addressed channel it names the list of the recipient's active devices that
    # accept fills in: one delivery goes to each, its `to` the device's token.
    address_field: str
    # The template content fields this channel uses; the others are dropped on save.
    content_fields: tuple[str, ...] = ("body",)
    # Content fields that may not be blank.
    required_fields: tuple[str, ...] = ("body",)
    # Longest rendered body, where the channel sets one (None: BEACON_MAX_BODY_CHARS only).
    max_body_chars: int | None = None
    # Whether the rendered body is counted in SMS segments (GSM-7 / UCS-2).
    counts_segments: bool = False
    # Whether providers report status changes back through a signed callback, and the URL
    # name of Beacon's view for it when the provider takes a callback URL per message.
    status_callbacks: bool = False
    callback_route: str = ""
    # Provider kinds that can send this channel, besides the universal ones.
    provider_kinds: tuple[str, ...] = ()
    # The default kind: the first (kind, environment variable) whose variable is set;
    # an empty variable name always matches.
    default_providers: tuple[tuple[str, str], ...] = (("console", ""),)
    # Addressed by the recipient's registered devices rather than a field of theirs.
    device_addressed: bool = False
    # Structured content besides the text fields (push: image, action URL, data, ...),
    # kept per template content and per delivery as `options`.
    option_fields: tuple[str, ...] = ()
    # Largest provider payload in bytes, checked at render and again before sending.
    max_payload_bytes: int | None = None
    # Addresses that one kind of the channel sends rather than the configured one:
    # (address prefix, kind). A Web Push subscription's endpoint goes to `webpush`
    # whichever of the channel's kinds is configured (unless it is a universal one).
    address_routes: tuple[tuple[str, str], ...] = ()

    @property
    def setting(self) -> str:
        """The setting (and environment variable) that picks this channel's provider kind."""
        return f"BEACON_{self.name.upper()}_PROVIDER"

    @property
    def kinds(self) -> tuple[str, ...]:
        return (*self.provider_kinds, *UNIVERSAL_PROVIDER_KINDS)

    def route(self, address: str) -> str:
        """The kind the channel's address routes send `address` to ("": none does)."""
        for prefix, kind in self.address_routes:
            if address.startswith(prefix):
                return kind
        return ""

    def kind_for_address(self, configured: str, address: str) -> str:
        """The kind that sends `address` when settings pick `configured` for the channel."""
        if configured in UNIVERSAL_PROVIDER_KINDS:
            return configured
        return self.route(address) or configured

    def default_kind(self, environ) -> str:
        for kind, variable in self.default_providers:
            if not variable or environ.get(variable):
                return kind
        return UNIVERSAL_PROVIDER_KINDS[0]


EMAIL = ChannelSpec(
    name="email",
    label="Email",
    address_field="email",
    content_fields=("subject", "body", "html_body"),
    required_fields=("subject", "body"),
    status_callbacks=True,  # ESP tracking webhooks through django-anymail
    provider_kinds=("django", "smtp", *ANYMAIL_ESPS),
    default_providers=(("django", ""),),
)

SMS = ChannelSpec(
    name="sms",
    label="SMS",
    address_field="phone",
    content_fields=("body",),
    max_body_chars=1600,
    counts_segments=True,
    status_callbacks=True,  # Twilio's signed status callback
    callback_route="sms-status-callback",
    provider_kinds=("twilio",),
    default_providers=(("twilio", "TWILIO_ACCOUNT_SID"), ("console", "")),
)

WHATSAPP = ChannelSpec(
    name="whatsapp",
    label="WhatsApp",
    address_field="phone",  # sent to whatsapp:<E.164>
    content_fields=("body",),
    max_body_chars=1600,
    status_callbacks=True,  # Twilio's signed message status callback
    callback_route="whatsapp-status-callback",
    provider_kinds=("twilio",),
    default_providers=(("twilio", "TWILIO_ACCOUNT_SID"), ("console", "")),
)

VOICE = ChannelSpec(
    name="voice",
    label="Voice call",
    address_field="phone",
    content_fields=("body",),  # the script, read with TwiML <Say> in the recipient's language
    max_body_chars=3800,  # Twilio takes at most 4,000 characters of inline TwiML, markup included
    status_callbacks=True,  # Twilio's signed call status callback
    callback_route="voice-status-callback",
    provider_kinds=("twilio",),
    default_providers=(("twilio", "TWILIO_ACCOUNT_SID"), ("console", "")),
)


def _chat(name: str, label: str, max_body_chars: int | None) -> ChannelSpec:
    """A chat incoming webhook: addressed by a per-recipient webhook URL; the subject is
    the message's title and the body its text."""
    return ChannelSpec(
        name=name,
        label=label,
        address_field=f"{name}_webhook_url",
        content_fields=("subject", "body"),
        required_fields=("body",),
        max_body_chars=max_body_chars,
        provider_kinds=(name,),
        default_providers=((name, ""),),
    )


PUSH = ChannelSpec(
    name="push",
    label="Push",
    address_field="devices",  # the recipient's active devices, registered by their apps
    content_fields=("subject", "body"),  # the notification's title and text
    required_fields=("body",),
    max_body_chars=4000,
    option_fields=("image_url", "action_url", "data", "silent", "android", "apns", "webpush"),
    max_payload_bytes=4096,  # FCM's limit on a message's notification, data and options
    provider_kinds=("fcm", "webpush"),
    default_providers=(
        ("fcm", "FCM_SERVICE_ACCOUNT_JSON"),
        ("fcm", "FCM_SERVICE_ACCOUNT_FILE"),
        ("webpush", "VAPID_PRIVATE_KEY"),
        ("console", ""),
    ),
    device_addressed=True,
    # A browser's Web Push subscription is its endpoint URL (http only where private
    # targets are allowed, for local development); FCM tokens are never URLs.
    address_routes=(("https://", "webpush"), ("http://", "webpush")),
)

SLACK = _chat("slack", "Slack", 3000)  # a section block's text
TEAMS = _chat("teams", "Microsoft Teams", 20000)
DISCORD = _chat("discord", "Discord", 4096)  # an embed's description

IN_APP = ChannelSpec(
    name="in_app",
    label="In-app inbox",
    address_field="external_id",  # the recipient's inbox, read by their app over the API
    content_fields=("subject", "body"),  # the item's title and text
    required_fields=("body",),
    max_body_chars=10000,
    option_fields=("action_url", "data"),
    provider_kinds=("inbox",),
    default_providers=(("inbox", ""),),
)

WEBHOOK = ChannelSpec(
    name="webhook",
    label="Webhook",
    address_field="webhook_url",  # one of the account's registered webhook endpoints
    content_fields=("subject", "body"),
    required_fields=("body",),
    option_fields=("data",),
    provider_kinds=("webhook",),
    default_providers=(("webhook", ""),),
)

CHANNELS: dict[str, ChannelSpec] = {
    spec.name: spec for spec in (EMAIL, SMS, WHATSAPP, VOICE, PUSH, SLACK, TEAMS, DISCORD, IN_APP, WEBHOOK)
}

# Recipient fields that address a channel, in the order the spec declares them: the
# details a send may give and a recipient keeps (not the external id, which is who they
# are, nor the devices, which their apps register).
ADDRESS_FIELDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        spec.address_field
        for spec in CHANNELS.values()
        if not spec.device_addressed and spec.address_field != "external_id"
    )
)


def channel_spec(name: str) -> ChannelSpec:
    return CHANNELS[name]
