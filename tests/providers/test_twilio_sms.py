"""The Twilio adapter: the official client against the local double of the Messages API."""

import pytest
from django.test import override_settings
from twilio.request_validator import RequestValidator

from providers.base import (
    OutboundMessage,
    ProviderConfigurationError,
    ProviderUnavailable,
    RecipientRejected,
    WebhookSignatureInvalid,
)
from providers.registry import provider_for_channel, reset_providers
from providers.twilio_sms import verify_signature
from tests.conftest import TWILIO_TOKEN
from tests.doubles.smtp import free_port
from tests.doubles.twilio import INVALID_NUMBER


def sms(to="+14155550123", **overrides) -> OutboundMessage:
    fields = {"channel": "sms", "to": to, "body": "Reminder: Haircut at 10:00"}
    fields.update(overrides)
    return OutboundMessage(**fields)


def test_success_returns_the_message_sid(twilio):
    # when
    result = provider_for_channel("sms").send(sms(status_callback_url="https://beacon.example/cb?delivery=1"))
    # then
    assert twilio.requests == [
        {
            "To": "+14155550123",
            "From": "+15005550006",
            "Body": "Reminder: Haircut at 10:00",
            "StatusCallback": "https://beacon.example/cb?delivery=1",
        }
    ]
    assert result.provider_message_id.startswith("SM")
    assert len(result.provider_message_id) == 34
    assert (result.status, result.response_code, result.cost) == ("sent", 201, "")


def test_a_messaging_service_is_used_instead_of_a_from_number(twilio):
    with override_settings(TWILIO_MESSAGING_SERVICE_SID="MG" + "1" * 32):
        reset_providers()
        provider_for_channel("sms").send(sms())
    assert twilio.requests == [
        {"To": "+14155550123", "MessagingServiceSid": "MG" + "1" * 32, "Body": "Reminder: Haircut at 10:00"}
    ]


def test_an_invalid_number_is_permanent(twilio):
    with pytest.raises(RecipientRejected) as caught:
        provider_for_channel("sms").send(sms(INVALID_NUMBER))
    assert caught.value.retryable is False
    assert (caught.value.status_code, caught.value.code) == (400, "21211")
    assert caught.value.message == "Twilio answered HTTP 400, error 21211"


def test_429_carries_retry_after(twilio):
    twilio.script = [(429, {"Retry-After": "7"}, {"code": 20429, "message": "Too many requests", "status": 429})]
    with pytest.raises(ProviderUnavailable) as caught:
        provider_for_channel("sms").send(sms())
    assert caught.value.retryable is True
    assert (caught.value.status_code, caught.value.retry_after) == (429, 7.0)


def test_5xx_is_retryable(twilio):
    twilio.script = [(503, {}, {"code": 20500, "message": "Internal error", "status": 503})]
    with pytest.raises(ProviderUnavailable) as caught:
        provider_for_channel("sms").send(sms())
    assert (caught.value.status_code, caught.value.retry_after) == (503, None)


def test_rejected_credentials_are_a_configuration_error(twilio):
    with override_settings(TWILIO_AUTH_TOKEN="not-the-token"):
        reset_providers()
        with pytest.raises(ProviderConfigurationError) as caught:
            provider_for_channel("sms").send(sms())
    assert caught.value.status_code == 401
    assert caught.value.retryable is False
    assert twilio.sent_count() == 0


def test_an_unreachable_api_is_retryable(twilio):
    with override_settings(TWILIO_API_BASE_URL=f"http://127.0.0.1:{free_port()}"):
        reset_providers()
        with pytest.raises(ProviderUnavailable) as caught:
            provider_for_channel("sms").send(sms())
    assert caught.value.message == "Twilio could not be reached: ConnectionError"


def test_a_slow_api_times_out_as_retryable(twilio):
    twilio.delay = 1.0
    with override_settings(PROVIDER_TIMEOUT_SECONDS=0.2):
        reset_providers()
        with pytest.raises(ProviderUnavailable) as caught:
            provider_for_channel("sms").send(sms())
    assert caught.value.message == "Twilio did not answer in time."


def test_missing_credentials_refuse_to_send(twilio):
    with override_settings(TWILIO_ACCOUNT_SID="", TWILIO_FROM_NUMBER=""):
        reset_providers()
        provider = provider_for_channel("sms")
        assert provider.check_configuration() == ["TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set"]
        assert provider.check_channel_configuration("sms") == [
            "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set",
            "TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID must be set",
        ]
        with pytest.raises(ProviderConfigurationError):
            provider.send(sms())
    assert twilio.sent_count() == 0


def test_an_adapter_refuses_a_channel_it_does_not_send(twilio):
    with pytest.raises(ProviderConfigurationError) as caught:
        provider_for_channel("sms").send(OutboundMessage(channel="email", to="ana@example.com", body="x"))
    assert caught.value.message == "twilio does not send email"
    assert twilio.sent_count() == 0


def test_verify_signature(twilio):
    url = "https://beacon.example/api/v1/notifications/sms-status-callback/?delivery=1"
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    verify_signature(url=url, params=params, signature=signature)
    with pytest.raises(WebhookSignatureInvalid):
        verify_signature(url=url, params={**params, "MessageStatus": "failed"}, signature=signature)
    with pytest.raises(WebhookSignatureInvalid):
        verify_signature(url=url, params=params, signature="")
    with override_settings(TWILIO_AUTH_TOKEN=""), pytest.raises(WebhookSignatureInvalid):
        verify_signature(url=url, params=params, signature=signature)
