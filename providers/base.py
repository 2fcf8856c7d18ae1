"""The adapter base: every provider turns an OutboundMessage into a SendResult or raises
a classified ProviderError. Adapters fill in `send_message` and nothing else of the flow."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation


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
    ):
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        self.status_code = status_code
        self.retry_after = retry_after
        self.code = code


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
    metadata: dict = field(default_factory=dict)


@dataclass
class SendResult:
    provider_message_id: str
    status: str = "sent"  # a DeliveryStatus value the provider's answer maps to
    response_code: int | None = None
    cost: str = ""
    raw: dict = field(default_factory=dict)


class Provider:
    """One provider adapter. `kind` names it in the registry and in settings."""

    kind: str = ""
    channels: tuple[str, ...] = ()

    def __init__(self, *, timeout: float):
        self.timeout = timeout

    def check_configuration(self) -> list[str]:
        """Problems that stop this provider from sending; empty when it is ready."""
        return []

    def send(self, message: OutboundMessage) -> SendResult:
        if message.channel not in self.channels:
            raise ProviderConfigurationError(f"{self.kind} does not send {message.channel}")
        return self.send_message(message)

    def send_message(self, message: OutboundMessage) -> SendResult:  # pragma: no cover
        raise NotImplementedError
