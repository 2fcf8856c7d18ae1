import threading

import requests
from django.conf import settings
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from .base import (
    OutboundMessage,
    Provider,
    ProviderConfigurationError,
    ProviderError,
    ProviderUnavailable,
    RecipientRejected,
    SendResult,
    WebhookSignatureInvalid,
    error_for_status,
    parse_retry_after,
)

# Twilio's message statuses onto Beacon's delivery statuses. None: nothing to record
# (the provider has the message; Beacon already says "sent").
STATUS_MAP = {
    "accepted": None,
    "scheduled": None,
    "queued": None,
    "sending": None,
    "sent": "sent",
    "delivered": "delivered",
    "read": "opened",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "cancelled",
}

# Twilio error codes that no retry can fix: invalid or unreachable numbers, opted out.
PERMANENT_ERROR_CODES = {21211, 21212, 21214, 21217, 21401, 21407, 21408, 21421, 21606, 21610, 21612, 21614, 21617}


class _RecordingHttpClient(TwilioHttpClient):
    """Keeps the last response per thread, so a 429's Retry-After can be honoured."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._local = threading.local()

    def request(self, *args, **kwargs):
        self._local.response = None
        response = super().request(*args, **kwargs)
        self._local.response = response
        return response

    @property
    def last_response(self):
        return getattr(self._local, "response", None)


class TwilioSmsProvider(Provider):
    """SMS through Twilio's Messages API with the official client; one pooled HTTP session."""

    kind = "twilio"
    channels = ("sms",)

    def __init__(self, *, timeout: float):
        super().__init__(timeout=timeout)
        self._http = _RecordingHttpClient(timeout=timeout, pool_connections=True)
        self._client = None

    def check_configuration(self) -> list[str]:
        problems = []
        if not settings.TWILIO_ACCOUNT_SID or not settings.TWILIO_AUTH_TOKEN:
            problems.append("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set")
        if not settings.TWILIO_FROM_NUMBER and not settings.TWILIO_MESSAGING_SERVICE_SID:
            problems.append("TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID must be set")
        return problems

    @property
    def client(self) -> Client:
        if self._client is None:
            problems = self.check_configuration()
            if problems:
                raise ProviderConfigurationError("; ".join(problems))
            client = Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, http_client=self._http)
            if settings.TWILIO_API_BASE_URL:
                client.api.base_url = settings.TWILIO_API_BASE_URL
            self._client = client
        return self._client

    def build_request(self, message: OutboundMessage) -> dict:
        params = {"to": message.to, "body": message.body}
        if settings.TWILIO_MESSAGING_SERVICE_SID:
            params["messaging_service_sid"] = settings.TWILIO_MESSAGING_SERVICE_SID
        else:
            params["from_"] = settings.TWILIO_FROM_NUMBER
        if message.status_callback_url:
            params["status_callback"] = message.status_callback_url
        return params

    def post_request(self, params: dict):
        return self.client.messages.create(**params)

    def parse_response(self, created, message: OutboundMessage) -> SendResult:
        status = STATUS_MAP.get(created.status or "queued") or "sent"
        if status in {"failed", "undelivered"}:
            raise RecipientRejected(
                f"Twilio refused the message ({created.error_code})", code=str(created.error_code or "")
            )
        return SendResult(
            provider_message_id=created.sid,
            status=status,
            response_code=201,
            cost=str(created.price or ""),
        )

    def classify_error(self, exc: Exception) -> ProviderError:
        if isinstance(exc, TwilioRestException):
            return self._classify(exc)
        if isinstance(exc, requests.Timeout):
            return ProviderUnavailable("Twilio did not answer in time.")
        if isinstance(exc, requests.RequestException):
            return ProviderUnavailable(f"Twilio could not be reached: {exc.__class__.__name__}")
        if isinstance(exc, TwilioException):
            return ProviderError(f"Twilio client error: {exc}")
        return super().classify_error(exc)

    def _classify(self, exc: TwilioRestException) -> ProviderError:
        message = f"Twilio answered HTTP {exc.status}" + (f", error {exc.code}" if exc.code else "")
        if exc.code in PERMANENT_ERROR_CODES:
            return RecipientRejected(message, status_code=exc.status, code=str(exc.code))
        response = self._http.last_response
        retry_after = None
        if response is not None and response.headers:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return error_for_status(exc.status, message, retry_after=retry_after, code=str(exc.code or ""))


def verify_signature(*, url: str, params: dict, signature: str) -> None:
    """Raise WebhookSignatureInvalid unless X-Twilio-Signature matches the URL and params."""
    if not settings.TWILIO_AUTH_TOKEN:
        raise WebhookSignatureInvalid("TWILIO_AUTH_TOKEN is not set; callbacks cannot be verified.")
    if not signature or not RequestValidator(settings.TWILIO_AUTH_TOKEN).validate(url, params, signature):
        raise WebhookSignatureInvalid("X-Twilio-Signature does not match.")
