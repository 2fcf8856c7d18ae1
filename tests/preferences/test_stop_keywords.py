"""POST /api/v1/notifications/sms-inbound/: Twilio-signed inbound SMS to the platform number.
STOP and its synonyms suppress the sender's number for every account that has it as a
recipient; START and UNSTOP lift a STOP suppression and nothing else."""

import logging
from urllib.parse import urlencode

import pytest

from notifications.api import EMPTY_TWIML
from notifications.models import Delivery
from preferences.models import ConsentRecord, Suppression, address_hash
from preferences.services import suppression_add
from tests.conftest import TWILIO_FROM, TWILIO_SID
from tests.factories import make_template
from tests.notifications.factories import SEND_URL, make_recipient, sms_request, twilio_signature

pytestmark = pytest.mark.django_db

INBOUND_PATH = "/api/v1/notifications/sms-inbound/"
PHONE = "+14155550123"
STOP_WORDS = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"]


def inbound_params(body: str, *, from_: str = PHONE, **extra) -> dict:
    return {
        "AccountSid": TWILIO_SID,
        "MessageSid": "SM" + "1" * 32,
        "SmsSid": "SM" + "1" * 32,
        "From": from_,
        "To": TWILIO_FROM,
        "Body": body,
        "NumMedia": "0",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def post_inbound(client, params: dict, *, signature: str | None = None):
    """POST an inbound message, signed correctly unless a signature is given."""
    if signature is None:
        signature = twilio_signature(INBOUND_PATH, params)
    headers = {"HTTP_X_TWILIO_SIGNATURE": signature} if signature else {}
    return client.post(
        INBOUND_PATH, data=urlencode(params), content_type="application/x-www-form-urlencoded", **headers
    )


def send_sms(client, capture):
    with capture(execute=True):
        response = client.post(SEND_URL, sms_request(), format="json")
    assert response.status_code == 202
    return Delivery.objects.get(pk=response.json()["deliveries"][0]["id"])


def suppressions():
    return list(Suppression.objects.order_by("account__username").values_list("account__username", "channel", "reason"))


def assert_empty_twiml(response):
    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml"
    assert response.content.decode() == EMPTY_TWIML


@pytest.fixture
def texted(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    """Alice has sent an SMS to PHONE through the Twilio double."""
    make_template(alice)
    delivery = send_sms(alice_api, django_capture_on_commit_callbacks)
    assert delivery.status == "sent"
    return delivery


def test_stop_suppresses_the_number_and_the_next_sms_is_stored_suppressed(
    alice, alice_api, texted, twilio, anon_api, django_capture_on_commit_callbacks
):
    # when
    response = post_inbound(anon_api, inbound_params("STOP"))
    # then: empty TwiML (Twilio sends the confirmation), the number suppressed, the ledger written
    assert_empty_twiml(response)
    suppression = Suppression.objects.get()
    assert (suppression.account, suppression.channel, suppression.address, suppression.reason) == (
        alice,
        "sms",
        PHONE,
        "stop_keyword",
    )
    assert suppression.address_hash == address_hash("sms", PHONE)
    assert suppression.detail == "STOP from the recipient"
    record = ConsentRecord.objects.get()
    assert (record.account, record.granted, record.method, record.channel, record.category, record.detail) == (
        alice,
        False,
        "keyword",
        "sms",
        "*",
        "STOP",
    )
    assert record.address_hash == address_hash("sms", PHONE)
    # and the next send is stored suppressed, saying why, and never reaches Twilio
    later = send_sms(alice_api, django_capture_on_commit_callbacks)
    assert later.status == "suppressed"
    assert (later.error_code, later.error_message) == (
        "skipped",
        "suppressed: the sms address is suppressed (stop_keyword)",
    )
    assert later.events.get().detail == "suppressed: the sms address is suppressed (stop_keyword)"
    assert twilio.sent_count() == 1


@pytest.mark.parametrize("body", [*STOP_WORDS, "stop", "  Stop \n", "optout", "StopAll"])
def test_every_stop_keyword_in_any_case_suppresses(alice, anon_api, twilio, body):
    make_recipient(alice, phone=PHONE)
    response = post_inbound(anon_api, inbound_params(body))
    assert_empty_twiml(response)
    assert suppressions() == [("alice", "sms", "stop_keyword")]
    assert ConsentRecord.objects.get().detail == body.strip().upper()


def test_stop_suppresses_for_every_account_that_has_the_number(alice, bob, charlie, anon_api, twilio):
    # given: alice and bob both have the number; charlie has someone else
    make_recipient(alice, phone=PHONE)
    make_recipient(bob, phone=PHONE, email="ana@bob.example")
    make_recipient(bob, phone=PHONE, email="ana.other@bob.example", external_id="second")
    make_recipient(charlie, phone="+14155550999")
    # when
    post_inbound(anon_api, inbound_params("STOP"))
    # then: one suppression and one record per account, none for charlie
    assert suppressions() == [("alice", "sms", "stop_keyword"), ("bob", "sms", "stop_keyword")]
    assert sorted(ConsentRecord.objects.values_list("account__username", flat=True)) == ["alice", "bob"]


def test_a_repeated_stop_keeps_one_suppression(alice, anon_api, twilio):
    make_recipient(alice, phone=PHONE)
    for body in ("STOP", "stop", "QUIT"):
        assert_empty_twiml(post_inbound(anon_api, inbound_params(body)))
    assert suppressions() == [("alice", "sms", "stop_keyword")]
    assert Suppression.objects.get().detail == "STOP from the recipient"


@pytest.mark.parametrize("body", ["START", "unstop", " Start "])
def test_start_lifts_the_stop_and_sms_goes_out_again(
    alice, alice_api, texted, twilio, anon_api, django_capture_on_commit_callbacks, body
):
    # given
    post_inbound(anon_api, inbound_params("STOP"))
    assert Suppression.objects.count() == 1
    # when
    response = post_inbound(anon_api, inbound_params(body))
    # then
    assert_empty_twiml(response)
    assert Suppression.objects.count() == 0
    ledger = list(ConsentRecord.objects.order_by("recorded_at", "id").values_list("granted", "method", "detail"))
    assert ledger == [(False, "keyword", "STOP"), (True, "keyword", body.strip().upper())]
    again = send_sms(alice_api, django_capture_on_commit_callbacks)
    assert again.status == "sent"
    assert twilio.sent_count() == 2


@pytest.mark.parametrize("reason", ["bounced", "manual"])
def test_start_does_not_lift_a_suppression_of_another_kind(alice, anon_api, twilio, reason):
    # given: the number was suppressed for a reason other than STOP
    make_recipient(alice, phone=PHONE)
    suppression_add(account=alice, channel="sms", address=PHONE, reason=reason, detail="by the operator")
    # when
    response = post_inbound(anon_api, inbound_params("START"))
    # then: it stays; the person's START is still recorded
    assert_empty_twiml(response)
    assert suppressions() == [("alice", "sms", reason)]
    record = ConsentRecord.objects.get()
    assert (record.granted, record.detail) == (True, f"START; the {reason} suppression stays")


def test_start_lifts_only_the_accounts_whose_suppression_is_a_stop(alice, bob, anon_api, twilio):
    make_recipient(alice, phone=PHONE)
    make_recipient(bob, phone=PHONE)
    post_inbound(anon_api, inbound_params("STOP"))
    Suppression.objects.filter(account=bob).update(reason="manual")
    post_inbound(anon_api, inbound_params("START"))
    assert suppressions() == [("bob", "sms", "manual")]


@pytest.mark.parametrize(
    "signature",
    ["", "bm90IGEgc2lnbmF0dXJl", "other-params", "other-token", "other-host"],
)
def test_a_forged_inbound_message_is_403_and_changes_nothing(alice, anon_api, twilio, signature):
    # given
    make_recipient(alice, phone=PHONE)
    params = inbound_params("STOP")
    if signature == "other-params":
        signature = twilio_signature(INBOUND_PATH, inbound_params("Hello"))
    elif signature == "other-token":
        signature = twilio_signature(INBOUND_PATH, params, token="someone-elses-token")
    elif signature == "other-host":
        signature = twilio_signature(INBOUND_PATH, params, base_url="http://testserver")
    # when
    response = post_inbound(anon_api, params, signature=signature)
    # then
    assert response.status_code == 403
    assert response.json() == {"message": "Invalid signature.", "errors": {}}
    assert Suppression.objects.count() == 0
    assert ConsentRecord.objects.count() == 0


def test_without_a_twilio_auth_token_inbound_messages_are_refused(alice, anon_api, settings):
    make_recipient(alice, phone=PHONE)
    settings.TWILIO_AUTH_TOKEN = ""
    response = post_inbound(anon_api, inbound_params("STOP"), signature="c2lnbmF0dXJl")
    assert response.status_code == 403
    assert Suppression.objects.count() == 0


@pytest.mark.parametrize("body", ["stop please", "Hello", "", "STOP STOP", "START now", "HELP", "S T O P"])
def test_a_message_that_is_not_a_keyword_changes_nothing(alice, anon_api, twilio, body):
    make_recipient(alice, phone=PHONE)
    response = post_inbound(anon_api, inbound_params(body))
    assert_empty_twiml(response)
    assert Suppression.objects.count() == 0
    assert ConsentRecord.objects.count() == 0


def test_start_from_a_number_that_never_stopped_lifts_nothing_else(alice, anon_api, twilio):
    make_recipient(alice, phone=PHONE)
    suppression_add(account=alice, channel="sms", address="+14155550999", reason="stop_keyword")
    post_inbound(anon_api, inbound_params("START"))
    assert Suppression.objects.get().address == "+14155550999"
    assert ConsentRecord.objects.get().granted is True


def test_a_number_no_account_knows_records_nothing(alice, anon_api, twilio):
    make_recipient(alice, phone="+14155550999")
    response = post_inbound(anon_api, inbound_params("STOP"))
    assert_empty_twiml(response)
    assert Suppression.objects.count() == 0
    assert ConsentRecord.objects.count() == 0


def test_twilios_opt_out_type_counts_for_the_accounts_own_keywords(alice, anon_api, twilio):
    # given: Advanced Opt-Out configured with an extra keyword Beacon does not know
    make_recipient(alice, phone=PHONE)
    # when
    post_inbound(anon_api, inbound_params("ARRET", OptOutType="STOP"))
    # then
    assert suppressions() == [("alice", "sms", "stop_keyword")]
    post_inbound(anon_api, inbound_params("HELP", OptOutType="HELP"))
    assert suppressions() == [("alice", "sms", "stop_keyword")]
    post_inbound(anon_api, inbound_params("REPRENDRE", OptOutType="START"))
    assert suppressions() == []


def test_the_log_names_the_keyword_but_not_the_message_or_the_number(alice, anon_api, twilio, caplog):
    make_recipient(alice, phone=PHONE)
    with caplog.at_level(logging.INFO, logger="beacon"):
        post_inbound(anon_api, inbound_params("please call me on 555 1234"))
        post_inbound(anon_api, inbound_params("Stop"))
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "inbound sms STOP from ***0123: stop applied to 1 account(s)" in text
    assert "call me" not in text
    assert PHONE not in text


def test_a_delivery_waiting_when_stop_arrives_is_not_sent(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    """A delivery accepted before the STOP (scheduled, or queued behind others) is checked
    again when a worker claims it, and ends suppressed instead of going out."""
    from datetime import timedelta

    from django.utils import timezone

    from notifications.models import Delivery
    from notifications.services import deliveries_dispatch
    from preferences.services import suppression_add
    from tests.factories import make_template
    from tests.notifications.factories import SEND_URL, sms_request

    make_template(alice)
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    response = alice_api.post(SEND_URL, sms_request(scheduled_for=later), format="json")
    delivery = Delivery.objects.get(pk=response.json()["deliveries"][0]["id"])
    suppression_add(account=alice, channel="sms", address=delivery.to, reason="stop_keyword")
    Delivery.objects.filter(pk=delivery.pk).update(status="queued", next_attempt_at=timezone.now())
    outcome = deliveries_dispatch(items=[(delivery.pk, 0)])
    delivery.refresh_from_db()
    assert outcome == {str(delivery.pk): "suppressed"}
    assert (delivery.status, delivery.attempt_count, delivery.error_code) == ("suppressed", 0, "skipped")
    assert "stop_keyword" in delivery.error_message
    assert twilio.sent_count() == 0
    assert list(delivery.events.values_list("from_status", "status", "source"))[-1] == (
        "sending",
        "suppressed",
        "dispatch",
    )
