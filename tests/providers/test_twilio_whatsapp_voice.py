"""The Twilio adapter's WhatsApp (Messages API) and voice (Calls API) channels: the
official client against the local double, with Twilio's real error answers."""

import pytest
from django.test import override_settings

from notifications.services.inbound import unsubscribed_errors_suppress
from preferences.models import Suppression, SuppressionReason
from providers.base import (
    OutboundMessage,
    ProviderConfigurationError,
    ProviderUnavailable,
    RecipientRejected,
)
from providers.registry import provider_for_channel, providers_configuration, reset_providers
from providers.twilio_sms import voice_language, voice_twiml
from tests.doubles.twilio import INVALID_NUMBER, SESSION_EXPIRED_NUMBER, UNSUBSCRIBED_NUMBER

CALLBACK = "https://beacon.example/api/v1/notifications/voice-status-callback/?delivery=1"


def whatsapp(to="+14155550123", **overrides) -> OutboundMessage:
    fields = {"channel": "whatsapp", "to": to, "body": "Reminder: Haircut at 10:00"}
    fields.update(overrides)
    return OutboundMessage(**fields)


def voice(to="+14155550123", **overrides) -> OutboundMessage:
    fields = {"channel": "voice", "to": to, "body": "Your haircut is at 10:00."}
    fields.update(overrides)
    return OutboundMessage(**fields)


# --- WhatsApp -------------------------------------------------------------------------


def test_whatsapp_goes_to_a_whatsapp_address_from_the_whatsapp_sender(twilio):
    # when
    result = provider_for_channel("whatsapp").send(
        whatsapp(status_callback_url="https://beacon.example/api/v1/notifications/whatsapp-status-callback/?delivery=1")
    )
    # then
    assert twilio.requests == [
        {
            "To": "whatsapp:+14155550123",
            "From": "whatsapp:+14155238886",
            "Body": "Reminder: Haircut at 10:00",
            "StatusCallback": "https://beacon.example/api/v1/notifications/whatsapp-status-callback/?delivery=1",
        }
    ]
    assert result.provider_message_id.startswith("SM")
    assert (result.status, result.response_code) == ("sent", 201)


def test_whatsapp_sender_without_prefix_gets_one(twilio):
    with override_settings(TWILIO_WHATSAPP_FROM="+14155238886"):
        reset_providers()
        provider_for_channel("whatsapp").send(whatsapp())
    assert twilio.requests[0]["From"] == "whatsapp:+14155238886"


def test_whatsapp_falls_back_to_the_messaging_service(twilio):
    with override_settings(TWILIO_WHATSAPP_FROM="", TWILIO_MESSAGING_SERVICE_SID="MG" + "1" * 32):
        reset_providers()
        provider_for_channel("whatsapp").send(whatsapp())
    assert twilio.requests == [
        {"To": "whatsapp:+14155550123", "MessagingServiceSid": "MG" + "1" * 32, "Body": "Reminder: Haircut at 10:00"}
    ]


def test_whatsapp_outside_the_session_window_is_permanent_with_a_clear_message(twilio):
    with pytest.raises(RecipientRejected) as caught:
        provider_for_channel("whatsapp").send(whatsapp(SESSION_EXPIRED_NUMBER))
    assert caught.value.retryable is False
    assert (caught.value.status_code, caught.value.code) == (400, "63016")
    assert caught.value.message == (
        "Twilio answered HTTP 400, error 63016: outside WhatsApp's 24-hour session window: "
        "only an approved template message can be sent"
    )


def test_the_session_window_error_is_whatsapp_only(twilio):
    result = provider_for_channel("sms").send(OutboundMessage(channel="sms", to=SESSION_EXPIRED_NUMBER, body="Hi"))
    assert result.status == "sent"


@pytest.mark.parametrize("channel", ["whatsapp", "voice"])
def test_an_invalid_number_is_permanent(twilio, channel):
    with pytest.raises(RecipientRejected) as caught:
        provider_for_channel(channel).send(OutboundMessage(channel=channel, to=INVALID_NUMBER, body="Hi"))
    assert caught.value.retryable is False
    assert (caught.value.status_code, caught.value.code) == (400, "21211")
    assert caught.value.message == "Twilio answered HTTP 400, error 21211"
    assert twilio.sent_count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("channel", ["whatsapp", "voice"])
def test_an_unsubscribed_number_is_permanent_and_suppressed_on_its_channel(twilio, alice, channel):
    # when
    with pytest.raises(RecipientRejected) as caught:
        provider_for_channel(channel).send(OutboundMessage(channel=channel, to=UNSUBSCRIBED_NUMBER, body="Hi"))
    # the path dispatch and the status callbacks take with a provider's error code
    added = unsubscribed_errors_suppress(reports=[(alice.pk, channel, UNSUBSCRIBED_NUMBER, caught.value.code)])
    # then
    assert caught.value.retryable is False
    assert (caught.value.status_code, caught.value.code) == (400, "21610")
    assert added == 1
    suppression = Suppression.objects.get()
    assert (suppression.account, suppression.channel, suppression.address, suppression.reason) == (
        alice,
        channel,
        UNSUBSCRIBED_NUMBER,
        SuppressionReason.STOP,
    )
    assert suppression.detail == "Twilio error 21610: the number replied STOP to the sender"


# --- Voice ----------------------------------------------------------------------------


def test_a_call_reads_the_message_with_say_in_the_delivery_language(twilio):
    # when
    result = provider_for_channel("voice").send(
        voice(body='Su cita es a las 10:00 <mañana> & "pronto"', locale="es", status_callback_url=CALLBACK)
    )
    # then
    assert twilio.requests == [
        {
            "To": "+14155550123",
            "From": "+15005550006",
            "Twiml": (
                '<?xml version="1.0" encoding="UTF-8"?><Response>'
                '<Say language="es-ES">Su cita es a las 10:00 &lt;mañana&gt; &amp; "pronto"</Say></Response>'
            ),
            "StatusCallback": CALLBACK,
            "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
            "MachineDetection": "Enable",
        }
    ]
    assert result.provider_message_id.startswith("CA")
    assert len(result.provider_message_id) == 34
    assert (result.status, result.response_code, result.cost) == ("sent", 201, "")


def test_a_call_comes_from_the_voice_number_when_set(twilio):
    with override_settings(TWILIO_VOICE_FROM="+15005550009"):
        reset_providers()
        provider_for_channel("voice").send(voice())
    assert twilio.requests[0]["From"] == "+15005550009"
    assert '<Say language="en-US">Your haircut is at 10:00.</Say>' in twilio.requests[0]["Twiml"]
    assert "StatusCallback" not in twilio.requests[0]


@pytest.mark.parametrize(
    ("locale", "language"),
    [
        ("", "en-US"),
        ("en", "en-US"),
        ("es", "es-ES"),
        ("es-MX", "es-MX"),
        ("es_mx", "es-MX"),
        ("es-AR", "es-ES"),
        ("fr", "fr-FR"),
        ("pt", "pt-BR"),
        ("de-AT", "de-DE"),
        ("ja", "en-US"),
    ],
)
def test_voice_language(locale, language):
    assert voice_language(locale) == language


def test_voice_twiml_escapes_the_text():
    assert voice_twiml("1 < 2 & </Say><Hangup/>", locale="fr") == (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Say language="fr-FR">1 &lt; 2 &amp; &lt;/Say&gt;&lt;Hangup/&gt;</Say></Response>'
    )


@pytest.mark.parametrize("channel", ["whatsapp", "voice"])
def test_429_is_retryable_with_retry_after(twilio, channel):
    twilio.script = [(429, {"Retry-After": "7"}, {"code": 20429, "message": "Too many requests", "status": 429})]
    with pytest.raises(ProviderUnavailable) as caught:
        provider_for_channel(channel).send(OutboundMessage(channel=channel, to="+14155550123", body="Hi"))
    assert caught.value.retryable is True
    assert (caught.value.status_code, caught.value.retry_after) == (429, 7.0)


@pytest.mark.parametrize("channel", ["whatsapp", "voice"])
def test_5xx_is_retryable(twilio, channel):
    twilio.script = [(503, {}, {"code": 20500, "message": "Internal error", "status": 503})]
    with pytest.raises(ProviderUnavailable) as caught:
        provider_for_channel(channel).send(OutboundMessage(channel=channel, to="+14155550123", body="Hi"))
    assert (caught.value.status_code, caught.value.retryable) == (503, True)


# --- Configuration --------------------------------------------------------------------


def test_a_missing_sender_is_reported_per_channel_and_refuses_only_that_channel(twilio):
    with override_settings(TWILIO_WHATSAPP_FROM="", TWILIO_FROM_NUMBER="", TWILIO_VOICE_FROM=""):
        reset_providers()
        report = providers_configuration()
        with pytest.raises(ProviderConfigurationError) as caught:
            provider_for_channel("voice").send(voice())
        with pytest.raises(ProviderConfigurationError):
            provider_for_channel("whatsapp").send(whatsapp())
    assert report["whatsapp"] == {
        "provider": "twilio",
        "configured": False,
        "problems": ["TWILIO_WHATSAPP_FROM or TWILIO_MESSAGING_SERVICE_SID must be set"],
    }
    assert report["voice"] == {
        "provider": "twilio",
        "configured": False,
        "problems": ["TWILIO_VOICE_FROM or TWILIO_FROM_NUMBER must be set"],
    }
    assert report["sms"]["problems"] == ["TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID must be set"]
    assert caught.value.message == "TWILIO_VOICE_FROM or TWILIO_FROM_NUMBER must be set"
    assert twilio.sent_count() == 0


def test_a_configured_sender_makes_each_channel_ready(twilio):
    report = providers_configuration()
    for channel in ("sms", "whatsapp", "voice"):
        assert report[channel] == {"provider": "twilio", "configured": True, "problems": []}
