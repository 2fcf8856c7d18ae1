"""Providers telling Beacon that an address is gone: an ESP's hard bounce or spam complaint
(through django-anymail's tracking webhook) and Twilio's error 21610 (the number replied
STOP to the sender), in a status callback or as the answer to a send, suppress the
address for the account; the next send to it is stored suppressed and never sent."""

import pytest

from notifications.models import Delivery
from notifications.services.inbound import unsubscribed_errors_suppress
from preferences.models import ConsentRecord, Suppression
from tests.conftest import TWILIO_SID
from tests.factories import make_template
from tests.notifications.factories import SEND_URL, email_request, make_delivery, post_status_callback, sms_request
from tests.notifications.test_anymail_tracking import post_events, sendgrid_event, webhook_secret

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

UNSUBSCRIBED = (400, {}, {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400})


def send(client, capture, body) -> Delivery:
    with capture(execute=True):
        response = client.post(SEND_URL, body, format="json")
    assert response.status_code == 202
    return Delivery.objects.get(pk=response.json()["deliveries"][0]["id"])


def suppressions():
    return list(
        Suppression.objects.order_by("account__username", "channel", "address").values_list(
            "account__username", "channel", "address", "reason"
        )
    )


@pytest.fixture
def emailed(alice, alice_api, smtp, django_capture_on_commit_callbacks):
    """An email to ana@example.com sent over the real SMTP server, with the webhook secret set."""
    delivery = send(alice_api, django_capture_on_commit_callbacks, email_request())
    assert delivery.status == "sent"
    with webhook_secret():
        yield delivery


# --- Email: anymail events --------------------------------------------------------------


def test_a_hard_bounce_suppresses_the_address_and_the_next_email_is_not_sent(
    alice, alice_api, emailed, smtp, anon_api, django_capture_on_commit_callbacks
):
    # when
    response = post_events(
        anon_api,
        [sendgrid_event("bounce", smtp_id=emailed.provider_message_id, reason="550 5.1.1 No such user", type="bounce")],
    )
    # then
    assert response.status_code == 200
    emailed.refresh_from_db()
    assert emailed.status == "bounced"
    assert suppressions() == [("alice", "email", "ana@example.com", "bounced")]
    assert Suppression.objects.get().detail == "SendGrid: 550 5.1.1 No such user"
    assert ConsentRecord.objects.count() == 0
    # and the next email to that address
    later = send(alice_api, django_capture_on_commit_callbacks, email_request())
    assert later.status == "suppressed"
    assert later.error_message == "suppressed: the email address is suppressed (bounced)"
    assert len(smtp.messages) == 1


def test_a_spam_complaint_suppresses_and_withdraws_consent(alice, emailed, anon_api):
    # when
    response = post_events(anon_api, [sendgrid_event("spamreport", smtp_id=emailed.provider_message_id)])
    # then: the delivery keeps its status; the address is suppressed; the ledger says so
    assert response.status_code == 200
    emailed.refresh_from_db()
    assert emailed.status == "sent"
    assert suppressions() == [("alice", "email", "ana@example.com", "complained")]
    record = ConsentRecord.objects.get()
    assert (record.account, record.recipient, record.granted, record.method, record.channel, record.category) == (
        alice,
        emailed.notification.recipient,
        False,
        "esp",
        "email",
        "*",
    )
    assert record.detail == "SendGrid complained"


def test_a_repeated_bounce_keeps_one_suppression(emailed, anon_api):
    event = sendgrid_event("bounce", smtp_id=emailed.provider_message_id, reason="550", type="bounce")
    post_events(anon_api, [event, event])
    post_events(anon_api, [sendgrid_event("spamreport", smtp_id=emailed.provider_message_id)])
    assert suppressions() == [("alice", "email", "ana@example.com", "bounced")]


def test_a_sendgrid_block_is_not_a_hard_bounce(emailed, anon_api):
    post_events(
        anon_api,
        [sendgrid_event("bounce", smtp_id=emailed.provider_message_id, reason="421 try later", type="blocked")],
    )
    emailed.refresh_from_db()
    assert emailed.status == "bounced"
    assert suppressions() == []


@pytest.mark.parametrize("event", ["delivered", "open", "deferred", "dropped", "unsubscribe"])
def test_other_events_suppress_nothing(emailed, anon_api, event):
    post_events(anon_api, [sendgrid_event(event, smtp_id=emailed.provider_message_id, reason="Bounced Address")])
    assert suppressions() == []
    assert ConsentRecord.objects.count() == 0


def test_the_suppression_is_the_accounts_own(alice, bob, anon_api):
    # given: bob mails the same address
    theirs = make_delivery(alice, channel="email", provider_message_id="alice-msg")
    make_delivery(bob, channel="email", provider_message_id="bob-msg")
    # when
    with webhook_secret():
        post_events(anon_api, [sendgrid_event("bounce", anymail_id="alice-msg", reason="550", type="bounce")])
    # then
    assert suppressions() == [("alice", "email", theirs.to, "bounced")]


def test_a_bounce_for_an_unknown_message_suppresses_nothing(emailed, anon_api):
    response = post_events(anon_api, [sendgrid_event("bounce", anymail_id="unknown", reason="550", type="bounce")])
    assert response.status_code == 200
    assert suppressions() == []


def test_a_bounce_with_wrong_credentials_suppresses_nothing(emailed, anon_api):
    response = post_events(
        anon_api,
        [sendgrid_event("bounce", smtp_id=emailed.provider_message_id, type="bounce")],
        credentials="hookuser:wrong",
    )
    assert response.status_code == 403
    assert suppressions() == []


# --- SMS: Twilio error 21610 ------------------------------------------------------------


@pytest.fixture
def texted(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    make_template(alice)
    delivery = send(alice_api, django_capture_on_commit_callbacks, sms_request())
    assert delivery.status == "sent"
    return delivery


def callback_params(delivery, status, **extra) -> dict:
    return {
        "AccountSid": TWILIO_SID,
        "MessageSid": delivery.provider_message_id,
        "MessageStatus": status,
        "To": delivery.to,
        "From": "+15005550006",
        **extra,
    }


def test_21610_in_a_status_callback_suppresses_the_number(
    alice, alice_api, texted, twilio, anon_api, django_capture_on_commit_callbacks
):
    # when
    response = post_status_callback(
        anon_api, callback_params(texted, "failed", ErrorCode="21610"), query=f"delivery={texted.pk}"
    )
    # then
    assert response.status_code == 204
    texted.refresh_from_db()
    assert (texted.status, texted.error_code) == ("failed", "21610")
    assert suppressions() == [("alice", "sms", "+14155550123", "stop_keyword")]
    assert Suppression.objects.get().detail == "Twilio error 21610: the number replied STOP to the sender"
    # and the next SMS is not sent
    later = send(alice_api, django_capture_on_commit_callbacks, sms_request())
    assert later.status == "suppressed"
    assert later.error_message == "suppressed: the sms address is suppressed (stop_keyword)"
    assert twilio.sent_count() == 1


def test_another_error_code_in_a_callback_suppresses_nothing(texted, anon_api):
    post_status_callback(anon_api, callback_params(texted, "undelivered", ErrorCode="30005"))
    texted.refresh_from_db()
    assert texted.status == "undelivered"
    assert suppressions() == []


def test_a_forged_21610_callback_suppresses_nothing(texted, anon_api):
    response = post_status_callback(
        anon_api, callback_params(texted, "failed", ErrorCode="21610"), signature="bm90IGEgc2lnbmF0dXJl"
    )
    assert response.status_code == 403
    assert suppressions() == []


def test_21610_refusing_a_send_suppresses_the_number(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    # given: Twilio refuses the number (it replied STOP to the sender)
    make_template(alice)
    twilio.script = [UNSUBSCRIBED]
    # when
    refused = send(alice_api, django_capture_on_commit_callbacks, sms_request())
    # then: a permanent failure, and the number suppressed
    assert (refused.status, refused.error_code) == ("failed", "21610")
    assert refused.attempts.get().outcome == "permanent"
    assert suppressions() == [("alice", "sms", "+14155550123", "stop_keyword")]
    # and the next send does not reach Twilio
    later = send(alice_api, django_capture_on_commit_callbacks, sms_request())
    assert later.status == "suppressed"
    assert twilio.sent_count() == 1


def test_a_batch_refused_with_21610_suppresses_each_number(
    alice, alice_api, twilio, django_capture_on_commit_callbacks
):
    # given: three recipients in one batch, Twilio refusing the first and third
    make_template(alice)
    twilio.script = [UNSUBSCRIBED, None, UNSUBSCRIBED]  # None: the double's normal answer
    body = {
        "channel": "sms",
        "template": "reminder",
        "recipients": [{"phone": f"+1415555000{i}", "context": {"event_name": "Haircut"}} for i in range(3)],
    }
    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post("/api/v1/notifications/send/batch/", body, format="json")
    # then
    assert response.status_code == 202
    assert sorted(Delivery.objects.values_list("to", "status")) == [
        ("+14155550000", "failed"),
        ("+14155550001", "sent"),
        ("+14155550002", "failed"),
    ]
    assert suppressions() == [
        ("alice", "sms", "+14155550000", "stop_keyword"),
        ("alice", "sms", "+14155550002", "stop_keyword"),
    ]


def test_another_send_error_suppresses_nothing(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    make_template(alice)
    twilio.script = [(400, {}, {"code": 21211, "message": "Invalid 'To' number", "status": 400})]
    refused = send(alice_api, django_capture_on_commit_callbacks, sms_request())
    assert (refused.status, refused.error_code) == ("failed", "21211")
    assert suppressions() == []


def test_reports_are_suppressed_in_a_few_statements_per_account(alice, bob, django_assert_num_queries):
    # given: many reports over two accounts
    reports = [(alice.pk, "sms", f"+1415555{i:04d}", "21610") for i in range(20)]
    reports += [(bob.pk, "sms", f"+1415555{i:04d}", "21610") for i in range(20)]
    reports += [(bob.pk, "sms", "+14155559999", "30005"), (bob.pk, "email", "x@example.com", "21610")]
    # when: one query for the accounts, three per account (count, insert, count)
    with django_assert_num_queries(1 + 2 * 3):
        added = unsubscribed_errors_suppress(reports=reports)
    # then
    assert added == 40
    assert Suppression.objects.filter(reason="stop_keyword").count() == 40
