"""WhatsApp and voice end to end in-process: the send API -> dispatch -> the real Twilio
client -> the double, then Twilio's signed status callbacks move the delivery."""

import datetime
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from notifications.models import Delivery
from preferences.models import RecipientPreference, Suppression
from tests.conftest import TWILIO_SID
from tests.doubles.twilio import SESSION_EXPIRED_NUMBER, UNSUBSCRIBED_NUMBER
from tests.factories import make_template
from tests.notifications.factories import SEND_URL, make_recipient, twilio_signature

pytestmark = pytest.mark.django_db

PHONE = "+14155550123"
WHATSAPP_PATH = "/api/v1/notifications/whatsapp-status-callback/"
VOICE_PATH = "/api/v1/notifications/voice-status-callback/"


def spoken_template(account):
    """A template with WhatsApp and voice content, the voice script also in Spanish."""
    return make_template(
        account,
        contents=[
            {"channel": "whatsapp", "locale": "", "body": "Reminder: *{{ event_name }}* {{ start_time }}"},
            {"channel": "voice", "locale": "", "body": "Hello. This is a reminder: {{ event_name }} {{ start_time }}."},
            {"channel": "voice", "locale": "es", "body": "Hola. Le recordamos: {{ event_name }} {{ start_time }}."},
        ],
    )


def send_request(channel, phone=PHONE, **recipient) -> dict:
    return {
        "channel": channel,
        "recipient": {"phone": phone, "name": "Ana", **recipient},
        "template": "reminder",
        "context": {"event_name": "Haircut", "start_time": "at 10:00"},
    }


def send(api, capture, channel, **kwargs) -> Delivery:
    with capture(execute=True):
        response = api.post(SEND_URL, send_request(channel, **kwargs), format="json")
    assert response.status_code == 202, response.json()
    return Delivery.objects.get(pk=response.json()["deliveries"][0]["id"])


def post_callback(client, path, params, *, delivery=None, signature=None):
    """POST a Twilio status callback to `path`, signed correctly unless a signature is given."""
    full_path = path + (f"?delivery={delivery.pk}" if delivery else "")
    if signature is None:
        signature = twilio_signature(full_path, params)
    headers = {"HTTP_X_TWILIO_SIGNATURE": signature} if signature else {}
    return client.post(full_path, data=urlencode(params), content_type="application/x-www-form-urlencoded", **headers)


def call_params(delivery, status, **extra) -> dict:
    return {
        "AccountSid": TWILIO_SID,
        "CallSid": delivery.provider_message_id,
        "CallStatus": status,
        "Direction": "outbound-api",
        "To": delivery.to,
        "From": "+15005550006",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def message_params(delivery, status, **extra) -> dict:
    return {
        "AccountSid": TWILIO_SID,
        "MessageSid": delivery.provider_message_id,
        "MessageStatus": status,
        "To": f"whatsapp:{delivery.to}",
        "From": "whatsapp:+14155238886",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def state(delivery):
    delivery.refresh_from_db()
    return delivery.status, delivery.events.count()


@pytest.fixture
def sent_call(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    spoken_template(alice)
    delivery = send(alice_api, django_capture_on_commit_callbacks, "voice")
    assert delivery.status == "sent"
    return delivery


@pytest.fixture
def sent_whatsapp(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    spoken_template(alice)
    delivery = send(alice_api, django_capture_on_commit_callbacks, "whatsapp")
    assert delivery.status == "sent"
    return delivery


# --- Sending ----------------------------------------------------------------------------


def test_whatsapp_is_sent_to_a_whatsapp_address_with_its_own_callback(sent_whatsapp, twilio):
    assert twilio.requests == [
        {
            "To": f"whatsapp:{PHONE}",
            "From": "whatsapp:+14155238886",
            "Body": "Reminder: *Haircut* at 10:00",
            "StatusCallback": (
                f"http://127.0.0.1:8000/api/v1/notifications/whatsapp-status-callback/?delivery={sent_whatsapp.pk}"
            ),
        }
    ]
    assert (sent_whatsapp.channel, sent_whatsapp.to, sent_whatsapp.provider) == ("whatsapp", PHONE, "twilio")
    assert sent_whatsapp.provider_message_id.startswith("SM")


def test_a_call_reads_the_voice_script_in_the_recipients_language(
    alice, alice_api, twilio, django_capture_on_commit_callbacks
):
    # given
    spoken_template(alice)
    # when
    delivery = send(alice_api, django_capture_on_commit_callbacks, "voice", locale="es-MX")
    # then
    assert delivery.locale == "es"
    assert delivery.provider_message_id.startswith("CA")
    assert twilio.requests == [
        {
            "To": PHONE,
            "From": "+15005550006",
            "Twiml": (
                '<?xml version="1.0" encoding="UTF-8"?><Response>'
                '<Say language="es-ES">Hola. Le recordamos: Haircut at 10:00.</Say></Response>'
            ),
            "StatusCallback": f"http://127.0.0.1:8000/api/v1/notifications/voice-status-callback/?delivery={delivery.pk}",
            "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
            "MachineDetection": "Enable",
        }
    ]


def test_a_call_without_a_locale_is_read_in_us_english(sent_call, twilio):
    assert sent_call.locale == ""
    assert '<Say language="en-US">Hello. This is a reminder: Haircut at 10:00.</Say>' in twilio.requests[0]["Twiml"]


def test_whatsapp_outside_the_session_window_fails_with_a_clear_reason(
    alice, alice_api, twilio, django_capture_on_commit_callbacks
):
    spoken_template(alice)
    delivery = send(alice_api, django_capture_on_commit_callbacks, "whatsapp", phone=SESSION_EXPIRED_NUMBER)
    assert (delivery.status, delivery.error_code) == ("failed", "63016")
    assert "24-hour session window" in delivery.error_message
    assert twilio.sent_count() == 1
    assert Suppression.objects.count() == 0


def test_an_unsubscribed_whatsapp_number_fails_and_is_suppressed_on_whatsapp(
    alice, alice_api, twilio, django_capture_on_commit_callbacks
):
    # given
    spoken_template(alice)
    # when
    first = send(alice_api, django_capture_on_commit_callbacks, "whatsapp", phone=UNSUBSCRIBED_NUMBER)
    second = send(alice_api, django_capture_on_commit_callbacks, "whatsapp", phone=UNSUBSCRIBED_NUMBER)
    # then
    assert (first.status, first.error_code) == ("failed", "21610")
    assert list(Suppression.objects.values_list("channel", "address", "reason")) == [
        ("whatsapp", UNSUBSCRIBED_NUMBER, "stop_keyword")
    ]
    assert second.status == "suppressed"
    assert twilio.sent_count() == 1


def test_quiet_hours_defer_a_voice_call(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    # given: the recipient's quiet hours hold the hour around now, in their zone
    spoken_template(alice)
    recipient = make_recipient(alice, phone=PHONE, timezone="UTC")
    now = timezone.now().astimezone(datetime.UTC)
    RecipientPreference.objects.create(
        account=alice,
        recipient=recipient,
        quiet_hours_enabled=True,
        quiet_hours_start=(now - datetime.timedelta(hours=1)).time().replace(second=0, microsecond=0),
        quiet_hours_end=(now + datetime.timedelta(hours=1)).time().replace(second=0, microsecond=0),
    )
    # when
    delivery = send(alice_api, django_capture_on_commit_callbacks, "voice", timezone="UTC")
    # then
    assert delivery.status == "scheduled"
    assert now + datetime.timedelta(minutes=55) <= delivery.next_attempt_at <= now + datetime.timedelta(hours=1)
    assert "quiet hours" in delivery.events.get().detail
    assert twilio.sent_count() == 0


# --- Call status callbacks --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_double_posts_call_callbacks_the_app_accepts(alice, alice_api, twilio, live_server, settings):
    # given
    settings.PUBLIC_BASE_URL = live_server.url
    spoken_template(alice)
    twilio.call_callback_statuses = ["initiated", "ringing", "in-progress", "completed"]
    # when: committed for real, so the dispatch runs on commit and the live server sees the rows
    response = alice_api.post(SEND_URL, send_request("voice"), format="json")
    twilio.wait_for_callbacks()
    # then
    assert response.status_code == 202
    delivery = Delivery.objects.get()
    # (the double is shared by the session: an earlier test's late callback may be in its list)
    assert [(c["status"], c["code"]) for c in twilio.callbacks if str(delivery.pk) in c["url"]] == [
        ("initiated", 204),
        ("ringing", 204),
        ("in-progress", 204),
        ("completed", 204),
    ]
    assert delivery.status == "delivered"
    assert delivery.delivered_at is not None
    assert list(delivery.events.values_list("status", flat=True)) == ["queued", "sending", "sent", "delivered"]
    assert delivery.events.last().payload == {
        "CallSid": delivery.provider_message_id,
        "CallStatus": "completed",
        "CallDuration": "12",
        "AnsweredBy": "human",
    }


@pytest.mark.parametrize("call_status", ["queued", "initiated", "ringing", "in-progress", "answered"])
def test_call_progress_changes_nothing_recorded(sent_call, anon_api, call_status):
    response = post_callback(anon_api, VOICE_PATH, call_params(sent_call, call_status), delivery=sent_call)
    assert response.status_code == 204
    assert state(sent_call) == ("sent", 3)


def test_a_completed_call_is_delivered_with_who_answered_and_how_long(sent_call, anon_api):
    params = call_params(sent_call, "completed", CallDuration="31", AnsweredBy="machine_end_beep")
    response = post_callback(anon_api, VOICE_PATH, params, delivery=sent_call)
    assert response.status_code == 204
    event = sent_call.events.last()
    assert (event.from_status, event.status, event.source) == ("sent", "delivered", "twilio")
    assert event.payload == {
        "CallSid": sent_call.provider_message_id,
        "CallStatus": "completed",
        "CallDuration": "31",
        "AnsweredBy": "machine_end_beep",
    }
    assert state(sent_call) == ("delivered", 4)


@pytest.mark.parametrize(
    ("call_status", "expected"),
    [("busy", "undelivered"), ("no-answer", "undelivered"), ("failed", "failed"), ("canceled", "cancelled")],
)
def test_a_call_that_did_not_connect_ends_the_delivery(sent_call, anon_api, call_status, expected):
    response = post_callback(anon_api, VOICE_PATH, call_params(sent_call, call_status), delivery=sent_call)
    assert response.status_code == 204
    sent_call.refresh_from_db()
    assert sent_call.status == expected
    if expected != "cancelled":
        assert (sent_call.error_code, sent_call.error_message) == ("", f"Twilio call status {call_status}")
    assert sent_call.events.last().payload == {"CallSid": sent_call.provider_message_id, "CallStatus": call_status}
    # a final status is never left
    post_callback(anon_api, VOICE_PATH, call_params(sent_call, "completed", CallDuration="3"), delivery=sent_call)
    assert state(sent_call) == (expected, 4)


def test_a_call_is_found_by_its_call_sid_alone(sent_call, anon_api):
    response = post_callback(anon_api, VOICE_PATH, call_params(sent_call, "completed", CallDuration="5"))
    assert response.status_code == 204
    assert state(sent_call) == ("delivered", 4)


def test_a_call_callback_does_not_move_a_delivery_of_another_channel(sent_whatsapp, anon_api):
    # given: a call callback naming the WhatsApp delivery and its SID
    params = call_params(sent_whatsapp, "completed", CallDuration="5")
    # when
    response = post_callback(anon_api, VOICE_PATH, params, delivery=sent_whatsapp)
    # then
    assert response.status_code == 204
    assert state(sent_whatsapp) == ("sent", 3)


# --- WhatsApp status callbacks ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_double_posts_whatsapp_callbacks_the_app_accepts(alice, alice_api, twilio, live_server, settings):
    settings.PUBLIC_BASE_URL = live_server.url
    spoken_template(alice)
    twilio.callback_statuses = ["sent", "delivered", "read"]
    response = alice_api.post(SEND_URL, send_request("whatsapp"), format="json")
    twilio.wait_for_callbacks()
    assert response.status_code == 202
    delivery = Delivery.objects.get()
    # (the double is shared by the session: an earlier test's late callback may be in its list)
    ours = [(c["status"], c["code"]) for c in twilio.callbacks if str(delivery.pk) in c["url"]]
    assert ours == [("sent", 204), ("delivered", 204), ("read", 204)]
    assert delivery.status == "opened"
    assert list(delivery.events.values_list("status", flat=True)) == [
        "queued",
        "sending",
        "sent",
        "delivered",
        "opened",
    ]


def test_an_undelivered_whatsapp_message_records_its_error(sent_whatsapp, anon_api):
    params = message_params(sent_whatsapp, "undelivered", ErrorCode="63024")
    response = post_callback(anon_api, WHATSAPP_PATH, params, delivery=sent_whatsapp)
    assert response.status_code == 204
    sent_whatsapp.refresh_from_db()
    assert (sent_whatsapp.status, sent_whatsapp.error_code, sent_whatsapp.error_message) == (
        "undelivered",
        "63024",
        "Twilio error 63024",
    )


def test_a_21610_in_a_whatsapp_callback_suppresses_the_number_on_whatsapp(sent_whatsapp, anon_api):
    params = message_params(sent_whatsapp, "failed", ErrorCode="21610")
    post_callback(anon_api, WHATSAPP_PATH, params, delivery=sent_whatsapp)
    assert state(sent_whatsapp) == ("failed", 4)
    assert list(Suppression.objects.values_list("channel", "address")) == [("whatsapp", PHONE)]


# --- Signatures -------------------------------------------------------------------------


@pytest.mark.parametrize("signature", ["", "bm90IGEgc2lnbmF0dXJl"], ids=["missing", "wrong"])
def test_a_forged_call_callback_is_403_and_changes_nothing(sent_call, anon_api, signature):
    params = call_params(sent_call, "completed", CallDuration="31", AnsweredBy="human")
    response = post_callback(anon_api, VOICE_PATH, params, delivery=sent_call, signature=signature)
    assert response.status_code == 403
    assert response.json() == {"message": "Invalid signature.", "errors": {}}
    assert state(sent_call) == ("sent", 3)


def test_a_call_callback_signed_for_other_params_is_403(sent_call, anon_api):
    signature = twilio_signature(f"{VOICE_PATH}?delivery={sent_call.pk}", call_params(sent_call, "completed"))
    params = call_params(sent_call, "no-answer")
    response = post_callback(anon_api, VOICE_PATH, params, delivery=sent_call, signature=signature)
    assert response.status_code == 403
    assert state(sent_call) == ("sent", 3)


def test_a_callback_signed_for_the_sms_url_is_403_on_the_whatsapp_url(sent_whatsapp, anon_api):
    params = message_params(sent_whatsapp, "delivered")
    signature = twilio_signature(f"/api/v1/notifications/sms-status-callback/?delivery={sent_whatsapp.pk}", params)
    response = post_callback(anon_api, WHATSAPP_PATH, params, delivery=sent_whatsapp, signature=signature)
    assert response.status_code == 403
    assert state(sent_whatsapp) == ("sent", 3)


@pytest.mark.parametrize("signature", ["", "bm90IGEgc2lnbmF0dXJl"], ids=["missing", "wrong"])
def test_a_forged_whatsapp_callback_is_403_and_changes_nothing(sent_whatsapp, anon_api, signature):
    params = message_params(sent_whatsapp, "read")
    response = post_callback(anon_api, WHATSAPP_PATH, params, delivery=sent_whatsapp, signature=signature)
    assert response.status_code == 403
    assert state(sent_whatsapp) == ("sent", 3)
    assert Suppression.objects.count() == 0
