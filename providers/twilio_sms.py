"""Twilio: SMS and WhatsApp through the Messages API, voice calls through the Calls API
(the message read with TwiML <Say>), one adapter over the official client."""

import threading
from collections.abc import Mapping

import requests
from django.conf import settings
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

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

# Twilio's call statuses onto Beacon's delivery statuses. None: nothing to record (the
# call is on its way; Beacon already says "sent" once Twilio has it).
CALL_STATUS_MAP = {
    "queued": None,
    "initiated": None,
    "ringing": None,
    "in-progress": "sent",
    "answered": "sent",
    "completed": "delivered",
    "busy": "undelivered",
    "no-answer": "undelivered",
    "failed": "failed",
    "canceled": "cancelled",
}

# The call progress events Twilio is asked to report, as it names them.
CALL_STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]

# Twilio error codes that no retry can fix: invalid or unreachable numbers, opted out,
# WhatsApp outside the 24-hour session window.
PERMANENT_ERROR_CODES = {
    21211, 21212, 21214, 21217, 21401, 21407, 21408, 21421, 21606, 21610, 21612, 21614, 21617, 63016,
}  # fmt: skip

# What an error code means, where Twilio's number alone does not say what to do.
ERROR_EXPLANATIONS = {
    63016: "outside WhatsApp's 24-hour session window: only an approved template message can be sent",
}

# Beacon locales (a template content's locale) onto the languages <Say> speaks: the
# exact locale first, then its language; anything else is read in US English.
VOICE_LANGUAGES = {
    "en": "en-US",
    "en-us": "en-US",
    "en-gb": "en-GB",
    "es": "es-ES",
    "es-es": "es-ES",
    "es-mx": "es-MX",
    "fr": "fr-FR",
    "fr-fr": "fr-FR",
    "fr-ca": "fr-CA",
    "pt": "pt-BR",
    "pt-br": "pt-BR",
    "pt-pt": "pt-PT",
    "de": "de-DE",
    "de-de": "de-DE",
}
DEFAULT_VOICE_LANGUAGE = "en-US"

WHATSAPP_PREFIX = "whatsapp:"


def voice_language(locale: str) -> str:
    """The <Say> language for a content locale ("es" -> "es-ES", "" -> "en-US")."""
    wanted = (locale or "").strip().replace("_", "-").lower()
    return VOICE_LANGUAGES.get(wanted) or VOICE_LANGUAGES.get(wanted.split("-")[0]) or DEFAULT_VOICE_LANGUAGE


def voice_twiml(text: str, *, locale: str) -> str:
    """The TwiML that reads `text` once in the locale's language; the text is escaped."""
    response = VoiceResponse()
    response.say(text, language=voice_language(locale))
    return str(response)


def whatsapp_address(number: str) -> str:
    return number if number.startswith(WHATSAPP_PREFIX) else f"{WHATSAPP_PREFIX}{number}"


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
    """Twilio with the official client over one pooled HTTP session: SMS and WhatsApp
    (`whatsapp:` addresses) through the Messages API, voice calls through the Calls API
    reading the message with <Say> in the delivery's language. The provider message id is
    the Message SID or the Call SID; statuses come back through signed callbacks.

    The account and senders are its configuration's (`account_sid`, `auth_token`,
    `from_number`, ...), by default TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, ..."""

    kind = "twilio"
    channels = ("sms", "whatsapp", "voice")
    setting_names = {
        "account_sid": "TWILIO_ACCOUNT_SID",
        "auth_token": "TWILIO_AUTH_TOKEN",
        "from_number": "TWILIO_FROM_NUMBER",
        "messaging_service_sid": "TWILIO_MESSAGING_SERVICE_SID",
        "whatsapp_from": "TWILIO_WHATSAPP_FROM",
        "voice_from": "TWILIO_VOICE_FROM",
        "api_base_url": "TWILIO_API_BASE_URL",
    }

    def __init__(self, *, timeout: float, config: Mapping | None = None):
        super().__init__(timeout=timeout, config=config)
        self._http = _RecordingHttpClient(timeout=timeout, pool_connections=True)
        self._client = None

    def check_configuration(self) -> list[str]:
        """The credentials every channel needs; senders are per channel."""
        if not self.config["account_sid"] or not self.config["auth_token"]:
            return [f"{self.label('account_sid')} and {self.label('auth_token')} must be set"]
        return []

    def check_channel_configuration(self, channel: str) -> list[str]:
        problems = self.check_configuration()
        sender_problem = self._sender_problem(channel)
        return problems + [sender_problem] if sender_problem else problems

    def _sender_problem(self, channel: str) -> str:
        # The senders each channel may use, the preferred first.
        senders = {
            "whatsapp": ("whatsapp_from", "messaging_service_sid"),
            "voice": ("voice_from", "from_number"),
            "sms": ("from_number", "messaging_service_sid"),
        }.get(channel)
        if senders and not any(self.config[name] for name in senders):
            return f"{self.label(senders[0])} or {self.label(senders[1])} must be set"
        return ""

    @property
    def client(self) -> Client:
        if self._client is None:
            problems = self.check_configuration()
            if problems:
                raise ProviderConfigurationError("; ".join(problems))
            base_url = self.configured_url("api_base_url")
            client = Client(self.config["account_sid"], self.config["auth_token"], http_client=self._http)
            if base_url:
                client.api.base_url = base_url
            self._client = client
        return self._client

    def build_request(self, message: OutboundMessage) -> dict:
        """The arguments of the client's messages.create(), or of calls.create() for voice."""
        sender_problem = self._sender_problem(message.channel)
        if sender_problem:
            raise ProviderConfigurationError(sender_problem)
        if message.channel == "voice":
            return self._call_params(message)
        params = {"to": message.to, "body": message.body}
        if message.channel == "whatsapp":
            params["to"] = whatsapp_address(message.to)
            if self.config["whatsapp_from"]:
                params["from_"] = whatsapp_address(self.config["whatsapp_from"])
            else:
                params["messaging_service_sid"] = self.config["messaging_service_sid"]
        elif self.config["messaging_service_sid"]:
            params["messaging_service_sid"] = self.config["messaging_service_sid"]
        else:
            params["from_"] = self.config["from_number"]
        if message.status_callback_url:
            params["status_callback"] = message.status_callback_url
        return params

    def _call_params(self, message: OutboundMessage) -> dict:
        params = {
            "to": message.to,
            "from_": self.config["voice_from"] or self.config["from_number"],
            "twiml": voice_twiml(message.body, locale=message.locale),
            # Answered by a person or a machine, reported in the status callbacks.
            "machine_detection": "Enable",
        }
        if message.status_callback_url:
            params["status_callback"] = message.status_callback_url
            params["status_callback_event"] = CALL_STATUS_EVENTS
        return params

    def post_request(self, params: dict):
        if "twiml" in params:  # a call: only calls read TwiML
            return self.client.calls.create(**params)
        return self.client.messages.create(**params)

    def parse_response(self, created, message: OutboundMessage) -> SendResult:
        if message.channel == "voice":
            status = CALL_STATUS_MAP.get(created.status or "queued") or "sent"
            if status in {"failed", "undelivered", "cancelled"}:
                raise RecipientRejected(f"Twilio did not place the call ({created.status})")
            return SendResult(
                provider_message_id=created.sid, status="sent", response_code=201, cost=str(created.price or "")
            )
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
        if exc.code in ERROR_EXPLANATIONS:
            message += f": {ERROR_EXPLANATIONS[exc.code]}"
        if exc.code in PERMANENT_ERROR_CODES:
            return RecipientRejected(message, status_code=exc.status, code=str(exc.code))
        response = self._http.last_response
        retry_after = None
        if response is not None and response.headers:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return error_for_status(exc.status, message, retry_after=retry_after, code=str(exc.code or ""))


def verify_signature(*, url: str, params: dict, signature: str, auth_token: str | None = None) -> None:
    """Raise WebhookSignatureInvalid unless X-Twilio-Signature matches the URL and params,
    signed with `auth_token` (a provider record's), by default TWILIO_AUTH_TOKEN's."""
    if auth_token is None:
        auth_token = settings.TWILIO_AUTH_TOKEN
        if not auth_token:
            raise WebhookSignatureInvalid("TWILIO_AUTH_TOKEN is not set; callbacks cannot be verified.")
    elif not auth_token:
        raise WebhookSignatureInvalid("No auth token is set; callbacks cannot be verified.")
    if not signature or not RequestValidator(auth_token).validate(url, params, signature):
        raise WebhookSignatureInvalid("X-Twilio-Signature does not match.")
