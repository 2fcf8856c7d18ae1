"""Maps provider kinds to adapters, and each channel to its ordered providers.

Adapters are built once per process and configuration and reused, so their HTTP sessions
and connections are too.
"""

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping

from django.conf import settings

from .base import Provider, ProviderConfigurationError
from .channels import CHANNELS
from .chat import DiscordWebhookProvider, SlackWebhookProvider, TeamsWebhookProvider
from .console import ConsoleProvider
from .email import EMAIL_PROVIDERS
from .push import FcmProvider, WebPushProvider
from .twilio_sms import TwilioSmsProvider
from .webhook import WebhookProvider

PROVIDER_CLASSES: dict[str, type[Provider]] = {
    cls.kind: cls
    for cls in (
        ConsoleProvider,
        *EMAIL_PROVIDERS,
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


# Built adapters by (kind, timeout, configuration fingerprint), least recently used
# first; the settings-only ones among them. Bounded: an account's records come and go.
_BUILT: OrderedDict[tuple[str, float, str], Provider] = OrderedDict()
_BUILT_MAX = 256
_BUILT_LOCK = threading.Lock()


def config_fingerprint(config: Mapping | None) -> str:
    """A digest of a configuration's values (those that count: not None or ""), so that
    the cache holds no secret as its key. The same values give the same fingerprint."""
    given = sorted((str(name), value) for name, value in (config or {}).items() if value is not None and value != "")
    if not given:
        return ""
    encoded = json.dumps(given, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


def provider_build(kind: str, config: Mapping | None = None) -> Provider:
    """The adapter of `kind` configured with `config` (an account's provider record, by
    the names of KIND_FIELDS[kind]) over the platform defaults from settings; with no
    config, from settings alone. Built once per kind and configuration and reused, so that
    it keeps its connections."""
    cls = PROVIDER_CLASSES.get(kind)
    if cls is None:
        raise ProviderConfigurationError(f"{kind!r} is not a provider kind.")
    timeout = settings.PROVIDER_TIMEOUT_SECONDS
    key = (kind, timeout, config_fingerprint(config))
    with _BUILT_LOCK:
        provider = _BUILT.get(key)
        if provider is not None:
            _BUILT.move_to_end(key)
            return provider
    # Built outside the lock (cheap, no network); the first one stored is the one kept.
    built = cls(timeout=timeout, config=config) if key[2] else cls(timeout=timeout)
    with _BUILT_LOCK:
        provider = _BUILT.setdefault(key, built)
        _BUILT.move_to_end(key)
        while len(_BUILT) > _BUILT_MAX:
            _BUILT.popitem(last=False)
    return provider


def providers_for(channel: str, address: str = "") -> list[Provider]:
    """The providers that may send this channel (to this address), in the order to try
    them. Today that is the one kind settings choose; failover walks this list."""
    return [provider_build(provider_kind_for_channel(channel, address))]


def provider_for_channel(channel: str, address: str = "") -> Provider:
    """The first provider of the channel's chain."""
    return providers_for(channel, address)[0]


def reset_providers() -> None:
    """Forget built adapters (after settings change, e.g. in tests)."""
    with _BUILT_LOCK:
        _BUILT.clear()


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
