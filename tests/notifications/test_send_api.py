"""POST /api/v1/notifications/send/: what is accepted, and every refusal writes and sends nothing."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from notifications.models import Delivery, DeliveryEvent, Notification, Recipient
from tests.factories import make_template
from tests.notifications.factories import SEND_URL, email_request, sms_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def templates(alice, bob):
    return {"alice": make_template(alice), "bob": make_template(bob, key="bobs-only")}


def assert_nothing_happened(twilio, smtp):
    assert Notification.objects.count() == 0
    assert Delivery.objects.count() == 0
    assert DeliveryEvent.objects.count() == 0
    assert Recipient.objects.count() == 0
    assert twilio.sent_count() == 0
    assert smtp.messages == []


REFUSALS = {
    "unknown template key": (
        sms_request(template="no-such-template"),
        {"template": ["No active template with id or key 'no-such-template'."]},
    ),
    "another account's template by key": (
        sms_request(template="bobs-only"),
        {"template": ["No active template with id or key 'bobs-only'."]},
    ),
    "invalid email": (
        email_request(recipient={"email": "not-an-email"}),
        {"recipient": {"email": ["Enter a valid email address."]}},
    ),
    "phone not E.164": (
        sms_request(recipient={"phone": "004915112345678"}),
        {"recipient": {"phone": ["Enter the number in E.164 form, e.g. +14155550123."]}},
    ),
    "recipient without address": (
        sms_request(recipient={"name": "Ana"}),
        {
            "recipient": {
                "email": ["Give an email address or a phone number (or an external id and a chat webhook URL)."]
            }
        },
    ),
    "unknown time zone": (
        sms_request(recipient={"phone": "+14155550123", "timezone": "Mars/Olympus"}),
        {"recipient": {"timezone": ["Unknown time zone 'Mars/Olympus'; use an IANA name such as Europe/Madrid."]}},
    ),
    "oversized message": (
        email_request(message="x" * 100_001),
        {"message": ["Ensure this field has no more than 100000 characters."]},
    ),
    "SMS body over 1,600 characters": (
        {"channel": "sms", "recipient": {"phone": "+14155550123"}, "message": "x" * 1601},
        {"message": ["sms: The SMS body is 1601 characters; the limit is 1600."]},
    ),
    "blank SMS body": (
        {"channel": "sms", "recipient": {"phone": "+14155550123"}, "message": "   "},
        {"message": ["sms: The SMS body is empty."]},
    ),
    "unknown channel": (
        email_request(channel="fax"),
        {"channel": ['"fax" is not a valid choice.']},
    ),
    "unknown channel in channels": (
        {**email_request(), "channel": None, "channels": ["email", "fax"]},
        None,  # filled below: DRF names the list index
    ),
    "both channel and channels": (
        {**email_request(), "channels": ["email"]},
        {"channels": ["Give channel or channels, not both."]},
    ),
    "no channel at all": (
        {key: value for key, value in email_request().items() if key != "channel"},
        {"channel": ["This field is required."]},
    ),
    "neither template nor message": (
        {"channel": "sms", "recipient": {"phone": "+14155550123"}},
        {"template": ["Give a template (id or key) or a subject and message."]},
    ),
    "template and message together": (
        sms_request(message="Hello"),
        {"template": ["Give a template or a message, not both."]},
    ),
    "email channel without an email address": (
        {"channel": "email", "recipient": {"phone": "+14155550123"}, "subject": "Hi", "message": "Hello"},
        {"recipient": {"email": ["Required to send on the email channel."]}},
    ),
    "email without a subject": (
        email_request(subject=""),
        {"subject": ["email: An email needs a subject."]},
    ),
    "missing required placeholder": (
        sms_request(context={"start_time": "at 10:00"}),
        {"context": ["sms: missing required placeholder(s): event_name"]},
    ),
    "duplicate channel in channels": (
        {key: value for key, value in sms_request(channels=["sms", "sms"]).items() if key != "channel"},
        {"channels": ["A channel may appear only once."]},
    ),
    "unknown priority": (
        sms_request(priority="urgent"),
        {"priority": ['"urgent" is not a valid choice.']},
    ),
    "unparseable scheduled_for": (
        sms_request(scheduled_for="tomorrow at noon"),
        None,
    ),
}
REFUSALS["unknown channel in channels"] = (
    {key: value for key, value in REFUSALS["unknown channel in channels"][0].items() if key != "channel"},
    {"channels": {"1": ['"fax" is not a valid choice.']}},
)


@pytest.mark.parametrize(("body", "errors"), REFUSALS.values(), ids=REFUSALS.keys())
def test_refused_requests_are_400_naming_the_field_and_change_nothing(
    templates, alice_api, twilio, smtp, django_capture_on_commit_callbacks, body, errors
):
    # when
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = alice_api.post(SEND_URL, body, format="json")
    # then
    assert response.status_code == 400, response.json()
    data = response.json()
    assert set(data) == {"message", "errors"}
    if errors is not None:
        assert data["errors"] == errors
    else:
        assert list(data["errors"]) == ["scheduled_for"]
    field = next(iter(data["errors"]))
    assert data["message"].startswith(f"Invalid input: {field}: ")
    assert callbacks == []
    assert_nothing_happened(twilio, smtp)


def test_another_accounts_template_by_id_is_unknown(templates, alice_api, twilio, smtp):
    bobs = templates["bob"]
    response = alice_api.post(SEND_URL, sms_request(template=str(bobs.pk)), format="json")
    assert response.status_code == 400
    assert response.json() == {
        "message": f"Invalid input: template: No active template with id or key '{bobs.pk}'.",
        "errors": {"template": [f"No active template with id or key '{bobs.pk}'."]},
    }
    assert_nothing_happened(twilio, smtp)


def test_malformed_json_is_400(alice_api, twilio, smtp):
    response = alice_api.post(SEND_URL, data='{"channel": "sms", ', content_type="application/json")
    assert response.status_code == 400
    data = response.json()
    assert data["message"].startswith("JSON parse error")
    assert data["errors"] == {}
    assert_nothing_happened(twilio, smtp)


def test_an_overlong_idempotency_key_is_400(alice, alice_api, twilio, smtp):
    make_template(alice)
    response = alice_api.post(SEND_URL, sms_request(), format="json", HTTP_IDEMPOTENCY_KEY="k" * 256)
    assert response.status_code == 400
    assert response.json()["errors"] == {"Idempotency-Key": ["At most 255 characters."]}
    assert_nothing_happened(twilio, smtp)


def test_without_a_token_nothing_is_accepted(alice, anon_api, twilio, smtp):
    make_template(alice)
    response = anon_api.post(SEND_URL, sms_request(), format="json")
    assert response.status_code == 401
    assert response.json() == {"message": "Authentication credentials were not provided.", "errors": {}}
    assert_nothing_happened(twilio, smtp)


def test_a_template_by_id_is_accepted(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    template = make_template(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(SEND_URL, sms_request(template=str(template.pk)), format="json")
    assert response.status_code == 202, response.json()
    notification = Notification.objects.get()
    assert (notification.template, notification.template_version) == (template, template.current_version)
    assert [r["Body"] for r in twilio.requests] == ["Reminder: Haircut at 10:00"]


def test_ad_hoc_email_with_subject_and_message_is_sent(alice, alice_api, smtp, django_capture_on_commit_callbacks):
    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(SEND_URL, email_request(), format="json")
    # then
    assert response.status_code == 202, response.json()
    notification = Notification.objects.get()
    delivery = Delivery.objects.get()
    assert response.json() == {
        "id": str(notification.pk),
        "status": "accepted",
        "scheduled_for": None,
        "deliveries": [
            {
                "id": str(delivery.pk),
                "channel": "email",
                "to": "ana@example.com",
                "status": "queued",
                "encoding": "",
                "segments": 0,
            }
        ],
    }
    assert notification.template is None
    assert notification.channels == ["email"]
    assert (notification.priority, notification.category) == ("normal", "transactional")
    assert len(smtp.messages) == 1
    message = smtp.messages[0]["message"]
    assert message["Subject"] == "Your booking"
    assert message.get_content().strip() == "See you at 10:00."
    delivery.refresh_from_db()
    assert (delivery.status, delivery.subject, delivery.body) == ("sent", "Your booking", "See you at 10:00.")
    assert delivery.provider_message_id == message["Message-ID"]


def test_two_channels_write_one_notification_and_two_deliveries(
    alice, alice_api, twilio, smtp, django_capture_on_commit_callbacks
):
    # given
    make_template(alice)
    body = {
        "channels": ["email", "sms"],
        "recipient": {"email": "ana@example.com", "phone": "+14155550123", "name": "Ana"},
        "template": "reminder",
        "context": {"event_name": "Haircut", "invitee_name": "Ana"},
        "priority": "high",
        "category": "system",
    }
    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(SEND_URL, body, format="json")
    # then
    assert response.status_code == 202, response.json()
    assert Notification.objects.count() == 1
    notification = Notification.objects.get()
    assert notification.channels == ["email", "sms"]
    assert (notification.priority, notification.category) == ("high", "system")
    deliveries = {d.channel: d for d in Delivery.objects.all()}
    assert len(deliveries) == 2
    assert [d["channel"] for d in response.json()["deliveries"]] == ["email", "sms"]
    assert deliveries["email"].to == "ana@example.com"
    assert deliveries["sms"].to == "+14155550123"
    assert {d.status for d in deliveries.values()} == {"sent"}
    assert {d.notification_id for d in deliveries.values()} == {notification.pk}
    assert len(smtp.messages) == 1
    assert smtp.messages[0]["message"]["Subject"] == "Reminder: Haircut"
    assert [r["Body"] for r in twilio.requests] == ["Reminder: Haircut soon"]


def test_a_locale_picks_the_translated_content(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    make_template(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            SEND_URL, sms_request(recipient={"phone": "+14155550123", "locale": "es-MX"}), format="json"
        )
    assert response.status_code == 202
    assert [r["Body"] for r in twilio.requests] == ["Recordatorio: Haircut at 10:00"]
    assert Delivery.objects.get().locale == "es"


def test_the_same_person_is_one_recipient_and_their_details_are_updated(
    alice, alice_api, smtp, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post(SEND_URL, email_request(recipient={"email": "ana@example.com"}), format="json")
        alice_api.post(
            SEND_URL, email_request(recipient={"email": "ana@example.com", "name": "Ana Ruiz"}), format="json"
        )
    assert Recipient.objects.count() == 1
    recipient = Recipient.objects.get()
    assert (recipient.email, recipient.name) == ("ana@example.com", "Ana Ruiz")
    assert Notification.objects.filter(recipient=recipient).count() == 2


def test_a_phone_only_recipient_is_matched_by_phone(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post(SEND_URL, {"channel": "sms", "recipient": {"phone": "+14155550123"}, "message": "One"})
        alice_api.post(SEND_URL, {"channel": "sms", "recipient": {"phone": "+14155550123"}, "message": "Two"})
    assert Recipient.objects.count() == 1
    assert [r["Body"] for r in twilio.requests] == ["One", "Two"]


def test_recipients_are_matched_by_external_id_first(alice, alice_api, smtp, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post(SEND_URL, email_request(recipient={"email": "ana@example.com", "external_id": "u-1"}))
        alice_api.post(SEND_URL, email_request(recipient={"email": "ana.new@example.com", "external_id": "u-1"}))
        alice_api.post(SEND_URL, email_request(recipient={"email": "ana@example.com"}))
    assert sorted(Recipient.objects.values_list("external_id", "email")) == [
        ("", "ana@example.com"),
        ("u-1", "ana.new@example.com"),
    ]


def test_recipients_are_per_account(alice, bob, alice_api, bob_api, smtp, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post(SEND_URL, email_request())
        bob_api.post(SEND_URL, email_request())
    assert sorted(Recipient.objects.values_list("account__username", flat=True)) == ["alice", "bob"]


def test_scheduled_for_in_the_past_sends_now(alice, alice_api, twilio, django_capture_on_commit_callbacks):
    make_template(alice)
    past = (timezone.now() - timedelta(hours=1)).isoformat()
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(SEND_URL, sms_request(scheduled_for=past), format="json")
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    assert response.json()["scheduled_for"] is None
    assert Delivery.objects.get().status == "sent"
    assert twilio.sent_count() == 1


@pytest.mark.parametrize(
    ("subject", "error"),
    [
        ("x" * 501, "subject: Ensure this field has no more than 500 characters."),
        ("Hello\r\nBcc: victim@example.com", "subject: email: The subject may not contain line breaks."),
    ],
    ids=["too long", "header injection"],
)
def test_an_unsendable_subject_is_400_and_nothing_is_written(alice_api, smtp, subject, error):
    body = {"channel": "email", "recipient": {"email": "ana@example.com"}, "subject": subject, "message": "Hi"}
    response = alice_api.post(SEND_URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["message"] == f"Invalid input: {error}"
    assert Notification.objects.count() == 0
    assert smtp.messages == []


def test_a_template_subject_that_renders_too_long_is_400(alice, alice_api, smtp):
    make_template(
        alice,
        key="long",
        required_placeholders=[],
        contents=[{"channel": "email", "subject": "{{ title }}", "body": "Hi"}],
    )
    body = {
        "channel": "email",
        "recipient": {"email": "ana@example.com"},
        "template": "long",
        "context": {"title": "t" * 600},
    }
    response = alice_api.post(SEND_URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"subject": ["email: The subject is longer than 500 characters."]}
    assert Notification.objects.count() == 0


def test_the_receipt_is_what_the_accepted_serializer_says(alice, alice_api, django_capture_on_commit_callbacks):
    # given: the receipt is written by hand on the hot path; the schema's serializer is the reference
    from notifications.receipts import AcceptedSerializer

    make_template(alice)
    when = timezone.now() + timedelta(hours=1)
    with django_capture_on_commit_callbacks():
        response = alice_api.post(SEND_URL, sms_request(scheduled_for=when.isoformat()), format="json")
    notification = Notification.objects.get()
    expected = AcceptedSerializer(
        {
            "id": notification.pk,
            "status": "scheduled",
            "scheduled_for": notification.scheduled_for,
            "deliveries": list(notification.deliveries.all()),
        }
    ).data
    assert response.json() == json.loads(json.dumps(expected))
