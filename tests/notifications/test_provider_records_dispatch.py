"""An account's own provider records in the send path: dispatch sends through the
account's first enabled record of the channel (by priority) instead of the platform's
provider, records the record on each attempt, and a status callback from the account's
own Twilio is checked with that record's auth token."""

import pytest

from notifications.models import Delivery, DeliveryAttempt
from providers.services import provider_config_create, provider_config_set_enabled
from tests.doubles.twilio import TwilioDouble
from tests.factories import make_template
from tests.notifications.factories import SEND_URL, post_status_callback, sms_request, twilio_signature

pytestmark = pytest.mark.django_db

OWN_SID = "AC" + "7" * 32
OWN_TOKEN = "the-account-s-own-twilio-token"


@pytest.fixture(scope="module")
def own_twilio():
    """A second Twilio double: the account's own Twilio, with its own credentials."""
    double = TwilioDouble(account_sid=OWN_SID, auth_token=OWN_TOKEN).start()
    yield double
    double.stop()


@pytest.fixture
def own(own_twilio, settings):
    own_twilio.reset()
    settings.BEACON_ALLOW_PRIVATE_TARGETS = True  # the double listens on loopback
    return own_twilio


def own_record(account, double, **fields):
    return provider_config_create(
        account,
        name=fields.pop("name", "our twilio"),
        channel="sms",
        kind="twilio",
        credentials={"account_sid": OWN_SID, "auth_token": OWN_TOKEN},
        settings={"from_number": "+15005550009", "api_base_url": double.base_url},
        **fields,
    )


def send_sms(api, capture, **recipient):
    with capture(execute=True):
        response = api.post(SEND_URL, sms_request(**({"recipient": recipient} if recipient else {})), format="json")
    assert response.status_code == 202, response.json()
    return Delivery.objects.get(pk=response.json()["deliveries"][0]["id"])


def test_an_account_with_its_own_twilio_sends_through_it(
    alice, alice_api, twilio, own, django_capture_on_commit_callbacks
):
    # given
    make_template(alice)
    record = own_record(alice, own)
    # when
    delivery = send_sms(alice_api, django_capture_on_commit_callbacks)
    # then: the account's Twilio got it, with the record's sender; the platform's nothing
    assert delivery.status == "sent"
    assert own.sent_count() == 1
    assert own.requests[0]["From"] == "+15005550009"
    assert twilio.sent_count() == 0
    attempt = DeliveryAttempt.objects.get(delivery=delivery)
    assert (attempt.provider, attempt.provider_config_id) == ("twilio", record.pk)


def test_an_account_without_records_and_a_disabled_record_use_the_platform(
    alice, alice_api, bob, bob_api, twilio, own, django_capture_on_commit_callbacks
):
    # given: bob has his own Twilio, disabled; alice has none
    make_template(alice)
    make_template(bob)
    provider_config_set_enabled(own_record(bob, own), False)
    # when
    send_sms(alice_api, django_capture_on_commit_callbacks)
    send_sms(bob_api, django_capture_on_commit_callbacks)
    # then
    assert twilio.sent_count() == 2
    assert own.sent_count() == 0
    assert set(DeliveryAttempt.objects.values_list("provider_config_id", flat=True)) == {None}


def test_the_first_record_by_priority_sends(alice, alice_api, twilio, own, django_capture_on_commit_callbacks):
    # given: a record with broken credentials at a lower priority
    make_template(alice)
    own_record(alice, own, name="backup", priority=20)
    first = own_record(alice, own, name="first", priority=10)
    # when
    delivery = send_sms(alice_api, django_capture_on_commit_callbacks)
    # then
    assert DeliveryAttempt.objects.get(delivery=delivery).provider_config_id == first.pk
    assert own.sent_count() == 1


def test_a_callback_from_the_accounts_own_twilio_is_checked_with_its_token(
    alice, alice_api, anon_api, twilio, own, django_capture_on_commit_callbacks
):
    # given
    make_template(alice)
    own_record(alice, own)
    delivery = send_sms(alice_api, django_capture_on_commit_callbacks)
    params = {"AccountSid": OWN_SID, "MessageSid": delivery.provider_message_id, "MessageStatus": "delivered"}
    query = f"delivery={delivery.pk}"
    path = f"/api/v1/notifications/sms-status-callback/?{query}"
    # when: signed with the platform's token, then with the record's
    forged = post_status_callback(anon_api, params, query=query)
    signed = post_status_callback(
        anon_api, params, query=query, signature=twilio_signature(path, params, token=OWN_TOKEN)
    )
    # then
    assert forged.status_code == 403
    assert signed.status_code == 204
    delivery.refresh_from_db()
    assert delivery.status == "delivered"
