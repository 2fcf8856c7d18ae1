"""Error classification helpers and the provider registry."""

from email.utils import formatdate

import pytest
from django.test import override_settings

from providers.base import (
    ProviderConfigurationError,
    ProviderUnavailable,
    RecipientRejected,
    error_for_status,
    parse_retry_after,
)
from providers.chat import DiscordWebhookProvider, SlackWebhookProvider, TeamsWebhookProvider
from providers.console import ConsoleProvider
from providers.email import DjangoEmailProvider
from providers.registry import (
    provider_for_channel,
    provider_kind_for_channel,
    providers_configuration,
    reset_providers,
)
from providers.twilio_sms import TwilioSmsProvider


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (429, ProviderUnavailable, True),
        (500, ProviderUnavailable, True),
        (503, ProviderUnavailable, True),
        (401, ProviderConfigurationError, False),
        (403, ProviderConfigurationError, False),
        (400, RecipientRejected, False),
        (404, RecipientRejected, False),
        (422, RecipientRejected, False),
    ],
)
def test_error_for_status(status, kind, retryable):
    error = error_for_status(status, "boom", retry_after=3.0, code="X")
    assert type(error) is kind
    assert error.retryable is retryable
    assert (error.status_code, error.code, error.message) == (status, "X", "boom")


def test_only_retryable_errors_keep_retry_after():
    assert error_for_status(429, "slow down", retry_after=3.0).retry_after == 3.0
    assert error_for_status(400, "bad", retry_after=3.0).retry_after is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("7", 7.0), ("2.5", 2.5), ("-4", 0.0), ("soon", None)],
)
def test_parse_retry_after_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    import time

    seconds = parse_retry_after(formatdate(time.time() + 60, usegmt=True))
    assert 55 <= seconds <= 61
    assert parse_retry_after(formatdate(time.time() - 60, usegmt=True)) == 0.0


@override_settings(BEACON_SMS_PROVIDER="console", BEACON_EMAIL_PROVIDER="django")
def test_channels_map_to_the_configured_kinds():
    reset_providers()
    assert provider_kind_for_channel("sms") == "console"
    assert isinstance(provider_for_channel("sms"), ConsoleProvider)
    assert isinstance(provider_for_channel("email"), DjangoEmailProvider)
    # Built once per process and reused.
    assert provider_for_channel("sms") is provider_for_channel("sms")


def test_an_unknown_channel_has_no_provider():
    with pytest.raises(ProviderConfigurationError) as caught:
        provider_kind_for_channel("pigeon")
    assert caught.value.message == "No provider handles channel 'pigeon'."


@override_settings(
    BEACON_EMAIL_PROVIDER="twilio",
    BEACON_SMS_PROVIDER="carrier-pigeon",
    BEACON_WHATSAPP_PROVIDER="console",
    BEACON_VOICE_PROVIDER="console",
)
def test_a_kind_that_cannot_send_the_channel_is_refused():
    with pytest.raises(ProviderConfigurationError) as caught:
        provider_kind_for_channel("email")
    assert caught.value.message == "BEACON_EMAIL_PROVIDER='twilio' is not a provider for email."
    assert providers_configuration() == {
        "email": {
            "provider": None,
            "configured": False,
            "problems": ["BEACON_EMAIL_PROVIDER='twilio' is not a provider for email."],
        },
        "sms": {
            "provider": None,
            "configured": False,
            "problems": ["BEACON_SMS_PROVIDER='carrier-pigeon' is not a provider for sms."],
        },
        "whatsapp": {"provider": "console", "configured": True, "problems": []},
        "voice": {"provider": "console", "configured": True, "problems": []},
        "push": {"provider": "console", "configured": True, "problems": []},
        "slack": {"provider": "slack", "configured": True, "problems": []},
        "teams": {"provider": "teams", "configured": True, "problems": []},
        "discord": {"provider": "discord", "configured": True, "problems": []},
        "in_app": {"provider": "inbox", "configured": True, "problems": []},
        "webhook": {"provider": "webhook", "configured": True, "problems": []},
    }


@override_settings(
    BEACON_SMS_PROVIDER="twilio",
    TWILIO_ACCOUNT_SID="",
    TWILIO_AUTH_TOKEN="very-secret-token",
    TWILIO_FROM_NUMBER="+15005550006",
    EMAIL_BACKEND="no.such.Backend",
)
def test_configuration_report_names_problems_without_secrets():
    reset_providers()
    report = providers_configuration()
    assert report["sms"] == {
        "provider": "twilio",
        "configured": False,
        "problems": ["TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set"],
    }
    assert report["email"]["provider"] == "django"
    assert report["email"]["configured"] is False
    assert report["email"]["problems"] == ["EMAIL_BACKEND cannot be loaded: ModuleNotFoundError"]
    assert "very-secret-token" not in repr(report)


def test_registered_kinds():
    from notifications.services.inbox import InboxProvider
    from providers.email import ANYMAIL_PROVIDERS, SmtpEmailProvider
    from providers.push import FcmProvider, WebPushProvider
    from providers.registry import PROVIDER_CLASSES
    from providers.webhook import WebhookProvider

    assert PROVIDER_CLASSES == {
        "console": ConsoleProvider,
        "django": DjangoEmailProvider,
        "twilio": TwilioSmsProvider,
        "slack": SlackWebhookProvider,
        "teams": TeamsWebhookProvider,
        "discord": DiscordWebhookProvider,
        "fcm": FcmProvider,
        "webpush": WebPushProvider,
        "webhook": WebhookProvider,
        "inbox": InboxProvider,
        "smtp": SmtpEmailProvider,
        **ANYMAIL_PROVIDERS,
    }


def test_console_provider_sends_nothing_but_logs(caplog):
    from providers.base import OutboundMessage

    with caplog.at_level("INFO", logger="beacon.console"):
        result = ConsoleProvider(timeout=1).send(OutboundMessage(channel="sms", to="+14155550123", body="Hi"))
    assert result.provider_message_id.startswith("console-")
    assert result.status == "sent"
    assert "to=+14155550123" in caplog.text
