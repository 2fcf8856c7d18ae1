"""A local double of Firebase Cloud Messaging's HTTP v1 API and of Google's OAuth 2.0
token endpoint, spoken to by the real `google-auth` and `pyfcm` clients.

The double owns a service account: `service_account_info()` is a real-looking key file
whose `token_uri` is the double's own POST /token, where google-auth trades its RS256-signed
JWT assertion for an access token ("ya29.…"), as at oauth2.googleapis.com. The assertion's
signature, issuer, audience, lifetime and scope are checked. Note that google-auth always
signs the assertion for the audience https://oauth2.googleapis.com/token, whatever the
token_uri, so that audience is accepted (as is the token_uri itself).

POST /v1/projects/{project}/messages:send takes a bearer token it issued and answers as FCM
does: `{"name": "projects/{project}/messages/{id}"}`, or FCM's error JSON
(`{"error": {"code", "message", "status", "details": [...FcmError errorCode...]}}`). Device
tokens starting with a magic prefix choose the error, as real tokens would:

    unregistered-…  404 NOT_FOUND / UNREGISTERED       (the app was uninstalled)
    notfound-…      404 NOT_FOUND, no details
    invalid-…       400 INVALID_ARGUMENT / INVALID_ARGUMENT, with a BadRequest field violation
    quota-…         429 RESOURCE_EXHAUSTED / QUOTA_EXCEEDED, Retry-After: 30
    unavailable-…   503 UNAVAILABLE / UNAVAILABLE
    internal-…      500 INTERNAL / INTERNAL
    mismatch-…      403 PERMISSION_DENIED / SENDER_ID_MISMATCH

`answer_next(*answers)` scripts the next answers of the send endpoint whatever the token
(after authentication and validation). Every authenticated send is recorded, whatever it was
answered, with its "status": `received()`; `delivered()` keeps the ones answered 200.
`expire_tokens()` makes every token issued so far expire (401 ACCESS_TOKEN_EXPIRED, which
pyfcm answers by fetching a new token and sending again). `connections` counts the TCP
connections accepted since the last reset, to assert that a client keeps its connection.

Beware with pyfcm: its `send_request` sleeps for Retry-After and sends again, forever, and its
session retries 502/503 ten times with exponential backoff: don't `notify` a quota- or
unavailable- token through pyfcm in a test.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
import uuid
from urllib.parse import parse_qsl

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.doubles.http import HttpDouble

PROJECT_ID = "beacon-test"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_AUDIENCES = ("https://oauth2.googleapis.com/token", "https://www.googleapis.com/oauth2/v4/token")
JWT_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFETIME = 3600  # seconds, as Google issues them
MAX_MESSAGE_BYTES = 4096  # notification + data + android + apns + webpush, as JSON
SEND_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"

NOT_FOUND_MESSAGE = "Requested entity was not found."
INVALID_ARGUMENT_MESSAGE = "Request contains an invalid argument."
INVALID_TOKEN_MESSAGE = "The registration token is not a valid FCM registration token"


def fcm_error(
    code: int,
    status: str,
    message: str,
    error_code: str | None = None,
    *,
    details: tuple[dict, ...] = (),
    headers: dict | None = None,
) -> tuple[int, dict, dict]:
    """An answer in FCM v1's error shape; `error_code` adds the FcmError detail."""
    listed = ([{"@type": FCM_ERROR, "errorCode": error_code}] if error_code else []) + list(details)
    return code, dict(headers or {}), {"error": {"code": code, "message": message, "status": status, "details": listed}}


def field_violation(field: str, description: str) -> dict:
    return {"@type": BAD_REQUEST, "fieldViolations": [{"field": field, "description": description}]}


def unauthenticated(reason: str) -> tuple[int, dict, dict]:
    """Google's 401: reason ACCESS_TOKEN_EXPIRED (pyfcm refreshes and resends) or CREDENTIALS_MISSING."""
    if reason == "CREDENTIALS_MISSING":
        message = (
            "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie "
            "or other valid authentication credential. "
            "See https://developers.google.com/identity/sign-in/web/devconsole-project."
        )
    else:
        message = (
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
            "or other valid authentication credential. "
            "See https://developers.google.com/identity/sign-in/web/devconsole-project."
        )
    return fcm_error(
        401,
        "UNAUTHENTICATED",
        message,
        details=({"@type": ERROR_INFO, "reason": reason, "domain": "googleapis.com"},),
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
    )


def quota_exceeded(seconds: int = 30) -> tuple[int, dict, dict]:
    return fcm_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Send requests' and limit 'Send requests per minute' of service "
        "'fcm.googleapis.com'.",
        "QUOTA_EXCEEDED",
        headers={"Retry-After": str(seconds)},
    )


# FCM's real answers, as (status, headers, body), for `answer_next`.
UNREGISTERED = fcm_error(404, "NOT_FOUND", NOT_FOUND_MESSAGE, "UNREGISTERED")
NOT_FOUND = fcm_error(404, "NOT_FOUND", NOT_FOUND_MESSAGE)
INVALID_REGISTRATION = fcm_error(
    400,
    "INVALID_ARGUMENT",
    INVALID_TOKEN_MESSAGE,
    "INVALID_ARGUMENT",
    details=(field_violation("message.token", INVALID_TOKEN_MESSAGE),),
)
INVALID_ARGUMENT = fcm_error(400, "INVALID_ARGUMENT", INVALID_ARGUMENT_MESSAGE, "INVALID_ARGUMENT")
MESSAGE_TOO_BIG = fcm_error(
    400,
    "INVALID_ARGUMENT",
    INVALID_ARGUMENT_MESSAGE,
    "INVALID_ARGUMENT",
    details=(field_violation("message", "Message is too big"),),
)
QUOTA_EXCEEDED = quota_exceeded(30)
UNAVAILABLE = fcm_error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")
INTERNAL = fcm_error(500, "INTERNAL", "Internal error encountered.", "INTERNAL")
SENDER_ID_MISMATCH = fcm_error(
    403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"
)  # the token belongs to another project
THIRD_PARTY_AUTH_ERROR = fcm_error(
    401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service", "THIRD_PARTY_AUTH_ERROR"
)
ACCESS_TOKEN_EXPIRED = unauthenticated("ACCESS_TOKEN_EXPIRED")
CREDENTIALS_MISSING = unauthenticated("CREDENTIALS_MISSING")
INSUFFICIENT_SCOPES = fcm_error(
    403,
    "PERMISSION_DENIED",
    "Request had insufficient authentication scopes.",
    details=(
        {
            "@type": ERROR_INFO,
            "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
            "domain": "googleapis.com",
            "metadata": {"method": "google.firebase.fcm.v1.FcmService.SendMessage", "service": "fcm.googleapis.com"},
        },
    ),
)
PROJECT_NOT_FOUND = fcm_error(404, "NOT_FOUND", NOT_FOUND_MESSAGE)

MAGIC_TOKENS = {
    "unregistered-": UNREGISTERED,
    "notfound-": NOT_FOUND,
    "invalid-": INVALID_REGISTRATION,
    "quota-": QUOTA_EXCEEDED,
    "unavailable-": UNAVAILABLE,
    "internal-": INTERNAL,
    "mismatch-": SENDER_ID_MISMATCH,
}

# The token endpoint's refusals (OAuth 2.0 error JSON, as Google words them).
INVALID_SIGNATURE = (400, {}, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
INVALID_JWT_TIME = (
    400,
    {},
    {
        "error": "invalid_grant",
        "error_description": "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
        "timeframe. Check your iat and exp values in the JWT claim.",
    },
)
INVALID_SCOPE = (
    400,
    {},
    {"error": "invalid_scope", "error_description": "Invalid OAuth scope or ID token audience provided."},
)
UNSUPPORTED_GRANT_TYPE = (
    400,
    {},
    {"error": "unsupported_grant_type", "error_description": "Invalid grant_type: "},
)


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FcmDouble(HttpDouble):
    def __init__(self, project_id: str = PROJECT_ID):
        super().__init__()
        self.project_id = project_id
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self.private_key.public_key()
        self.private_key_id = secrets.token_hex(20)
        self.client_email = f"beacon@{project_id}.iam.gserviceaccount.com"
        self.client_id = str(100000000000000000000 + secrets.randbelow(10**20))
        self.tokens: dict[str, dict] = {}  # access token -> {"expires_at", "scope"}
        self.tokens_issued = 0  # since the last reset
        self.token_requests: list[dict] = []  # the assertions' claims, or the refusal
        self.connections = 0  # TCP connections accepted since the last reset

    # --- the test's side -----------------------------------------------------------

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def send_url(self) -> str:
        return f"{self.base_url}/v1/projects/{self.project_id}/messages:send"

    def service_account_info(self) -> dict:
        """A service-account key file's contents, for `Credentials.from_service_account_info`."""
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": pem,
            "client_email": self.client_email,
            "client_id": self.client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
            + self.client_email.replace("@", "%40"),
            "universe_domain": "googleapis.com",
        }

    def issue_token(self, scope: str = SCOPE) -> str:
        """An access token as if fetched, for requests made by hand."""
        token = "ya29." + secrets.token_urlsafe(48)
        with self.lock:
            self.tokens[token] = {"expires_at": time.time() + TOKEN_LIFETIME, "scope": scope}
            self.tokens_issued += 1
        return token

    def expire_tokens(self) -> None:
        """Every token issued so far is refused from now on with 401 ACCESS_TOKEN_EXPIRED."""
        with self.lock:
            for token in self.tokens.values():
                token["expires_at"] = 0.0

    def answer_next(self, *answers: tuple[int, dict, object]) -> None:
        """Answer the next sends with these (status, headers, body), in order, whatever their token."""
        with self.lock:
            self.script.extend(answers)

    def received(self) -> list[dict]:
        """Every authenticated send: {"message", "token", "validate_only", "authorization", "status", "name"}."""
        with self.lock:
            return list(self.requests)

    def delivered(self) -> list[dict]:
        """The sends answered 200."""
        return [r for r in self.received() if r["status"] == 200]

    def reset(self, *, forget_tokens: bool = False) -> None:
        """Forget the sends, scripts, connection and issue counts; the keys stay, and the tokens
        issued stay valid (so a cached client keeps working) unless `forget_tokens`."""
        super().reset()
        with self.lock:
            self.tokens_issued = 0
            self.token_requests.clear()
            self.connections = 0
            if forget_tokens:
                self.tokens.clear()

    # --- the HTTP side -------------------------------------------------------------

    def answer(self, path: str, headers, body: bytes):
        if path == "/token":
            return self._token(body)
        match = SEND_PATH.match(path)
        if match is None:
            return fcm_error(404, "NOT_FOUND", NOT_FOUND_MESSAGE)
        return self._send(match["project"], headers, body)

    def _token(self, body: bytes):
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        if form.get("grant_type") != JWT_GRANT_TYPE:
            status, extra, answer = UNSUPPORTED_GRANT_TYPE
            return status, extra, {**answer, "error_description": f"Invalid grant_type: {form.get('grant_type', '')}"}
        claims, refusal = self._check_assertion(form.get("assertion", ""))
        with self.lock:
            self.token_requests.append({"claims": claims, "refused": refusal is not None})
        if refusal is not None:
            return refusal
        token = self.issue_token(claims["scope"])
        return 200, {}, {"access_token": token, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"}

    def _check_assertion(self, assertion: str) -> tuple[dict | None, tuple | None]:
        """The assertion's claims, and the refusal to answer if it isn't good."""
        try:
            encoded_header, encoded_claims, encoded_signature = assertion.split(".")
            header = json.loads(_b64url_decode(encoded_header))
            claims = json.loads(_b64url_decode(encoded_claims))
            if header.get("alg") != "RS256" or header.get("kid") not in (None, self.private_key_id):
                raise InvalidSignature
            self.public_key.verify(
                _b64url_decode(encoded_signature),
                f"{encoded_header}.{encoded_claims}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, TypeError, InvalidSignature):
            return None, INVALID_SIGNATURE
        if claims.get("iss") != self.client_email or claims.get("aud") not in (*GOOGLE_TOKEN_AUDIENCES, self.token_uri):
            return claims, INVALID_SIGNATURE
        now = time.time()
        iat, exp = claims.get("iat", 0), claims.get("exp", 0)
        if not (iat - 300 <= now < exp and exp - iat <= TOKEN_LIFETIME):
            return claims, INVALID_JWT_TIME
        if not claims.get("scope"):
            return claims, INVALID_SCOPE
        return claims, None

    def _send(self, project: str, headers, body: bytes):
        authorization = headers.get("Authorization", "")
        refusal = self._check_bearer(authorization)
        if refusal is not None:
            return refusal
        if project != self.project_id:
            return PROJECT_NOT_FOUND
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        message = payload.get("message") if isinstance(payload, dict) else None
        record = {
            "message": message,
            "token": message.get("token") if isinstance(message, dict) else None,
            "validate_only": bool(payload.get("validate_only")) if isinstance(payload, dict) else False,
            "authorization": authorization,
            "status": None,
            "name": None,
        }
        with self.lock:
            self.requests.append(record)
        status, extra, answer = self._answer_send(payload, message, record)
        with self.lock:
            record["status"] = status
            if status == 200:
                record["name"] = answer["name"]
        return status, extra, answer

    def _check_bearer(self, authorization: str):
        if not authorization.startswith("Bearer "):
            return CREDENTIALS_MISSING
        with self.lock:
            token = self.tokens.get(authorization.removeprefix("Bearer ").strip())
        if token is None:
            return CREDENTIALS_MISSING
        if token["expires_at"] <= time.time():
            return ACCESS_TOKEN_EXPIRED
        if not {SCOPE, CLOUD_PLATFORM_SCOPE} & set(token["scope"].split()):
            return INSUFFICIENT_SCOPES
        return None

    def _answer_send(self, payload, message, record: dict):
        if payload is None:
            return fcm_error(
                400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unexpected token.", "INVALID_ARGUMENT"
            )
        if not isinstance(message, dict):
            return fcm_error(400, "INVALID_ARGUMENT", "Recipient of the message is not set.", "INVALID_ARGUMENT")
        targets = [key for key in ("token", "topic", "condition") if message.get(key)]
        if not targets:
            return fcm_error(400, "INVALID_ARGUMENT", "Recipient of the message is not set.", "INVALID_ARGUMENT")
        if len(targets) > 1:
            return fcm_error(
                400,
                "INVALID_ARGUMENT",
                f"Invalid value at 'message' (oneof), oneof field 'target' is already set. Cannot set '{targets[1]}'",
                "INVALID_ARGUMENT",
                details=(
                    field_violation("message", f"oneof field 'target' is already set. Cannot set '{targets[1]}'"),
                ),
            )
        content = {
            key: message[key] for key in ("notification", "data", "android", "apns", "webpush") if key in message
        }
        if len(json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()) > MAX_MESSAGE_BYTES:
            return MESSAGE_TOO_BIG
        with self.lock:
            scripted = self.next_scripted()
        if scripted is not None:
            return scripted
        token = message.get("token") or ""
        for prefix, answer in MAGIC_TOKENS.items():
            if token.startswith(prefix):
                return answer
        if record["validate_only"]:
            return 200, {}, {"name": f"projects/{self.project_id}/messages/fake_message_id"}
        message_id = str(1_000_000_000_000_000 + uuid.uuid4().int % 9_000_000_000_000_000_000)
        return 200, {}, {"name": f"projects/{self.project_id}/messages/{message_id}"}

    def _handler(self):
        base = super()._handler()
        double = self

        class Handler(base):
            def setup(self):
                super().setup()
                with double.lock:
                    double.connections += 1

        return Handler


def fcm_settings(double: FcmDouble) -> dict:
    """The Django settings that point the app's FCM provider at the double."""
    return {
        "FCM_SERVICE_ACCOUNT_JSON": json.dumps(double.service_account_info()),
        "FCM_SERVICE_ACCOUNT_FILE": "",
        "FCM_PROJECT_ID": "",
        "FCM_API_BASE_URL": double.base_url,
        "BEACON_PUSH_PROVIDER": "fcm",
    }


@pytest.fixture(scope="session")
def fcm_server():
    double = FcmDouble().start()
    yield double
    double.stop()
