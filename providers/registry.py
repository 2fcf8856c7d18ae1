"""Maps provider kinds to adapters, and each channel to its ordered providers.

Adapters are built once per process and configuration and reused, so their HTTP sessions
and connections are too.
"""

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from config.cache import ProcessCache

from .base import Provider, ProviderConfigurationError
from .channels import CHANNELS
from .chat import DiscordWebhookProvider, SlackWebhookProvider, TeamsWebhookProvider
from .console import ConsoleProvider
from .email import EMAIL_PROVIDERS
from .health import provider_key, providers_health
from .limits import NO_LIMIT, Limit, platform_limit
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


def platform_providers_health(configuration: dict[str, dict]) -> dict[str, dict]:
    """The health of each platform provider of a `providers_configuration()` report, by
    kind: its breaker, success rate and p95 latency, shared by every worker. One round trip."""
    kinds = sorted(
        {
            entry["provider"]
            for entry in configuration.values()
            if entry["provider"] and not PROVIDER_CLASSES[entry["provider"]].recipient_endpoints
        }
    )
    health = providers_health([provider_key(None, kind) for kind in kinds])
    # Public: the figures, not the last error's text (it may name a customer's host).
    return {
        kind: {
            name: value for name, value in health[provider_key(None, kind)].items() if not name.startswith("last_error")
        }
        for kind in kinds
    }


# --- An account's own providers (provider records) ----------------------------------------


def _accounts_with_records() -> frozenset:
    from .models import ProviderConfig

    return frozenset(
        ProviderConfig.objects.filter(enabled=True).values_list("account_id", flat=True).distinct().order_by()
    )


# The accounts with an enabled provider record, read at most every 5 s: dispatch asks the
# database nothing more when no account has its own providers (the platform's serve).
RECORD_ACCOUNTS = ProcessCache(_accounts_with_records, 5.0)


@dataclass(frozen=True)
class Link:
    """One provider of an account's chain for a channel: the adapter, the record it was
    built from (None for the platform's default from settings), or why it cannot be; and
    what one message through it costs."""

    provider: Provider | None
    record_id: int | None = None
    error: ProviderConfigurationError | None = None
    kind: str = ""
    name: str = ""
    cost_per_message: Decimal | None = None
    currency: str = ""
    limit: Limit = NO_LIMIT

    @property
    def shared(self) -> bool:
        """Whether it has a circuit breaker, pauses and health shared by every worker: a
        provider's service, not a record that could not be built (it fails at once) nor a
        recipient's own endpoint."""
        return self.provider is not None and not self.provider.recipient_endpoints

    @property
    def label(self) -> str:
        """How the log names it: the record's name and kind, or the platform's kind."""
        return f"{self.name} ({self.kind})" if self.name else self.kind or "no provider"

    @property
    def key(self) -> str:
        """The provider's name in the shared breaker, health and rate-limit state, and in
        a delivery's `providers_tried`."""
        return provider_key(self.record_id, self.kind)


def account_records(channel: str, account_ids) -> dict[int, list]:
    """The enabled records of these accounts for the channel, by account, in the order to
    try them (priority, then age): one query, none when no account has records."""
    wanted = RECORD_ACCOUNTS.get() & set(account_ids)
    if not wanted:
        return {}
    from .models import ProviderConfig

    chains: dict[int, list] = {}
    for record in ProviderConfig.objects.filter(account_id__in=wanted, channel=channel, enabled=True).order_by(
        "priority", "pk"
    ):
        chains.setdefault(record.account_id, []).append(record)
    return chains


def provider_chain(channel: str, address: str, records: list) -> list[Link]:
    """The providers to try for this address, in order. An account's records for the
    channel replace the platform's provider (so its messages never go out on the
    platform's account): each record is built with its settings and credentials over the
    kind's defaults; a record of a kind that cannot send the address (an fcm record and a
    Web Push endpoint) is passed over. No records: the platform's provider."""
    if not records:
        try:
            kind = provider_kind_for_channel(channel, address)
        except ProviderConfigurationError as error:
            setting = CHANNEL_SETTINGS.get(channel)
            return [Link(None, None, error, kind=str(getattr(settings, setting, "")) if setting else "")]
        provider = provider_build(kind)
        return [Link(provider, kind=provider.kind, limit=platform_limit(provider.kind))]
    from .services import provider_config_adapter

    links = []
    for record in records:
        if CHANNELS[channel].kind_for_address(record.kind, address) != record.kind:
            continue
        priced = {
            "kind": record.kind,
            "name": record.name,
            "cost_per_message": record.cost_per_message,
            "currency": record.currency,
            "limit": Limit.of(record.rate_limit_per_second, record.burst),
        }
        try:
            provider = provider_config_adapter(record)
        except ProviderConfigurationError as error:
            links.append(Link(None, record.pk, error, **priced))
            continue
        links.append(Link(provider, record.pk, **priced))
    if not links:
        problem = f"None of the account's {channel} providers can send to this address."
        links.append(Link(None, None, ProviderConfigurationError(problem), kind="none"))
    return links
