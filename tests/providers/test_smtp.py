"""Email through Django's SMTP backend against a real SMTP server on loopback."""

import pytest
from django.test import override_settings

from providers.base import OutboundMessage, ProviderUnavailable, RecipientRejected
from providers.registry import provider_for_channel, reset_providers
from tests.doubles.smtp import free_port


def email(to="ana@example.com", **overrides) -> OutboundMessage:
    fields = {
        "channel": "email",
        "to": to,
        "subject": "Your booking",
        "body": "See you at 10:00.",
        "html_body": "<p>See you at 10:00.</p>",
        "reference": "delivery-1",
    }
    fields.update(overrides)
    return OutboundMessage(**fields)


def test_success_returns_the_message_id_the_server_received(smtp):
    # when
    result = provider_for_channel("email").send(email())
    # then
    assert len(smtp.messages) == 1
    received = smtp.messages[0]
    assert received["rcpt_tos"] == ["ana@example.com"]
    assert received["mail_from"] == "notifications@localhost"
    message = received["message"]
    assert result.provider_message_id == message["Message-ID"]
    assert result.provider_message_id.endswith("@localhost>")
    assert result.status == "sent"
    assert message["X-Beacon-Delivery"] == "delivery-1"
    assert message["Subject"] == "Your booking"
    assert message.get_body(("plain",)).get_content().strip() == "See you at 10:00."
    assert message.get_body(("html",)).get_content().strip() == "<p>See you at 10:00.</p>"


def test_a_rejected_recipient_is_a_permanent_failure(smtp):
    with pytest.raises(RecipientRejected) as caught:
        provider_for_channel("email").send(email("reject@example.com"))
    assert caught.value.retryable is False
    assert caught.value.status_code == 550
    assert caught.value.message == "SMTP recipient refused (550)"
    assert smtp.messages == []


def test_a_temporarily_refused_recipient_is_retryable(smtp):
    with pytest.raises(ProviderUnavailable) as caught:
        provider_for_channel("email").send(email("busy@example.com"))
    assert caught.value.retryable is True
    assert caught.value.status_code == 451
    assert caught.value.message == "SMTP recipient temporarily refused (451)"
    assert smtp.messages == []


def test_an_unreachable_smtp_server_is_retryable(smtp):
    # given: a port with nothing listening
    with override_settings(EMAIL_PORT=free_port()):
        reset_providers()
        # when
        with pytest.raises(ProviderUnavailable) as caught:
            provider_for_channel("email").send(email())
    # then
    assert caught.value.retryable is True
    assert caught.value.message == "SMTP server unreachable: ConnectionRefusedError"
    assert smtp.messages == []


def test_each_smtp_send_uses_a_fresh_connection(smtp):
    provider = provider_for_channel("email")
    provider.send(email())
    provider.send(email("bea@example.com"))
    assert provider._connection is None
    assert [m["rcpt_tos"] for m in smtp.messages] == [["ana@example.com"], ["bea@example.com"]]
