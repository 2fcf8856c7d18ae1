"""No input reaches PostgreSQL in a form it refuses: a NUL in any JSON string and a UTC
offset no time zone has are 400s naming the field, with nothing written or sent."""

import pytest

from notifications.models import Delivery, Notification, Recipient
from templates.models import Template
from tests.factories import make_template
from tests.notifications.factories import LOGS_URL, SEND_URL, sms_request
from tests.templates_app.test_api import URL as TEMPLATES_URL
from tests.templates_app.test_api import payload as template_payload

pytestmark = pytest.mark.django_db

BATCH_URL = "/api/v1/notifications/send/batch/"
NUL = "\u0000"


@pytest.fixture(autouse=True)
def _template(alice):
    make_template(alice)


def assert_nothing_sent(twilio):
    assert (Notification.objects.count(), Delivery.objects.count(), Recipient.objects.count()) == (0, 0, 0)
    assert twilio.sent_count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (sms_request(context={"event_name": f"Hair{NUL}cut"}), "context.event_name"),
        (sms_request(context={f"event{NUL}": "Haircut", "event_name": "x"}), f"context.event{NUL}"),
        (sms_request(context={"event_name": "x", "items": ["a", {"b": NUL}]}), "context.items[1].b"),
        (sms_request(recipient={"phone": "+14155550123", "name": f"A{NUL}na"}), "recipient.name"),
    ],
    ids=["a context value", "a context key", "deep in the context", "a text field"],
)
def test_a_nul_in_a_send_is_a_400_naming_where(alice_api, twilio, body, field):
    response = alice_api.post(SEND_URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {field: ["NUL characters (\\u0000) are not allowed."]}
    assert_nothing_sent(twilio)


def test_a_nul_in_a_batch_is_a_400_naming_the_item(alice_api, twilio):
    body = {
        "channel": "sms",
        "template": "reminder",
        "recipients": [
            {"phone": "+14155550123", "context": {"event_name": "ok"}},
            {"phone": "+14155550124", "context": {"event_name": f"x{NUL}"}},
        ],
    }
    response = alice_api.post(BATCH_URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "recipients[1].context.event_name": ["NUL characters (\\u0000) are not allowed."]
    }
    assert_nothing_sent(twilio)


def test_a_nul_in_a_templates_sample_context_is_a_400(alice_api):
    before = Template.objects.count()
    response = alice_api.post(
        TEMPLATES_URL, template_payload(key="with-nul", sample_context={"event_name": NUL}), format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {"sample_context.event_name": ["NUL characters (\\u0000) are not allowed."]}
    assert Template.objects.count() == before


@pytest.mark.parametrize("offset", ["+17:00", "-15:00", "+14:30"])
@pytest.mark.parametrize("name", ["created_after", "created_before"])
def test_a_date_filter_with_an_offset_no_time_zone_has_is_a_400(alice_api, name, offset):
    response = alice_api.get(LOGS_URL, {name: f"2026-01-01T00:00:00{offset}"})
    assert response.status_code == 400
    assert response.json()["errors"] == {name: ["The UTC offset must be between -14:00 and +14:00."]}


@pytest.mark.parametrize("offset", ["+14:00", "-12:00", "Z", "+05:45"])
def test_a_date_filter_with_a_real_offset_is_applied(alice_api, offset):
    response = alice_api.get(LOGS_URL, {"created_after": f"2026-01-01T00:00:00{offset}"})
    assert response.status_code == 200
    assert response.json()["count"] == 0


def test_scheduled_for_with_an_offset_no_time_zone_has_is_a_400(alice_api, twilio):
    response = alice_api.post(SEND_URL, sms_request(scheduled_for="2030-01-01T09:00:00+17:00"), format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"scheduled_for": ["The UTC offset must be between -14:00 and +14:00."]}
    assert_nothing_sent(twilio)


# --- sizes ---------------------------------------------------------------------------------


def test_a_context_over_the_json_limit_is_a_400_naming_it(alice_api, twilio, settings):
    body = sms_request(context={"event_name": "x" * 2_000_000})
    response = alice_api.post(SEND_URL, body, format="json")
    assert response.status_code == 400
    size = len('{"event_name":""}') + 2_000_000
    assert response.json()["errors"] == {
        "context": [f"At most {settings.BEACON_MAX_JSON_CHARS} characters as JSON; this one has {size}."]
    }
    assert_nothing_sent(twilio)


def test_a_batch_items_context_over_the_limit_is_named_by_its_index(alice_api, twilio, settings):
    settings.BEACON_MAX_JSON_CHARS = 100
    body = {
        "channel": "sms",
        "template": "reminder",
        "recipients": [
            {"phone": "+14155550123", "context": {"event_name": "ok"}},
            {"phone": "+14155550124", "context": {"event_name": "x" * 100}},
        ],
    }
    response = alice_api.post(BATCH_URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "recipients": {"1": {"context": ["At most 100 characters as JSON; this one has 117."]}}
    }
    assert_nothing_sent(twilio)


def test_a_sample_context_over_the_limit_is_a_400(alice_api, settings):
    settings.BEACON_MAX_JSON_CHARS = 50
    before = Template.objects.count()
    response = alice_api.post(
        TEMPLATES_URL, template_payload(key="big", sample_context={"invitee_name": "A" * 60}), format="json"
    )
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["sample_context"]
    assert Template.objects.count() == before


def test_a_body_over_the_upload_limit_is_a_json_413(alice_api, twilio, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = alice_api.post(SEND_URL, sms_request(context={"event_name": "x" * 20_000}), format="json")
    assert response.status_code == 413
    assert response.json() == {"message": "The request body is larger than 10000 bytes.", "errors": {}}
    assert_nothing_sent(twilio)
