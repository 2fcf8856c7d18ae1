"""Adapters built from a configuration mapping (an account's provider record) over the
platform defaults from settings: `provider_build(kind, config)`, against the local doubles.

Each record here carries credentials the settings do not have (a second double of its
own), so only the record can make the send work."""

import json
import uuid

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.test import override_settings
from twilio.request_validator import RequestValidator

from providers import registry
from providers.base import OutboundMessage, ProviderConfigurationError, WebhookSignatureInvalid
from providers.email import SmtpEmailProvider
from providers.kinds import ANYMAIL_ESPS, KIND_FIELDS
from providers.push import FcmProvider, WebPushProvider
from providers.registry import (
    PROVIDER_CLASSES,
    provider_build,
    provider_for_channel,
    providers_configuration,
    reset_providers,
)
from providers.twilio_sms import TwilioSmsProvider, verify_signature
from tests.conftest import TWILIO_SID, TWILIO_TOKEN
from tests.doubles.fcm import FcmDouble
from tests.doubles.sendgrid import SENDGRID_API_KEY, SendGridDouble
from tests.doubles.smtp import SmtpServer, _Handler
from tests.doubles.twilio import TwilioDouble
from tests.doubles.webpush import b64url

pytestmark = [
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

TENANT_SID = "AC" + "7" * 32
TENANT_TOKEN = "tenant-twilio-auth-token"
TENANT_FROM = "+15005550077"
TENANT_SENDGRID_KEY = "SG.tenant-api-key"
TENANT_SMTP_USER = "tenant"
TENANT_SMTP_PASSWORD = "tenant-smtp-password"
PRIVATE_OK = {"BEACON_ALLOW_PRIVATE_TARGETS": True}


def shown(error: BaseException) -> str:
    """What an error shows: its text, its repr and its message."""
    return f"{error}\n{error!r}\n{getattr(error, 'message', '')}"


def sms(to="+14155550123") -> OutboundMessage:
    return OutboundMessage(channel="sms", to=to, body="Reminder: Haircut at 10:00")


def email(to="ana@example.com") -> OutboundMessage:
    return OutboundMessage(
        channel="email", to=to, subject="Your booking", body="See you at 10:00.", reference="delivery-1"
    )


def push(to: str, **fields) -> OutboundMessage:
    return OutboundMessage(
        channel="push", to=to, subject="Booking", body="At 10:00", reference=str(uuid.uuid4()), **fields
    )


# --- doubles of the records' own accounts ---------------------------------------------


@pytest.fixture(scope="module")
def tenant_twilio():
    double = TwilioDouble(account_sid=TENANT_SID, auth_token=TENANT_TOKEN).start()
    yield double
    double.stop()


@pytest.fixture(scope="module")
def tenant_fcm():
    double = FcmDouble(project_id="tenant-project").start()
    yield double
    double.stop()


@pytest.fixture(scope="module")
def tenant_sendgrid():
    double = SendGridDouble(api_key=TENANT_SENDGRID_KEY).start()
    yield double
    double.stop()


class AuthSmtpServer(SmtpServer):
    """The SMTP double, asking for AUTH LOGIN/PLAIN with one username and password."""

    def __init__(self, username: str, password: str):
        super().__init__()

        def authenticator(server, session, envelope, mechanism, auth_data):
            good = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
                username.encode(),
                password.encode(),
            )
            return AuthResult(success=good, handled=False)  # refused: aiosmtpd answers 535

        self.controller = Controller(
            _Handler(self),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticator,
            auth_require_tls=False,
            auth_required=True,
        )


@pytest.fixture(scope="module")
def tenant_smtp():
    server = AuthSmtpServer(TENANT_SMTP_USER, TENANT_SMTP_PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture
def private_targets():
    with override_settings(**PRIVATE_OK):
        yield


def twilio_record(double: TwilioDouble, **overrides) -> dict:
    record = {
        "account_sid": double.account_sid,
        "auth_token": double.auth_token,
        "from_number": TENANT_FROM,
        "api_base_url": double.base_url,
    }
    record.update(overrides)
    return record


# --- Twilio ----------------------------------------------------------------------------


def test_twilio_record_sends_with_its_own_account(twilio, tenant_twilio, private_targets):
    tenant_twilio.reset()
    provider = provider_build("twilio", twilio_record(tenant_twilio))
    result = provider.send(sms())
    assert result.provider_message_id.startswith("SM")
    assert tenant_twilio.requests == [{"To": "+14155550123", "From": TENANT_FROM, "Body": "Reminder: Haircut at 10:00"}]
    assert twilio.sent_count() == 0  # the platform's account sent nothing
    assert provider.check_channel_configuration("sms") == []


def test_twilio_record_with_a_wrong_token_is_a_configuration_error(twilio, tenant_twilio, private_targets):
    tenant_twilio.reset()
    provider = provider_build("twilio", twilio_record(tenant_twilio, auth_token="wrong-tenant-token"))
    with pytest.raises(ProviderConfigurationError) as caught:
        provider.send(sms())
    assert (caught.value.status_code, caught.value.retryable) == (401, False)
    assert "wrong-tenant-token" not in shown(caught.value)
    assert tenant_twilio.sent_count() == 0


def test_twilio_settings_path_is_unchanged(twilio):
    provider = provider_build("twilio")
    assert provider is provider_for_channel("sms")
    assert provider.config["account_sid"] == TWILIO_SID
    provider.send(sms())
    assert twilio.requests[0]["From"] == "+15005550006"


def test_twilio_record_takes_the_platform_defaults_it_leaves_out(twilio):
    # Only a sender of its own: the platform's account (and its server) sends it.
    provider = provider_build("twilio", {"from_number": TENANT_FROM})
    provider.send(sms())
    assert twilio.requests[0]["From"] == TENANT_FROM


def test_twilio_record_with_its_own_server_never_gets_the_platform_credentials(twilio, tenant_twilio, private_targets):
    tenant_twilio.reset()
    provider = provider_build("twilio", {"api_base_url": tenant_twilio.base_url})
    assert provider.config["auth_token"] is None
    assert provider.check_configuration() == ["account_sid and auth_token must be set"]
    with pytest.raises(ProviderConfigurationError) as caught:
        provider.send(sms())
    assert caught.value.message == "account_sid and auth_token must be set"
    assert tenant_twilio.sent_count() == 0


def test_twilio_record_messages_name_the_records_fields(twilio):
    provider = provider_build("twilio", {"account_sid": TENANT_SID, "auth_token": TENANT_TOKEN, "from_number": ""})
    assert provider.check_channel_configuration("whatsapp") == []  # TWILIO_WHATSAPP_FROM
    with override_settings(TWILIO_FROM_NUMBER="", TWILIO_MESSAGING_SERVICE_SID=""):
        reset_providers()
        provider = provider_build("twilio", {"account_sid": TENANT_SID, "auth_token": TENANT_TOKEN})
        assert provider.check_channel_configuration("sms") == ["from_number or messaging_service_sid must be set"]


def test_a_records_private_server_is_refused_unless_private_targets_are_allowed(twilio, tenant_twilio):
    tenant_twilio.reset()
    with override_settings(BEACON_ALLOW_PRIVATE_TARGETS=False):
        provider = provider_build("twilio", twilio_record(tenant_twilio))
        with pytest.raises(ProviderConfigurationError) as caught:
            provider.send(sms())
    assert caught.value.message.startswith("api_base_url is refused: ")
    assert tenant_twilio.sent_count() == 0


def test_verify_signature_with_a_given_token(twilio):
    url = "https://beacon.example/api/v1/notifications/sms-status-callback/?delivery=1"
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    signature = RequestValidator(TENANT_TOKEN).compute_signature(url, params)
    verify_signature(url=url, params=params, signature=signature, auth_token=TENANT_TOKEN)
    with pytest.raises(WebhookSignatureInvalid):
        verify_signature(url=url, params=params, signature=signature)  # TWILIO_AUTH_TOKEN's
    with pytest.raises(WebhookSignatureInvalid):
        verify_signature(url=url, params=params, signature=signature, auth_token=TWILIO_TOKEN)
    with pytest.raises(WebhookSignatureInvalid) as caught:
        verify_signature(url=url, params=params, signature=signature, auth_token="")
    assert TENANT_TOKEN not in str(caught.value)
    platform = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    verify_signature(url=url, params=params, signature=platform)


# --- FCM -------------------------------------------------------------------------------


def fcm_record(double: FcmDouble, **overrides) -> dict:
    record = {"service_account_json": json.dumps(double.service_account_info()), "api_base_url": double.base_url}
    record.update(overrides)
    return record


def test_fcm_record_sends_with_its_own_service_account(fcm, tenant_fcm):
    tenant_fcm.reset()
    provider = provider_build("fcm", fcm_record(tenant_fcm))
    assert isinstance(provider, FcmProvider)
    result = provider.send(push("device-token-1"))
    [delivered] = tenant_fcm.delivered()
    assert delivered["token"] == "device-token-1"
    assert result.provider_message_id == delivered["name"]
    assert delivered["name"].startswith("projects/tenant-project/")
    assert fcm.received() == []


def test_fcm_record_with_a_wrong_key_is_a_configuration_error(fcm, tenant_fcm):
    tenant_fcm.reset()
    other_key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    info = {**tenant_fcm.service_account_info(), "private_key": other_key}
    provider = provider_build("fcm", fcm_record(tenant_fcm, service_account_json=json.dumps(info)))
    with pytest.raises(ProviderConfigurationError) as caught:
        provider.send(push("device-token-2"))
    assert caught.value.retryable is False
    body = other_key.split("-----")[2].strip().splitlines()[1]
    assert body not in shown(caught.value)
    assert tenant_fcm.received() == []


def test_fcm_record_that_is_not_json_names_the_field_not_the_value(fcm):
    provider = provider_build("fcm", {"service_account_json": "not-json secret-material"})
    assert provider.check_configuration() == ["service_account_json is not JSON."]
    with pytest.raises(ProviderConfigurationError) as caught:
        provider.send(push("device-token-3"))
    assert "secret-material" not in shown(caught.value)


def test_fcm_settings_path_is_unchanged(fcm):
    provider = provider_build("fcm")
    assert provider is provider_for_channel("push", "device-token")
    provider.send(push("device-token-4"))
    assert [r["token"] for r in fcm.delivered()] == ["device-token-4"]


def test_fcm_record_with_its_own_server_but_no_account_gets_none_of_the_platforms(fcm, tenant_fcm, tmp_path):
    path = tmp_path / "platform.json"
    path.write_text(json.dumps(fcm.service_account_info()), encoding="utf-8")
    with override_settings(FCM_SERVICE_ACCOUNT_FILE=str(path)):
        provider = provider_build("fcm", {"api_base_url": tenant_fcm.base_url})
        assert provider.check_configuration() == ["Set service_account_json."]


# --- Web Push --------------------------------------------------------------------------


def vapid_key_pair() -> tuple[str, str]:
    """A VAPID private key (base64url DER) and its applicationServerKey."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = b64url(
        key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = b64url(
        key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return private, public


def test_webpush_record_signs_with_its_own_vapid_key(fcm, webpush_server):
    private, public = vapid_key_pair()
    subscription = webpush_server.subscribe(application_server_key=public)
    message = push(subscription["endpoint"], target={"platform": "web", "subscription": subscription["keys"]})
    record = {"vapid_private_key": private, "vapid_subject": "mailto:ops@tenant.example", "ttl_seconds": 60}
    provider = provider_build("webpush", record)
    assert isinstance(provider, WebPushProvider)
    result = provider.send(message)
    assert result.response_code == 201
    [received] = webpush_server.received(subscription["endpoint"])
    assert received["vapid_key"] == public
    assert received["vapid_claims"]["sub"] == "mailto:ops@tenant.example"
    assert received["headers"]["ttl"] == "60"
    # The platform's key (settings) is not the one this subscription accepts.
    with pytest.raises(ProviderConfigurationError) as caught:
        provider_build("webpush").send(message)
    assert caught.value.status_code == 403


def test_webpush_record_with_a_wrong_key_is_a_configuration_error(fcm, webpush_server):
    _, public = vapid_key_pair()
    wrong, _ = vapid_key_pair()
    subscription = webpush_server.subscribe(application_server_key=public)
    message = push(subscription["endpoint"], target={"platform": "web", "subscription": subscription["keys"]})
    with pytest.raises(ProviderConfigurationError) as caught:
        provider_build("webpush", {"vapid_private_key": wrong}).send(message)
    assert caught.value.status_code == 403
    assert wrong not in shown(caught.value)
    with pytest.raises(ProviderConfigurationError) as caught:
        provider_build("webpush", {"vapid_private_key": "garbage-secret"}).send(message)
    assert caught.value.message.startswith("vapid_private_key is not a usable key: ")
    assert "garbage-secret" not in shown(caught.value)
    assert webpush_server.delivered(subscription["endpoint"]) == []


def test_webpush_settings_path_is_unchanged(fcm, webpush_server):
    subscription = webpush_server.subscribe()
    message = push(subscription["endpoint"], target={"platform": "web", "subscription": subscription["keys"]})
    provider = provider_build("webpush")
    assert provider is provider_for_channel("push", subscription["endpoint"])
    assert provider.send(message).response_code == 201
    assert provider_build("webpush", {"ttl_seconds": "soon"}).check_configuration() == [
        "ttl_seconds must be a whole number of seconds."
    ]


# --- SMTP ------------------------------------------------------------------------------


def smtp_record(server: SmtpServer, **overrides) -> dict:
    record = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": TENANT_SMTP_USER,
        "password": TENANT_SMTP_PASSWORD,
        "from_email": "Tenant <hello@tenant.example>",
    }
    record.update(overrides)
    return record


def test_smtp_record_sends_through_its_own_server_with_its_login(smtp, tenant_smtp):
    tenant_smtp.reset()
    provider = provider_build("smtp", smtp_record(tenant_smtp))
    assert isinstance(provider, SmtpEmailProvider)
    result = provider.send(email())
    [received] = tenant_smtp.messages
    assert received["mail_from"] == "hello@tenant.example"
    assert received["rcpt_tos"] == ["ana@example.com"]
    assert result.provider_message_id == received["message"]["Message-ID"]
    assert result.provider_message_id.endswith("@tenant.example>")
    assert smtp.messages == []
    # One connection per flush, as with Django's SMTP backend.
    assert [type(r).__name__ for r in provider.send_many([email("bea@example.com"), email("cy@example.com")])] == [
        "SendResult",
        "SendResult",
    ]
    assert provider._smtp is None and provider._connection is None
    assert len(tenant_smtp.messages) == 3


def test_smtp_record_with_a_wrong_password_is_a_configuration_error(smtp, tenant_smtp):
    tenant_smtp.reset()
    provider = provider_build("smtp", smtp_record(tenant_smtp, password="wrong-smtp-password"))
    with pytest.raises(ProviderConfigurationError) as caught:
        provider.send(email())
    assert caught.value.message == "SMTP authentication failed (535)"
    assert "wrong-smtp-password" not in shown(caught.value)
    assert tenant_smtp.messages == []


def test_smtp_settings_path(smtp):
    with override_settings(
        BEACON_EMAIL_PROVIDER="smtp", EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend"
    ):
        reset_providers()
        provider = provider_for_channel("email")
        assert provider is provider_build("smtp")
        assert provider.check_configuration() == []
        provider.send(email())
    assert smtp.messages[0]["mail_from"] == "notifications@localhost"


def test_smtp_record_on_its_own_host_never_gets_the_platform_login(smtp):
    with override_settings(EMAIL_HOST_USER="platform", EMAIL_HOST_PASSWORD="platform-smtp-password"):
        assert provider_build("smtp").backend_options()["password"] == "platform-smtp-password"
        options = provider_build("smtp", {"host": "smtp.tenant.example"}).backend_options()
    assert (options["username"], options["password"]) == ("", "")
    bad = provider_build("smtp", {"use_tls": True, "use_ssl": "true"})
    assert bad.check_configuration() == ["use_tls and use_ssl are exclusive: set one."]


# --- SendGrid (django-anymail) ------------------------------------------------------------


def test_sendgrid_record_sends_with_its_own_key(sendgrid, tenant_sendgrid, private_targets):
    tenant_sendgrid.reset()
    record = {"api_key": TENANT_SENDGRID_KEY, "api_url": tenant_sendgrid.api_url, "from_email": "hi@tenant.example"}
    provider = provider_build("sendgrid", record)
    result = provider.send(email())
    [request] = tenant_sendgrid.requests
    assert request["authorization"] == f"Bearer {TENANT_SENDGRID_KEY}"
    assert request["json"]["from"] == {"email": "hi@tenant.example"}
    assert result.provider_message_id == request["json"]["personalizations"][0]["custom_args"]["anymail_id"]
    assert sendgrid.sent_count() == 0
    connection = provider._connection
    provider.send(email("bea@example.com"))
    assert provider._connection is connection  # the HTTP session is kept


def test_sendgrid_record_with_a_wrong_key_is_a_configuration_error(sendgrid, tenant_sendgrid, private_targets):
    tenant_sendgrid.reset()
    provider = provider_build("sendgrid", {"api_key": "SG.wrong-tenant-key", "api_url": tenant_sendgrid.api_url})
    with pytest.raises(ProviderConfigurationError) as caught:
        provider.send(email())
    assert (caught.value.status_code, caught.value.retryable) == (401, False)
    assert "SG.wrong-tenant-key" not in shown(caught.value)
    assert tenant_sendgrid.sent_count() == 0


def test_sendgrid_settings_path(sendgrid):
    with override_settings(
        BEACON_EMAIL_PROVIDER="sendgrid", EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend"
    ):
        reset_providers()
        provider = provider_for_channel("email")
        assert provider is provider_build("sendgrid")
        assert provider.check_configuration() == []
        provider.send(email())
    assert sendgrid.requests[0]["authorization"] == f"Bearer {SENDGRID_API_KEY}"


def test_sendgrid_record_with_its_own_url_never_gets_the_platform_key(sendgrid, tenant_sendgrid, private_targets):
    tenant_sendgrid.reset()
    provider = provider_build("sendgrid", {"api_url": tenant_sendgrid.api_url})
    assert provider.check_configuration() == ["api_key must be set"]
    with pytest.raises(ProviderConfigurationError):
        provider.send(email())
    assert tenant_sendgrid.sent_count() == 0
    assert sendgrid.sent_count() == 0


def test_every_anymail_kind_is_an_email_provider():
    for kind in ("smtp", *ANYMAIL_ESPS):
        assert "email" in PROVIDER_CLASSES[kind].channels
    assert provider_build("postmark", {"api_key": "pm-token"}).backend_options() == {"server_token": "pm-token"}
    assert provider_build("mailjet", {"api_key": "mj-key"}).check_configuration() == ["secret_key must be set"]
    with override_settings(ANYMAIL={}):
        reset_providers()
        assert provider_build("mandrill").check_configuration() == ["ANYMAIL_MANDRILL_API_KEY must be set"]


# --- the registry ------------------------------------------------------------------------


def test_one_adapter_per_kind_and_configuration(twilio, tenant_twilio):
    record = twilio_record(tenant_twilio)
    first = provider_build("twilio", record)
    assert provider_build("twilio", dict(reversed(list(record.items())))) is first
    assert provider_build("twilio", {**record, "voice_from": None, "whatsapp_from": ""}) is first
    assert provider_build("twilio", {**record, "from_number": "+15005550078"}) is not first
    assert provider_build("twilio") is not first
    assert provider_build("twilio", {}) is provider_build("twilio") is provider_build("twilio", None)
    assert isinstance(first, TwilioSmsProvider)
    reset_providers()
    assert provider_build("twilio", record) is not first


def test_the_built_adapters_are_bounded(twilio, monkeypatch):
    monkeypatch.setattr(registry, "_BUILT_MAX", 3)
    first = provider_build("twilio", {"from_number": "+15005550001"})
    for number in range(2, 5):
        provider_build("twilio", {"from_number": f"+1500555000{number}"})
    assert len(registry._BUILT) == 3
    assert provider_build("twilio", {"from_number": "+15005550001"}) is not first
    assert all(TENANT_TOKEN not in repr(key) for key in registry._BUILT)


def test_unknown_names_and_kinds_are_refused_without_their_values():
    with pytest.raises(ProviderConfigurationError) as caught:
        provider_build("twilio", {"auth_tokn": "typo-secret"})
    assert caught.value.message == "twilio has no configuration named auth_tokn."
    assert "typo-secret" not in shown(caught.value)
    with pytest.raises(ProviderConfigurationError):
        provider_build("carrier-pigeon", {})


def test_every_kind_reads_its_settings_under_its_configuration_names():
    for kind, cls in PROVIDER_CLASSES.items():
        fields = KIND_FIELDS.get(kind)
        if fields is not None:
            assert set(cls.settings_config()) <= set(fields.names), kind


@override_settings(
    BEACON_SMS_PROVIDER="twilio",
    BEACON_PUSH_PROVIDER="webpush",
    TWILIO_FROM_NUMBER="+15005550006",
    BEACON_EMAIL_PROVIDER="smtp",
    TWILIO_ACCOUNT_SID="",
    TWILIO_AUTH_TOKEN="very-secret-token",
    VAPID_PRIVATE_KEY="very-secret-vapid-key",
    EMAIL_HOST_PASSWORD="very-secret-password",
    EMAIL_USE_TLS=True,
    EMAIL_USE_SSL=True,
)
def test_the_configuration_report_shows_no_credentials():
    reset_providers()
    report = providers_configuration()
    assert report["sms"]["problems"] == ["TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set"]
    assert report["push"]["problems"] == ["VAPID_PRIVATE_KEY is not a usable key: Error"]
    assert report["email"]["problems"] == ["EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive: set one."]
    for secret in ("very-secret-token", "very-secret-vapid-key", "very-secret-password"):
        assert secret not in repr(report)
