"""Email through django-anymail's SendGrid backend, against a local double of SendGrid's v3 API."""

import time

import pytest
from django.test import override_settings

from providers.base import (
    OutboundMessage,
    ProviderConfigurationError,
    ProviderUnavailable,
    RecipientRejected,
)
from providers.registry import provider_for_channel, reset_providers
from tests.doubles.smtp import free_port

pytestmark = pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning")


def email(**overrides) -> OutboundMessage:
    fields = {
        "channel": "email",
        "to": "ana@example.com",
        "subject": "Your booking",
        "body": "See you at 10:00.",
        "html_body": "<p>See you at <b>10:00</b>.</p>",
        "reference": "delivery-1",
    }
    fields.update(overrides)
    return OutboundMessage(**fields)


def test_success_records_anymails_message_id(sendgrid):
    # when
    result = provider_for_channel("email").send(email())
    # then
    assert sendgrid.sent_count() == 1
    request = sendgrid.requests[0]
    assert request["authorization"] == "Bearer SG.test-api-key"
    payload = request["json"]
    anymail_id = payload["personalizations"][0]["custom_args"]["anymail_id"]
    assert result.provider_message_id == anymail_id
    assert result.status == "sent"
    assert payload["personalizations"][0]["to"] == [{"email": "ana@example.com"}]
    assert payload["from"] == {"email": "notifications@localhost", "name": "Beacon"}
    assert payload["subject"] == "Your booking"
    assert payload["content"] == [
        {"type": "text/plain", "value": "See you at 10:00."},
        {"type": "text/html", "value": "<p>See you at <b>10:00</b>.</p>"},
    ]
    assert payload["headers"]["X-Beacon-Delivery"] == "delivery-1"


def test_the_http_session_is_reused_between_sends(sendgrid):
    provider = provider_for_channel("email")
    first = provider.send(email())
    connection = provider._connection
    second = provider.send(email(to="bea@example.com"))
    assert connection is not None
    assert provider._connection is connection
    assert first.provider_message_id != second.provider_message_id
    assert sendgrid.sent_count() == 2


def test_429_with_retry_after_is_retryable_and_carries_the_wait(sendgrid):
    # given
    sendgrid.script = [(429, {"Retry-After": "30"}, {"errors": [{"message": "too many requests", "field": None}]})]
    # when
    with pytest.raises(ProviderUnavailable) as caught:
        provider_for_channel("email").send(email())
    # then
    error = caught.value
    assert error.retryable is True
    assert error.status_code == 429
    assert error.retry_after == 30.0
    assert error.message == "The ESP answered HTTP 429."
    assert sendgrid.sent_count() == 1


def test_500_is_retryable(sendgrid):
    sendgrid.script = [(500, {}, {"errors": [{"message": "internal error", "field": None}]})]
    with pytest.raises(ProviderUnavailable) as caught:
        provider_for_channel("email").send(email())
    assert caught.value.retryable is True
    assert caught.value.status_code == 500
    assert caught.value.retry_after is None


def test_400_is_permanent(sendgrid):
    sendgrid.script = [
        (
            400,
            {},
            {"errors": [{"message": "Does not contain a valid address.", "field": "personalizations.0.to.0.email"}]},
        )
    ]
    with pytest.raises(RecipientRejected) as caught:
        provider_for_channel("email").send(email())
    assert caught.value.retryable is False
    assert caught.value.status_code == 400
    assert caught.value.message == "The ESP answered HTTP 400."


def test_a_wrong_api_key_is_a_configuration_error(sendgrid):
    with override_settings(ANYMAIL={"SENDGRID_API_KEY": "SG.wrong", "SENDGRID_API_URL": sendgrid.api_url}):
        reset_providers()
        with pytest.raises(ProviderConfigurationError) as caught:
            provider_for_channel("email").send(email())
    assert caught.value.retryable is False
    assert caught.value.status_code == 401
    assert sendgrid.sent_count() == 0


def test_an_unreachable_esp_is_retryable(sendgrid):
    url = f"http://127.0.0.1:{free_port()}/v3/"
    with override_settings(ANYMAIL={"SENDGRID_API_KEY": "SG.test-api-key", "SENDGRID_API_URL": url}):
        reset_providers()
        with pytest.raises(ProviderUnavailable) as caught:
            provider_for_channel("email").send(email())
    assert caught.value.retryable is True
    assert caught.value.status_code is None
    assert caught.value.message == "The ESP could not be reached."


def test_a_slow_esp_times_out_at_the_provider_timeout_and_is_retryable(sendgrid, settings):
    # given: the ESP answers after 2 s, and Beacon's provider timeout is 0.5 s
    settings.PROVIDER_TIMEOUT_SECONDS = 0.5
    reset_providers()
    sendgrid.delay = 2.0
    provider = provider_for_channel("email")
    # when
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable):
        provider.send(OutboundMessage(channel="email", to="ana@example.com", subject="Hi", body="Hello"))
    # then: anymail's own 30 s default did not apply
    assert time.monotonic() - started < 1.9
