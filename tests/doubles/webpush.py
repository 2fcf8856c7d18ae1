"""A local double of a Web Push service (RFC 8030), spoken to by the real `pywebpush`.

`subscribe()` plays the browser: it makes a P-256 key pair and an auth secret and returns a
PushSubscription's JSON, `{"endpoint": "{base_url}/push/<id>", "keys": {"p256dh", "auth"}}`,
keeping the private key so that the double can decrypt what is pushed to it.

POST /push/<id> is checked as a push service does:
- VAPID (RFC 8292): `Authorization: vapid t=<ES256 JWT>, k=<public key>`. Missing or of another
  scheme: 401 "unauthorized"; a bad signature, an `aud` other than the endpoint's origin, an
  `exp` past or more than 24 h ahead, a `sub` neither mailto: nor https:, or (with
  `subscribe(application_server_key=…)`) another key: 403 "invalid vapid".
- A TTL header (400 without), Urgency and Topic if given (400 if invalid), a body of at most
  4096 bytes (413), encrypted with Content-Encoding aes128gcm (RFC 8291; 400 otherwise). A push
  without a body is allowed, as RFC 8030 allows it. A body the subscription's keys cannot
  decrypt is answered 400: real services can't tell, but the browser would drop it.
Then the push is recorded (`received()`: endpoint, path, headers, decrypted payload, VAPID claims
and key, and the status answered) and answered 201 Created with a Location, unless the
subscription was made with a fixed answer (`subscribe(answer=(410, {}, None))`), was
`unsubscribe`d (410) or `answer_next` scripted the next answers. Unknown ids get 404.

The sender's side: the double also holds a VAPID key pair. `webpush_settings(double)` gives
the app's settings; VAPID_PRIVATE_KEY there is the private key as base64url (no padding) DER
PKCS#8, on one line: the form `pywebpush.webpush(vapid_private_key=...)` takes as a string,
since it hands strings that are not file paths to `py_vapid.Vapid.from_string`, which reads
base64url DER or a raw 32-byte key but not PEM. `vapid_private_key_pem` is the same key as PEM
(for `Vapid.from_pem` or a key file), `vapid_public_key` the applicationServerKey.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import struct
import time
import uuid
from urllib.parse import urlsplit

import http_ece
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.doubles.http import HttpDouble

PUSH_PATH = re.compile(r"^/push/(?P<id>[A-Za-z0-9_-]+)$")
VAPID_SUBJECT = "mailto:ops@beacon.test"
MAX_BODY_BYTES = 4096
MAX_VAPID_LIFETIME = 24 * 60 * 60  # RFC 8292: exp no more than 24 hours ahead
URGENCIES = ("very-low", "low", "normal", "high")
TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

# A push service's answers, as (status, headers, body), for `answer_next` and `subscribe(answer=...)`.
GONE = (410, {}, "push subscription has unsubscribed or expired.")
NOT_FOUND = (404, {}, "push subscription not found")
UNAUTHORIZED = (401, {}, "unauthorized")
INVALID_VAPID = (403, {}, "invalid vapid")
PAYLOAD_TOO_LARGE = (413, {}, "payload too large")
SERVER_ERROR = (500, {}, "internal error")
UNAVAILABLE = (503, {}, "service unavailable")


def too_many_requests(seconds: int) -> tuple[int, dict, str]:
    return 429, {"Retry-After": str(seconds)}, "too many requests"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


class WebPushDouble(HttpDouble):
    def __init__(self):
        super().__init__()
        self.subscriptions: dict[str, dict] = {}  # id -> {"private_key", "auth", "answer", "key", "gone"}
        self.connections = 0  # TCP connections accepted since the last reset
        self.vapid_key = ec.generate_private_key(ec.SECP256R1())

    # --- the test's side -----------------------------------------------------------

    @property
    def vapid_private_key(self) -> str:
        """The sender's VAPID private key as base64url DER (PKCS#8): what `webpush()` takes."""
        return b64url(
            self.vapid_key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    @property
    def vapid_private_key_pem(self) -> str:
        return self.vapid_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    @property
    def vapid_public_key(self) -> str:
        """The applicationServerKey a page would subscribe with: base64url uncompressed point."""
        return b64url(_raw_public_key(self.vapid_key))

    def vapid_settings(self) -> dict:
        return webpush_settings(self)

    def subscribe(self, answer: tuple | None = None, *, application_server_key: str | None = None) -> dict:
        """A browser's PushSubscription JSON. `answer` fixes every answer to its pushes;
        `application_server_key` refuses pushes signed with another VAPID key (403)."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        sid = secrets.token_urlsafe(24)
        with self.lock:
            self.subscriptions[sid] = {
                "private_key": private_key,
                "auth": auth,
                "answer": answer,
                "key": application_server_key,
                "gone": False,
            }
        return {
            "endpoint": f"{self.base_url}/push/{sid}",
            "keys": {"p256dh": b64url(_raw_public_key(private_key)), "auth": b64url(auth)},
        }

    def unsubscribe(self, subscription: dict | str) -> None:
        """The browser dropped it: its pushes are answered 410 Gone from now on."""
        with self.lock:
            self.subscriptions[self._id(subscription)]["gone"] = True

    def answer_next(self, *answers: tuple[int, dict, object]) -> None:
        """Answer the next pushes (to any subscription) with these (status, headers, body), in order."""
        with self.lock:
            self.script.extend(answers)

    def received(self, endpoint: str | None = None) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if endpoint is None or r["endpoint"] == endpoint]

    def delivered(self, endpoint: str | None = None) -> list[dict]:
        """The pushes answered 201."""
        return [r for r in self.received(endpoint) if r["status"] == 201]

    def reset(self) -> None:
        """Forget the pushes, scripts and connection count; the subscriptions stay."""
        super().reset()
        with self.lock:
            self.connections = 0

    def _id(self, subscription: dict | str) -> str:
        endpoint = subscription["endpoint"] if isinstance(subscription, dict) else subscription
        return urlsplit(endpoint).path.rsplit("/", 1)[-1]

    # --- the HTTP side -------------------------------------------------------------

    def answer(self, path: str, headers, body: bytes):
        match = PUSH_PATH.match(path)
        with self.lock:
            subscription = self.subscriptions.get(match["id"]) if match else None
        if subscription is None:
            return NOT_FOUND
        endpoint = f"{self.base_url}{path}"
        claims, key, refusal = self._check_vapid(headers.get("Authorization", ""), subscription)
        if refusal is not None:
            return refusal
        refusal = self._check_headers(headers, body)
        if refusal is not None:
            return refusal
        payload = None
        if body:
            try:
                plain = http_ece.decrypt(
                    body, private_key=subscription["private_key"], auth_secret=subscription["auth"], version="aes128gcm"
                )
            except (http_ece.ECEException, ValueError, TypeError, struct.error):
                return 400, {}, "payload could not be decrypted with the subscription's keys"
            payload = self._decode(plain)
        record = {
            "endpoint": endpoint,
            "path": path,
            "headers": {
                name: headers[name]
                for name in ("ttl", "urgency", "topic", "content-encoding")
                if headers.get(name) is not None
            },
            "payload": payload,
            "vapid_claims": claims,
            "vapid_key": key,
            "status": None,
        }
        with self.lock:
            scripted = self.next_scripted()
            self.requests.append(record)
        if scripted is not None:
            status, extra, answer = scripted
        elif subscription["gone"]:
            status, extra, answer = GONE
        elif subscription["answer"] is not None:
            status, extra, answer = subscription["answer"]
        else:
            location = f"{self.base_url}/m/{uuid.uuid4().hex}"
            status, extra, answer = 201, {"Location": location, "TTL": headers["ttl"]}, None
        with self.lock:
            record["status"] = status
        return status, extra, answer

    def _check_vapid(self, authorization: str, subscription: dict):
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() != "vapid":
            return None, None, UNAUTHORIZED
        parts = dict(part.strip().split("=", 1) for part in params.split(",") if "=" in part)
        token, key = parts.get("t", ""), parts.get("k", "")
        try:
            encoded_header, encoded_claims, encoded_signature = token.split(".")
            header = json.loads(b64url_decode(encoded_header))
            claims = json.loads(b64url_decode(encoded_claims))
            signature = b64url_decode(encoded_signature)
            if header.get("alg") != "ES256" or len(signature) != 64 or not isinstance(claims, dict):
                raise InvalidSignature
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
            public_key.verify(
                encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")),
                f"{encoded_header}.{encoded_claims}".encode(),
                ec.ECDSA(hashes.SHA256()),
            )
        except (ValueError, TypeError, InvalidSignature):
            return None, key, INVALID_VAPID
        now = time.time()
        exp = claims.get("exp")
        if (
            claims.get("aud") != self.base_url
            or not isinstance(exp, int | float)
            or not now < exp <= now + MAX_VAPID_LIFETIME
            or not str(claims.get("sub", "")).startswith(("mailto:", "https:"))
            or (subscription["key"] is not None and subscription["key"] != key)
        ):
            return claims, key, INVALID_VAPID
        return claims, key, None

    @staticmethod
    def _check_headers(headers, body: bytes):
        ttl = headers.get("TTL")
        if ttl is None or not ttl.strip().isdigit():
            return 400, {}, "missing or invalid TTL header"
        urgency = headers.get("Urgency")
        if urgency is not None and urgency not in URGENCIES:
            return 400, {}, "invalid Urgency header"
        topic = headers.get("Topic")
        if topic is not None and not TOPIC.match(topic):
            return 400, {}, "invalid Topic header"
        if len(body) > MAX_BODY_BYTES:
            return PAYLOAD_TOO_LARGE
        if body and (headers.get("Content-Encoding") or "").lower() != "aes128gcm":
            return 400, {}, "unsupported Content-Encoding: use aes128gcm"
        return None

    @staticmethod
    def _decode(plain: bytes):
        try:
            return json.loads(plain)
        except ValueError:
            return plain.decode("utf-8", "replace")

    def _handler(self):
        base = super()._handler()
        double = self

        class Handler(base):
            def setup(self):
                super().setup()
                with double.lock:
                    double.connections += 1

        return Handler


def webpush_settings(double: WebPushDouble) -> dict:
    """The Django settings that let the app push to the double's subscriptions."""
    return {
        "VAPID_PRIVATE_KEY": double.vapid_private_key,
        "VAPID_SUBJECT": VAPID_SUBJECT,
        "BEACON_ALLOW_PRIVATE_TARGETS": True,
    }


@pytest.fixture(scope="session")
def webpush_server():
    double = WebPushDouble().start()
    yield double
    double.stop()
