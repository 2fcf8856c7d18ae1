import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from accounts.services import api_token_issue
from config.celery import app as celery_app
from providers.registry import reset_providers
from tests.doubles.fcm import fcm_server, fcm_settings  # noqa: F401 - fixtures
from tests.doubles.smtp import SmtpServer
from tests.doubles.twilio import TwilioDouble
from tests.doubles.webpush import webpush_server, webpush_settings  # noqa: F401 - fixtures
from tests.factories import UserFactory

TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-test-auth-token"
TWILIO_FROM = "+15005550006"
TWILIO_WHATSAPP_FROM = "whatsapp:+14155238886"


@pytest.fixture(autouse=True)
def _eager_tasks():
    """Unit tests run tasks in-process; integration tests switch this off for a real worker."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def _no_webhook_listeners(monkeypatch):
    """Each test starts knowing that no account has a webhook endpoint (the per-process
    cache is not left from an earlier test's rolled-back rows); endpoints created through
    the service make it read again, and it does not expire on its own mid-test."""
    from notifications.services import webhooks

    monkeypatch.setattr(webhooks.LISTENERS, "seconds", 1e9)
    webhooks.LISTENERS.set(frozenset())


@pytest.fixture(autouse=True)
def _no_provider_records(monkeypatch):
    """Each test starts knowing that no account has provider records (as for webhooks)."""
    from providers.registry import RECORD_ACCOUNTS

    monkeypatch.setattr(RECORD_ACCOUNTS, "seconds", 1e9)
    RECORD_ACCOUNTS.set(frozenset())


@pytest.fixture(autouse=True)
def _provider_state():
    """Each test starts with every provider's breaker closed, unpaused and unlimited."""
    from providers.shared_state import state_reset

    state_reset()


@pytest.fixture(autouse=True)
def _fresh_providers():
    reset_providers()
    yield
    reset_providers()


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


@pytest.fixture
def bob(db):
    return UserFactory(username="bob")


@pytest.fixture
def charlie(db):
    """An account that holds no token: no access through the API."""
    return UserFactory(username="charlie")


def client_for(user) -> APIClient:
    _, raw = api_token_issue(username=user.username)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def alice_api(alice):
    return client_for(alice)


@pytest.fixture
def bob_api(bob):
    return client_for(bob)


@pytest.fixture
def anon_api():
    return APIClient()


@pytest.fixture(scope="session")
def twilio_server():
    double = TwilioDouble(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN).start()
    yield double
    double.stop()


def twilio_settings(double: TwilioDouble) -> dict:
    return {
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_FROM_NUMBER": TWILIO_FROM,
        "TWILIO_MESSAGING_SERVICE_SID": "",
        "TWILIO_WHATSAPP_FROM": TWILIO_WHATSAPP_FROM,
        "TWILIO_VOICE_FROM": "",
        "TWILIO_API_BASE_URL": double.base_url,
        "BEACON_SMS_PROVIDER": "twilio",
        "BEACON_WHATSAPP_PROVIDER": "twilio",
        "BEACON_VOICE_PROVIDER": "twilio",
    }


@pytest.fixture
def twilio(twilio_server):
    """The Twilio double, emptied, with settings pointing the real client at it."""
    twilio_server.reset()
    with override_settings(**twilio_settings(twilio_server)):
        reset_providers()
        yield twilio_server
    twilio_server.wait_for_callbacks()
    reset_providers()


@pytest.fixture(scope="session")
def smtp_server_session():
    server = SmtpServer().start()
    yield server
    server.stop()


def smtp_settings(server: SmtpServer) -> dict:
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": server.port,
        "EMAIL_USE_TLS": False,
        "EMAIL_USE_SSL": False,
        "EMAIL_HOST_USER": "",
        "EMAIL_HOST_PASSWORD": "",
        "BEACON_EMAIL_PROVIDER": "django",
    }


@pytest.fixture
def smtp(smtp_server_session):
    """A real SMTP server on loopback, emptied, with Django's SMTP backend pointed at it."""
    smtp_server_session.reset()
    with override_settings(**smtp_settings(smtp_server_session)):
        reset_providers()
        yield smtp_server_session
    reset_providers()


@pytest.fixture
def fcm(fcm_server, webpush_server):  # noqa: F811 - the imported fixtures
    """The FCM double (and the Web Push double beside it), emptied, with settings pointing
    the push providers at them."""
    fcm_server.reset()
    webpush_server.reset()
    with override_settings(**fcm_settings(fcm_server), **webpush_settings(webpush_server)):
        reset_providers()
        yield fcm_server
    reset_providers()
