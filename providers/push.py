"""Push: Firebase Cloud Messaging HTTP v1 for app tokens (iOS, Android) and Web Push
(VAPID) for browsers' subscriptions. The push channel's deliveries go to one of them by
their address (see the channel spec's `address_routes`).

FCM goes through pyfcm: its service-account credentials, its OAuth token on a kept-open
session and its request body (`parse_payload`). Not through its `send_request`, which
sleeps in place on Retry-After and whose default transport retries 502/503 by itself:
a worker must not block, so the session here never retries and a throttling answer
becomes the delivery's scheduled retry (dispatch's throttle release).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from google.auth import exceptions as google_errors
from google.oauth2 import service_account
from py_vapid import Vapid
from pyfcm import FCMNotification
from pyfcm.errors import InvalidDataError
from pywebpush import WebPusher, WebPushException
from requests.adapters import HTTPAdapter

from .base import (
    OutboundMessage,
    Provider,
    ProviderConfigurationError,
    ProviderError,
    ProviderUnavailable,
    RecipientRejected,
    SendResult,
    error_for_status,
    parse_retry_after,
)
from .channels import CHANNELS
from .push_payload import WEB_PUSH_OVERHEAD, encoded, fcm_message_fields, web_push_payload
from .urlguard import UnsafeTarget, check_url, guarded_session

logger = logging.getLogger("beacon.push")

FCM_SCOPES = ["https://www.googleapis.com/auth/firebase.messaging"]
PAYLOAD_LIMIT = CHANNELS["push"].max_payload_bytes

# FCM's error codes (google.firebase.fcm.v1.FcmError) that say the token is gone for
# good: the device is deactivated. INVALID_ARGUMENT is one only when it is about the token.
GONE_CODES = {"UNREGISTERED", "NOT_FOUND"}
RETRY_CODES = {"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"}


def _too_big(size: int) -> RecipientRejected:
    return RecipientRejected(
        f"The push payload is {size} bytes; the limit is {PAYLOAD_LIMIT}.", code="payload_too_large"
    )


class FcmProvider(Provider):
    """Firebase Cloud Messaging HTTP v1, with the service account of FCM_SERVICE_ACCOUNT_JSON
    (or the file FCM_SERVICE_ACCOUNT_FILE) at FCM_API_BASE_URL, or those of its configuration
    (`service_account_json`, `project_id`, `api_base_url`)."""

    kind = "fcm"
    channels = ("push",)
    # The service account's JSON; with none, settings' FCM_SERVICE_ACCOUNT_FILE is read
    # when needed (`_service_account`).
    setting_names = {
        "service_account_json": "FCM_SERVICE_ACCOUNT_JSON",
        "project_id": "FCM_PROJECT_ID",
        "api_base_url": "FCM_API_BASE_URL",
    }

    def __init__(self, *, timeout: float, config: Mapping | None = None):
        super().__init__(timeout=timeout, config=config)
        self._client: FCMNotification | None = None
        self._lock = threading.Lock()

    # --- configuration -------------------------------------------------------------

    def _service_account(self) -> dict:
        given = self.config["service_account_json"]
        if isinstance(given, Mapping):
            info = dict(given)
        elif given:
            try:
                info = json.loads(given)
            except (TypeError, ValueError):
                raise ProviderConfigurationError(f"{self.label('service_account_json')} is not JSON.") from None
        elif settings.FCM_SERVICE_ACCOUNT_FILE and not self.own_credentials:
            try:
                with open(settings.FCM_SERVICE_ACCOUNT_FILE, encoding="utf-8") as handle:
                    info = json.load(handle)
            except (OSError, ValueError) as exc:
                raise ProviderConfigurationError(
                    f"FCM_SERVICE_ACCOUNT_FILE cannot be read: {exc.__class__.__name__}"
                ) from None
        elif self.overrides:
            raise ProviderConfigurationError("Set service_account_json.")
        else:
            raise ProviderConfigurationError("Set FCM_SERVICE_ACCOUNT_JSON or FCM_SERVICE_ACCOUNT_FILE.")
        if not isinstance(info, dict) or not info.get("private_key") or not info.get("client_email"):
            raise ProviderConfigurationError("The FCM service account lacks private_key or client_email.")
        if not (self.config["project_id"] or info.get("project_id")):
            raise ProviderConfigurationError(
                f"The FCM service account has no project_id; set {self.label('project_id')}."
            )
        if "service_account_json" in self.overrides and info.get("token_uri"):
            # google-auth posts to the account's token_uri: a record's is an outbound URL.
            try:
                check_url(str(info["token_uri"]))
            except UnsafeTarget as exc:
                raise ProviderConfigurationError(
                    f"The FCM service account's token_uri is refused: {exc.message}"
                ) from None
        return info

    def check_configuration(self) -> list[str]:
        try:
            self._service_account()
        except ProviderConfigurationError as exc:
            return [exc.message]
        return []

    def client(self) -> FCMNotification:
        """pyfcm's client, built once: its credentials fetch and renew the OAuth token, and
        its session (one per thread) keeps the connection to FCM open."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    info = self._service_account()
                    base_url = self.configured_url("api_base_url")
                    if self.config["project_id"]:
                        # pyfcm prefers the credentials' project to the one it is given.
                        info = {**info, "project_id": self.config["project_id"]}
                    try:
                        credentials = service_account.Credentials.from_service_account_info(info, scopes=FCM_SCOPES)
                    except (ValueError, KeyError) as exc:
                        raise ProviderConfigurationError(
                            f"The FCM service account is not usable: {exc.__class__.__name__}"
                        ) from None
                    client = FCMNotification(
                        credentials=credentials,
                        project_id=info["project_id"],
                        # No retries in the transport: a retry is the delivery's, scheduled.
                        adapter=HTTPAdapter(max_retries=0, pool_maxsize=4),
                    )
                    client.FCM_END_POINT_BASE = f"{base_url.rstrip('/')}/v1/projects"
                    self._client = client
        return self._client

    # --- the flow ------------------------------------------------------------------

    def build_request(self, message: OutboundMessage) -> bytes:
        fields = fcm_message_fields(
            title=message.subject, body=message.body, options=message.options, reference=message.reference
        )
        size = len(encoded(fields))
        if size > PAYLOAD_LIMIT:
            raise _too_big(size)
        return self.client().parse_payload(
            fcm_token=message.to,
            notification_title=fields.get("notification", {}).get("title"),
            notification_body=fields.get("notification", {}).get("body"),
            notification_image=fields.get("notification", {}).get("image"),
            data_payload=fields.get("data"),
            android_config=fields.get("android"),
            apns_config=fields.get("apns"),
            webpush_config=fields.get("webpush"),
        )

    def post_request(self, payload: bytes) -> requests.Response:
        client = self.client()
        response = self._session(client).post(client.fcm_end_point, data=payload, timeout=self.timeout)
        if client._is_access_token_expired(response):
            # The OAuth token expired early: fetch a new one and send once more, now.
            client.thread_local.token_expiry = 0
            response = self._session(client).post(client.fcm_end_point, data=payload, timeout=self.timeout)
        return response

    @staticmethod
    def _session(client: FCMNotification) -> requests.Session:
        """pyfcm's session for this thread (its token renewed when due). It reads no proxy
        settings from the environment: that look-up costs a quarter of each send's CPU."""
        session = client.requests_session
        session.trust_env = False
        return session

    def parse_response(self, response: requests.Response, message: OutboundMessage) -> SendResult:
        if response.status_code == 200:
            try:
                name = str(response.json().get("name") or "")
            except ValueError:
                name = ""
            return SendResult(provider_message_id=name[:200], status="sent", response_code=200)
        raise self.refusal(response)

    def refusal(self, response: requests.Response) -> ProviderError:
        status, fcm_code, text, about_token = fcm_error(response)
        message = f"FCM answered HTTP {status} {fcm_code}: {text}".strip()
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if fcm_code in GONE_CODES or (fcm_code == "INVALID_ARGUMENT" and about_token):
            return RecipientRejected(message, status_code=status, code=fcm_code, gone=True)
        if fcm_code in RETRY_CODES or status == 429 or status >= 500:
            return ProviderUnavailable(message, status_code=status, retry_after=retry_after, code=fcm_code)
        if fcm_code == "SENDER_ID_MISMATCH":
            # The token belongs to another Firebase project: this one cannot reach it.
            return RecipientRejected(message, status_code=status, code=fcm_code)
        if fcm_code == "INVALID_ARGUMENT":
            return RecipientRejected(message, status_code=status, code=fcm_code)
        return error_for_status(status, message, retry_after=retry_after, code=fcm_code)

    def classify_error(self, exc: Exception) -> ProviderError:
        cause = exc.args[0] if isinstance(exc, InvalidDataError) and exc.args else exc
        if isinstance(cause, google_errors.RefreshError):
            return ProviderConfigurationError(f"FCM refused the service account's token request: {cause}")
        if isinstance(cause, google_errors.TransportError):
            return ProviderUnavailable("The FCM token endpoint could not be reached.")
        if isinstance(exc, requests.Timeout):
            return ProviderUnavailable("FCM did not answer in time.")
        if isinstance(exc, requests.RequestException):
            return ProviderUnavailable(f"FCM could not be reached: {exc.__class__.__name__}")
        return super().classify_error(exc)


def fcm_error(response: requests.Response) -> tuple[int, str, str, bool]:
    """(HTTP status, FCM error code, its message, whether it is about the token) from FCM
    v1's error body: {"error": {"code", "message", "status", "details": [...]}}."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if not isinstance(error, dict):
        error = {}
    code, about_token = str(error.get("status") or ""), False
    for detail in error.get("details") or []:
        if not isinstance(detail, dict):
            continue
        if detail.get("@type", "").endswith("FcmError") and detail.get("errorCode"):
            code = str(detail["errorCode"])
        for violation in detail.get("fieldViolations") or []:
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                about_token = True
    text = str(error.get("message") or response.reason or "")[:300]
    about_token = about_token or "registration token" in text.lower()
    return response.status_code, code, text, about_token


class WebPushProvider(Provider):
    """Web Push to a browser's subscription (RFC 8030), its payload encrypted for the
    subscription's keys (RFC 8291) and signed with the VAPID key of VAPID_PRIVATE_KEY, or
    its configuration's `vapid_private_key` (RFC 8292). The endpoint is the recipient's, so
    it is an outbound URL: guarded when registered, before each send and at connect time,
    and redirects are not followed."""

    kind = "webpush"
    channels = ("push",)
    recipient_endpoints = True
    setting_names = {
        "vapid_private_key": "VAPID_PRIVATE_KEY",
        "vapid_subject": "VAPID_SUBJECT",
        "ttl_seconds": "WEBPUSH_TTL_SECONDS",
    }
    # A signed VAPID token is good for this long; it is reused until an hour before.
    TOKEN_SECONDS = 12 * 3600

    def __init__(self, *, timeout: float, config: Mapping | None = None):
        super().__init__(timeout=timeout, config=config)
        self._session = guarded_session()
        self._vapid: Vapid | None = None
        self._tokens: dict[str, tuple[float, dict]] = {}
        self._lock = threading.Lock()

    def check_configuration(self) -> list[str]:
        try:
            self.vapid()
        except ProviderConfigurationError as exc:
            return [exc.message]
        return []

    def vapid(self) -> Vapid:
        if self._vapid is None:
            key = str(self.config["vapid_private_key"] or "").strip()
            if not key:
                raise ProviderConfigurationError(
                    f"Set {self.label('vapid_private_key')} (and {self.label('vapid_subject')}) for Web Push."
                )
            if not self._subject().startswith(("mailto:", "https://")):
                raise ProviderConfigurationError(f"{self.label('vapid_subject')} must be a mailto: or https: URL.")
            self._ttl()
            try:
                if "-----BEGIN" in key:
                    self._vapid = Vapid(serialization.load_pem_private_key(key.encode(), password=None))
                else:
                    self._vapid = Vapid.from_string(key)  # base64url DER, or the raw 32 bytes
            except Exception as exc:  # noqa: BLE001 - py_vapid raises what cryptography does
                raise ProviderConfigurationError(
                    f"{self.label('vapid_private_key')} is not a usable key: {exc.__class__.__name__}"
                ) from None
        return self._vapid

    def _subject(self) -> str:
        return str(self.config["vapid_subject"] or "")

    def _ttl(self) -> int:
        """How long the push service keeps an undelivered message, in seconds."""
        ttl = self.config["ttl_seconds"]
        try:
            if isinstance(ttl, bool) or int(ttl) < 0 or int(ttl) != float(ttl):
                raise ValueError
        except (TypeError, ValueError):
            raise ProviderConfigurationError(
                f"{self.label('ttl_seconds')} must be a whole number of seconds."
            ) from None
        return int(ttl)

    def _authorization(self, endpoint: str) -> dict:
        """The VAPID header for the endpoint's push service, signed once per origin and
        token lifetime rather than once per message."""
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        with self._lock:
            cached = self._tokens.get(audience)
            if cached and cached[0] - 3600 > now:
                return cached[1]
            expires = int(now) + self.TOKEN_SECONDS
            headers = self.vapid().sign({"sub": self._subject(), "aud": audience, "exp": expires})
            self._tokens[audience] = (expires, headers)
            return headers

    def build_request(self, message: OutboundMessage) -> dict:
        check_url(message.to)
        keys = (message.target or {}).get("subscription") or {}
        if not keys.get("p256dh") or not keys.get("auth"):
            raise RecipientRejected("The Web Push subscription has no keys (p256dh, auth).", code="no_keys")
        body = encoded(
            web_push_payload(
                title=message.subject, body=message.body, options=message.options, reference=message.reference
            )
        )
        if len(body) + WEB_PUSH_OVERHEAD > PAYLOAD_LIMIT:
            raise _too_big(len(body) + WEB_PUSH_OVERHEAD)
        urgency = "low" if message.options.get("silent") else "normal"
        return {
            "subscription": {"endpoint": message.to, "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}},
            "body": body,
            "headers": {**self._authorization(message.to), "Urgency": urgency},
        }

    def post_request(self, request: dict) -> requests.Response:
        ttl = self._ttl()
        try:
            pusher = WebPusher(request["subscription"], requests_session=self._session)
            return pusher.send(request["body"], request["headers"], ttl=ttl, timeout=self.timeout)
        except (WebPushException, ValueError) as exc:
            if isinstance(exc, requests.RequestException):
                raise  # requests' own (an invalid URL is a ValueError too): classified below
            # Keys of the wrong length, or a p256dh off the curve (found when encrypting).
            raise RecipientRejected(
                "The Web Push subscription's keys are not usable.", code="bad_subscription"
            ) from None

    def parse_response(self, response: requests.Response, message: OutboundMessage) -> SendResult:
        status = response.status_code
        host = urlsplit(message.to).hostname or "?"
        if 200 <= status < 300:
            location = response.headers.get("Location", "")
            return SendResult(
                provider_message_id=location.rsplit("/", 1)[-1][:200], status="sent", response_code=status
            )
        text = f"The push service at {host} answered HTTP {status}"
        if 300 <= status < 400:
            raise RecipientRejected(f"{text}: a redirect, which is not followed", status_code=status, code="redirect")
        if status in (404, 410):
            raise RecipientRejected(f"{text}: the subscription is gone", status_code=status, code="gone", gone=True)
        if status == 413:
            raise RecipientRejected(f"{text}: the payload is too large", status_code=status, code="payload_too_large")
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise error_for_status(status, text, retry_after=retry_after, code=str(status))

    def classify_error(self, exc: Exception) -> ProviderError:
        # requests' messages carry the endpoint URL, the subscription's secret: only its class.
        if isinstance(exc, UnsafeTarget):
            return RecipientRejected(f"Web Push endpoint refused: {exc.message}", code="unsafe_target")
        if isinstance(exc, requests.Timeout):
            return ProviderUnavailable("The push service did not answer in time.")
        if isinstance(exc, requests.RequestException):
            return ProviderUnavailable(f"The push service could not be reached: {exc.__class__.__name__}")
        return super().classify_error(exc)
