"""POST /api/v1/notifications/sms-status-callback/: signed by Twilio, moves status forward only."""

import pytest

from notifications.models import Delivery, DeliveryEvent
from tests.conftest import TWILIO_SID
from tests.factories import make_template
from tests.notifications.factories import (
    CALLBACK_PATH,
    SEND_URL,
    post_status_callback,
    sms_request,
    twilio_signature,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    """An SMS delivery sent through the Twilio double: status "sent", with its MessageSid."""
    make_template(alice)
    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post(SEND_URL, sms_request(), format="json")
    delivery = Delivery.objects.get()
    assert delivery.status == "sent"
    return delivery


def params_for(delivery, status, **extra):
    return {
        "AccountSid": TWILIO_SID,
        "MessageSid": delivery.provider_message_id,
        "SmsSid": delivery.provider_message_id,
        "MessageStatus": status,
        "SmsStatus": status,
        "To": delivery.to,
        "From": "+15005550006",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def state(delivery):
    delivery.refresh_from_db()
    return delivery.status, delivery.events.count()


def test_a_signed_callback_moves_sent_to_delivered(sent, anon_api):
    # when
    response = post_status_callback(anon_api, params_for(sent, "delivered"), query=f"delivery={sent.pk}")
    # then
    assert response.status_code == 204
    sent.refresh_from_db()
    assert sent.status == "delivered"
    assert sent.delivered_at is not None
    event = sent.events.last()
    assert (event.from_status, event.status, event.source) == ("sent", "delivered", "twilio")
    assert event.payload == {"MessageSid": sent.provider_message_id, "MessageStatus": "delivered"}
    assert sent.events.count() == 4


@pytest.mark.django_db(transaction=True)
def test_the_double_posts_callbacks_the_app_accepts(alice, alice_api, twilio, live_server, settings):
    # given: the double signs over the StatusCallback URL it was given, as Twilio does
    settings.PUBLIC_BASE_URL = live_server.url
    make_template(alice)
    twilio.callback_statuses = ["sent", "delivered"]
    # when: committed for real, so the dispatch runs on commit and the live server sees the rows
    response = alice_api.post(SEND_URL, sms_request(), format="json")
    twilio.wait_for_callbacks()
    # then
    assert response.status_code == 202
    assert [(c["status"], c["code"]) for c in twilio.callbacks] == [("sent", 204), ("delivered", 204)]
    delivery = Delivery.objects.get()
    assert delivery.status == "delivered"
    assert list(delivery.events.values_list("status", flat=True)) == ["queued", "sending", "sent", "delivered"]


@pytest.mark.parametrize("signature", ["", "bm90IGEgc2lnbmF0dXJl"], ids=["missing", "wrong"])
def test_a_missing_or_wrong_signature_is_403_and_changes_nothing(sent, anon_api, signature):
    before = state(sent)
    response = post_status_callback(
        anon_api, params_for(sent, "delivered"), query=f"delivery={sent.pk}", signature=signature
    )
    assert response.status_code == 403
    assert response.json() == {"message": "Invalid signature.", "errors": {}}
    assert state(sent) == before == ("sent", 3)


def test_a_signature_over_other_params_is_403(sent, anon_api):
    path = f"{CALLBACK_PATH}?delivery={sent.pk}"
    signature = twilio_signature(path, params_for(sent, "sent"))
    response = post_status_callback(
        anon_api, params_for(sent, "failed", ErrorCode="30003"), query=f"delivery={sent.pk}", signature=signature
    )
    assert response.status_code == 403
    assert state(sent) == ("sent", 3)


def test_a_signature_with_another_token_is_403(sent, anon_api):
    path = f"{CALLBACK_PATH}?delivery={sent.pk}"
    params = params_for(sent, "delivered")
    signature = twilio_signature(path, params, token="someone-elses-token")
    response = post_status_callback(anon_api, params, query=f"delivery={sent.pk}", signature=signature)
    assert response.status_code == 403
    assert state(sent) == ("sent", 3)


def test_a_signature_for_another_host_is_403(sent, anon_api):
    # given: signed over the host the request claims, not over PUBLIC_BASE_URL
    path = f"{CALLBACK_PATH}?delivery={sent.pk}"
    params = params_for(sent, "delivered")
    signature = twilio_signature(path, params, base_url="http://testserver")
    # when
    response = post_status_callback(anon_api, params, query=f"delivery={sent.pk}", signature=signature)
    # then
    assert response.status_code == 403
    assert state(sent) == ("sent", 3)


def test_the_signature_covers_the_query_string(sent, anon_api):
    other = Delivery.objects.create(
        account=sent.account, notification=sent.notification, channel="sms", to=sent.to, body="x", status="sent"
    )
    params = params_for(sent, "delivered")
    signature = twilio_signature(f"{CALLBACK_PATH}?delivery={sent.pk}", params)
    response = post_status_callback(anon_api, params, query=f"delivery={other.pk}", signature=signature)
    assert response.status_code == 403
    assert state(sent) == ("sent", 3)
    other.refresh_from_db()
    assert other.status == "sent"


def test_a_late_sent_after_delivered_changes_nothing(sent, anon_api):
    post_status_callback(anon_api, params_for(sent, "delivered"), query=f"delivery={sent.pk}")
    assert state(sent) == ("delivered", 4)
    response = post_status_callback(anon_api, params_for(sent, "sent"), query=f"delivery={sent.pk}")
    assert response.status_code == 204
    assert state(sent) == ("delivered", 4)


def test_progress_only_goes_up_and_final_statuses_stay(sent, anon_api):
    post_status_callback(anon_api, params_for(sent, "read"), query=f"delivery={sent.pk}")
    assert state(sent) == ("opened", 4)
    post_status_callback(anon_api, params_for(sent, "delivered"), query=f"delivery={sent.pk}")
    assert state(sent) == ("opened", 4)
    # A final status lands from any progress status...
    post_status_callback(anon_api, params_for(sent, "undelivered", ErrorCode="30005"), query=f"delivery={sent.pk}")
    sent.refresh_from_db()
    assert (sent.status, sent.error_code, sent.error_message) == ("undelivered", "30005", "Twilio error 30005")
    assert sent.failed_at is not None
    assert sent.events.count() == 5
    # ...and is never left.
    for status in ("delivered", "read", "failed", "sent"):
        post_status_callback(anon_api, params_for(sent, status), query=f"delivery={sent.pk}")
    assert state(sent) == ("undelivered", 5)


def test_failed_after_delivered_is_recorded_as_final(sent, anon_api):
    post_status_callback(anon_api, params_for(sent, "delivered"), query=f"delivery={sent.pk}")
    post_status_callback(anon_api, params_for(sent, "failed", ErrorCode="30008"), query=f"delivery={sent.pk}")
    assert state(sent) == ("failed", 5)
    post_status_callback(anon_api, params_for(sent, "delivered"), query=f"delivery={sent.pk}")
    assert state(sent) == ("failed", 5)


def test_a_repeated_callback_adds_no_second_event(sent, anon_api):
    for _ in range(3):
        response = post_status_callback(anon_api, params_for(sent, "delivered"), query=f"delivery={sent.pk}")
        assert response.status_code == 204
    assert sent.events.filter(status="delivered").count() == 1
    assert state(sent) == ("delivered", 4)


@pytest.mark.parametrize("status", ["queued", "sending", "accepted", "no-such-status"])
def test_statuses_with_nothing_to_record_change_nothing(sent, anon_api, status):
    response = post_status_callback(anon_api, params_for(sent, status), query=f"delivery={sent.pk}")
    assert response.status_code == 204
    assert state(sent) == ("sent", 3)


def test_the_delivery_is_found_by_message_sid_alone(sent, anon_api):
    response = post_status_callback(anon_api, params_for(sent, "delivered"))
    assert response.status_code == 204
    assert state(sent) == ("delivered", 4)


def test_a_mismatched_delivery_id_falls_back_to_the_message_sid(sent, anon_api):
    other = Delivery.objects.create(
        account=sent.account,
        notification=sent.notification,
        channel="sms",
        to=sent.to,
        body="x",
        status="sent",
        provider_message_id="SM" + "f" * 32,
    )
    response = post_status_callback(anon_api, params_for(sent, "delivered"), query=f"delivery={other.pk}")
    assert response.status_code == 204
    assert state(sent) == ("delivered", 4)
    other.refresh_from_db()
    assert other.status == "sent"


@pytest.mark.parametrize("query", ["", "delivery=not-a-uuid"])
def test_an_unknown_message_is_acknowledged_and_changes_nothing(sent, anon_api, query):
    events = DeliveryEvent.objects.count()
    params = {**params_for(sent, "delivered"), "MessageSid": "SM" + "0" * 32, "SmsSid": "SM" + "0" * 32}
    response = post_status_callback(anon_api, params, query=query)
    assert response.status_code == 204
    assert state(sent) == ("sent", 3)
    assert DeliveryEvent.objects.count() == events
