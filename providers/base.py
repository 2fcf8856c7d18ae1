"""The adapter base: every provider turns an OutboundMessage into a SendResult or a
classified ProviderError. The base owns the flow; adapters fill in its hooks."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation

from .kinds import KIND_FIELDS
from .urlguard import UnsafeTarget, check_url

logger = logging.getLogger(__name__)


class ProviderError(Exception):
    """A failed send. `retryable` says whether trying again later may succeed."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        retryable: bool | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        code: str = "",
        gone: bool = False,
    ):
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        self.status_code = status_code
        self.retry_after = retry_after
        self.code = code
        # The address no longer exists (a push token the provider has forgotten): a
        # device-addressed channel deactivates it.
        self.gone = gone


class RecipientRejected(ProviderError):
    """The address or number is invalid or refused: permanent."""

    retryable = False


class ProviderUnavailable(ProviderError):
    """Timeout, connection failure, 429 or 5xx: worth retrying."""

    retryable = True


class ProviderConfigurationError(ProviderError, ImproperlyConfigured):
    """Missing or rejected credentials: permanent until an operator acts."""

    retryable = False


class WebhookSignatureInvalid(SuspiciousOperation):
    pass


def error_for_status(
    status_code: int, message: str, *, retry_after: float | None = None, code: str = ""
) -> ProviderError:
    """Classify an HTTP answer: 429 and 5xx retry, 401/403 are configuration, other 4xx permanent."""
    if status_code == 429 or status_code >= 500:
        return ProviderUnavailable(message, status_code=status_code, retry_after=retry_after, code=code)
    if status_code in (401, 403):
        return ProviderConfigurationError(message, status_code=status_code, code=code)
    return RecipientRejected(message, status_code=status_code, code=code)


def parse_retry_after(value) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date)."""
    if value in (None, ""):
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class OutboundMessage:
    channel: str
    to: str
    body: str
    subject: str = ""
    html_body: str = ""
    reference: str = ""  # our delivery id, echoed in callbacks where the provider allows
    status_callback_url: str = ""
    locale: str = ""  # the content's locale ("" for the default), for channels that speak it
    metadata: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)  # extra message headers, where the channel has them (email)
    options: dict = field(default_factory=dict)  # structured content (push: image_url, action_url, data, ...)
    # What Beacon keeps about the address, read with the claim: a push device's platform
    # and Web Push keys, a webhook endpoint's signing secrets.
    target: dict = field(default_factory=dict)


@dataclass
class SendResult:
    provider_message_id: str
    status: str = "sent"  # a DeliveryStatus value the provider's answer maps to
    response_code: int | None = None
    cost: str = ""
    raw: dict = field(default_factory=dict)


def clean_config(kind: str, config: Mapping | None) -> dict:
    """The values a configuration mapping gives: None and "" give nothing (the default
    stands). A name the kind does not know is refused (by name only: values may be secrets)."""
    given = {name: value for name, value in (config or {}).items() if value is not None and value != ""}
    fields = KIND_FIELDS.get(kind)
    if fields is not None:
        unknown = sorted(map(str, set(given) - set(fields.names)))
        if unknown:
            raise ProviderConfigurationError(f"{kind} has no configuration named {', '.join(unknown)}.")
    return given


# Settings that say which server an adapter connects to (and so sends its credentials to).
ENDPOINT_SETTINGS = ("api_base_url", "api_url", "host")


def needs_own_credentials(kind: str, overrides: Mapping) -> bool:
    """Whether a configuration's credentials must all be its own: it gives a credential,
    or a server of its own to connect to."""
    fields = KIND_FIELDS.get(kind)
    if fields is None:
        return False
    own = {*fields.credentials, *fields.url_settings, *(name for name in ENDPOINT_SETTINGS if name in fields.settings)}
    return not own.isdisjoint(overrides)


class Provider:
    """One provider adapter over one base that owns the flow (as django-anymail's backends do):

        build_request(message) -> post_request(request) -> parse_response(response, message)

    with any exception on the way turned into a classified ProviderError by
    `classify_error`. An adapter fills in those hooks; `self.timeout` bounds every call and
    the adapter keeps its client (and so its HTTP connection) for the life of the process.
    `kind` names it in the registry and in settings.

    Its configuration (`self.config`, by the names of `KIND_FIELDS[kind]`) is the mapping
    it is built with (an account's provider record) over the platform defaults from
    Django settings (`settings_config`): a record's value wins unless it is None or "".
    """

    kind: str = ""
    channels: tuple[str, ...] = ()
    # It sends to an endpoint the recipient (or the account) owns, not to one provider's
    # service: one endpoint's failures or 429s say nothing about the next one's, so it has
    # no shared circuit breaker, pause or health.
    recipient_endpoints: bool = False
    # The Django setting that gives each configuration value's platform default.
    setting_names: Mapping[str, str] = {}

    def __init__(self, *, timeout: float, config: Mapping | None = None):
        self.timeout = timeout
        # What the mapping gave (not the settings' defaults): empty on the settings path.
        self.overrides = clean_config(self.kind, config)
        defaults = self.settings_config()
        # The platform's credentials go only where the platform's settings send them, and
        # only as a set: a mapping that gives a credential, or another server to connect
        # to, gives all of its credentials (those it leaves out are unset).
        self.own_credentials = needs_own_credentials(self.kind, self.overrides)
        if self.own_credentials:
            defaults.update(dict.fromkeys(KIND_FIELDS[self.kind].credentials))
        self.config = {**defaults, **self.overrides}

    @classmethod
    def settings_config(cls) -> dict:
        """The platform defaults from Django settings, by configuration name."""
        return {name: getattr(settings, setting, None) for name, setting in cls.setting_names.items()}

    def label(self, name: str) -> str:
        """How an error names a configuration value: its Django setting when this adapter
        runs on settings alone (as the messages always have), else its configuration name."""
        if self.overrides:
            return name
        return self.setting_names.get(name, name)

    def configured_url(self, name: str) -> str:
        """The URL setting `name`; one a record gives passes the outbound URL guard, as a
        URL a customer gives does (settings are the operator's, and are trusted)."""
        url = self.config.get(name) or ""
        if name in self.overrides:
            try:
                check_url(url)
            except UnsafeTarget as exc:
                raise ProviderConfigurationError(f"{name} is refused: {exc.message}") from None
        return url

    def check_configuration(self) -> list[str]:
        """Problems that stop this provider from sending; empty when it is ready."""
        return []

    def check_channel_configuration(self, channel: str) -> list[str]:
        """Problems that stop this provider from sending `channel` (a sender that only one
        of its channels needs, say); by default those of `check_configuration`."""
        return self.check_configuration()

    def send(self, message: OutboundMessage) -> SendResult:
        """Send one message; returns a SendResult or raises a classified ProviderError."""
        if message.channel not in self.channels:
            raise ProviderConfigurationError(f"{self.kind} does not send {message.channel}")
        try:
            request = self.build_request(message)
            response = self.post_request(request)
            return self.parse_response(response, message)
        except ProviderError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure leaves classified
            raise self.classify_error(exc) from exc

    def send_many(self, messages: list[OutboundMessage]) -> Iterator[SendResult | ProviderError]:
        """One result or error per message, in order, as each is known. The default sends
        them one after another over the same connection; a provider that takes many
        messages per request may override it. The caller may stop early (a 429)."""
        for message in messages:
            try:
                yield self.send(message)
            except ProviderError as error:
                yield error

    # --- hooks ---------------------------------------------------------------------

    def build_request(self, message: OutboundMessage):
        """The provider's request for this message (a dict, an email object, ...)."""
        return message

    def post_request(self, request):  # pragma: no cover - every adapter sends
        """Send the request with `self.timeout` over the kept-open client; the raw answer."""
        raise NotImplementedError

    def parse_response(self, response, message: OutboundMessage) -> SendResult:
        """The raw answer as a SendResult, or raise a ProviderError for a refusal in it."""
        return response

    def classify_error(self, exc: Exception) -> ProviderError:
        """An exception from the hooks as a ProviderError. Unknown ones are adapter bugs:
        logged, and retried, so that the delivery is never stranded."""
        logger.error("provider %s raised an unclassified error", self.kind, exc_info=exc)
        return ProviderError(f"Unexpected error: {exc.__class__.__name__}", retryable=True)
