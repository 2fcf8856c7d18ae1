"""Maps provider kinds to adapters, and each channel to its ordered providers.

Adapters are built once per process and reused, so their HTTP sessions and connections
are too.
"""

from functools import cache

from django.conf import settings

from .base import Provider, ProviderConfigurationError
from .channels import CHANNELS
from .chat import DiscordWebhookProvider, SlackWebhookProvider, TeamsWebhookProvider
from .console import ConsoleProvider
from .email import DjangoEmailProvider
from .push import FcmProvider, WebPushProvider
from .twilio_sms import TwilioSmsProvider
from .webhook import WebhookProvider

PROVIDER_CLASSES: dict[str, type[Provider]] = {
    cls.kind: cls
    for cls in (
        ConsoleProvider,
        DjangoEmailProvider,
        TwilioSmsProvider,
        SlackWebhookProvider,
        TeamsWebhookProvider,
        DiscordWebhookProvider,
        FcmProvider,
        WebPushProvider,
        WebhookProvider,
    )
}


def register_provider(cls: type[Provider]) -> None:
    """Add a provider kind whose adapter lives in an app of its own (the in-app inbox
    stores into notifications' tables, which this app may not import)."""
    PROVIDER_CLASSES[cls.kind] = cls
    reset_providers()


# The setting that picks each channel's provider kind (BEACON_<CHANNEL>_PROVIDER).
CHANNEL_SETTINGS = {name: spec.setting for name, spec in CHANNELS.items()}


def provider_kind_for_channel(channel: str, address: str = "") -> str:
    """The kind that sends `address` on the channel: the one settings choose, unless the
    channel routes such addresses to another (a Web Push endpoint on the push channel)."""
    setting = CHANNEL_SETTINGS.get(channel)
    if setting is None:
        raise ProviderConfigurationError(f"No provider handles channel {channel!r}.")
    kind = CHANNELS[channel].kind_for_address(getattr(settings, setting), address)
    if kind not in PROVIDER_CLASSES or channel not in PROVIDER_CLASSES[kind].channels:
        raise ProviderConfigurationError(f"{setting}={kind!r} is not a provider for {channel}.")
    return kind


@cache
def _build(kind: str, timeout: float) -> Provider:
    return PROVIDER_CLASSES[kind](timeout=timeout)


def providers_for(channel: str, address: str = "") -> list[Provider]:
    """The providers that may send this channel (to this address), in the order to try
    them. Today that is the one kind settings choose; failover walks this list."""
    return [_build(provider_kind_for_channel(channel, address), settings.PROVIDER_TIMEOUT_SECONDS)]


def provider_for_channel(channel: str, address: str = "") -> Provider:
    """The first provider of the channel's chain."""
    return providers_for(channel, address)[0]


def reset_providers() -> None:
    """Forget built adapters (after settings change, e.g. in tests)."""
    _build.cache_clear()


def providers_configuration() -> dict[str, dict]:
    """Per channel: the provider kind and whether it is ready to send. No secrets."""
    report = {}
    for channel in CHANNEL_SETTINGS:
        try:
            provider = provider_for_channel(channel)
        except ProviderConfigurationError as exc:
            report[channel] = {"provider": None, "configured": False, "problems": [str(exc)]}
            continue
        problems = provider.check_channel_configuration(channel)
        report[channel] = {"provider": provider.kind, "configured": not problems, "problems": problems}
    return report
