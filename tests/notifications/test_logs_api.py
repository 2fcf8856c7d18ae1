"""GET /api/v1/notifications/logs/: the account's deliveries, newest first, filtered, paginated."""

from datetime import timedelta

import pytest
from django.utils import timezone

from notifications.models import DeliveryAttempt, DeliveryEvent
from tests.factories import make_template
from tests.notifications.factories import LOGS_URL, make_delivery, make_recipient

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)


def ids(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


def test_the_list_is_newest_first_and_only_the_accounts_own(alice, bob, alice_api):
    # given
    oldest = make_delivery(alice, created_at=NOW - timedelta(hours=3))
    newest = make_delivery(alice, created_at=NOW - timedelta(hours=1))
    middle = make_delivery(alice, created_at=NOW - timedelta(hours=2))
    make_delivery(bob, created_at=NOW)
    # when
    response = alice_api.get(LOGS_URL)
    # then
    assert response.json()["count"] == 3
    assert ids(response) == [str(newest.pk), str(middle.pk), str(oldest.pk)]


def test_a_row_shows_the_delivery_and_what_it_belongs_to(alice, alice_api):
    template = make_template(alice)
    recipient = make_recipient(alice, name="Ana", external_id="u-1")
    delivery = make_delivery(
        alice,
        recipient=recipient,
        template=template,
        status="failed",
        provider="twilio",
        error_code="21211",
        error_message="invalid number",
        attempt_count=1,
        max_attempts=4,
    )
    row = alice_api.get(LOGS_URL).json()["results"][0]
    assert row["id"] == str(delivery.pk)
    assert row["notification"] == str(delivery.notification_id)
    assert (row["channel"], row["to"], row["status"]) == ("sms", "+14155550123", "failed")
    assert (row["template"], row["template_version"]) == ("reminder", 1)
    assert row["recipient"] == {
        "id": recipient.pk,
        "name": "Ana",
        "email": "ana@example.com",
        "phone": "+14155550123",
        "external_id": "u-1",
    }
    assert (row["priority"], row["category"]) == ("normal", "transactional")
    assert (row["provider"], row["error_code"], row["error_message"]) == ("twilio", "21211", "invalid number")
    assert (row["attempt_count"], row["max_attempts"], row["resent_from"]) == (1, 4, None)
    assert "body" not in row
    assert "attempts" not in row


def test_the_list_paginates(alice, alice_api):
    deliveries = [make_delivery(alice, created_at=NOW - timedelta(minutes=i)) for i in range(55)]
    first = alice_api.get(LOGS_URL).json()
    assert first["count"] == 55
    assert len(first["results"]) == 50
    assert first["previous"] is None
    assert first["next"].endswith("/api/v1/notifications/logs/?page=2")
    second = alice_api.get(LOGS_URL, {"page": 2}).json()
    assert [row["id"] for row in second["results"]] == [str(d.pk) for d in deliveries[50:]]
    assert second["next"] is None
    assert alice_api.get(LOGS_URL, {"page": 3}).status_code == 404


def test_filter_by_channel(alice, alice_api):
    sms = make_delivery(alice, channel="sms")
    email = make_delivery(alice, channel="email")
    assert ids(alice_api.get(LOGS_URL, {"channel": "sms"})) == [str(sms.pk)]
    assert ids(alice_api.get(LOGS_URL, {"channel": "email"})) == [str(email.pk)]
    response = alice_api.get(LOGS_URL, {"channel": "fax"})
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["channel"]


def test_filter_by_several_statuses(alice, alice_api):
    failed = make_delivery(alice, status="failed", created_at=NOW - timedelta(minutes=1))
    make_delivery(alice, status="sent", created_at=NOW - timedelta(minutes=2))
    bounced = make_delivery(alice, status="bounced", created_at=NOW - timedelta(minutes=3))
    response = alice_api.get(LOGS_URL + "?status=failed&status=bounced")
    assert ids(response) == [str(failed.pk), str(bounced.pk)]
    assert alice_api.get(LOGS_URL, {"status": "lost"}).status_code == 400


def test_filter_by_template_id_or_key(alice, bob, alice_api):
    reminder = make_template(alice)
    confirmation = make_template(alice, key="confirmation")
    by_reminder = make_delivery(alice, template=reminder)
    make_delivery(alice, template=confirmation)
    make_delivery(alice)
    make_delivery(bob, template=make_template(bob))
    assert ids(alice_api.get(LOGS_URL, {"template": "reminder"})) == [str(by_reminder.pk)]
    assert ids(alice_api.get(LOGS_URL, {"template": str(reminder.pk)})) == [str(by_reminder.pk)]
    assert ids(alice_api.get(LOGS_URL, {"template": "nothing"})) == []


def test_filter_by_recipient_email_phone_or_external_id(alice, alice_api):
    ana = make_recipient(alice, email="ana@example.com", phone="+14155550123", external_id="u-1")
    bea = make_recipient(alice, email="bea@example.com", phone="+14155550999", external_id="u-2")
    ana_sms = make_delivery(alice, recipient=ana, channel="sms", created_at=NOW - timedelta(minutes=1))
    ana_email = make_delivery(alice, recipient=ana, channel="email", created_at=NOW - timedelta(minutes=2))
    make_delivery(alice, recipient=bea, channel="sms")
    both = [str(ana_sms.pk), str(ana_email.pk)]
    assert ids(alice_api.get(LOGS_URL, {"recipient": "ANA@example.com"})) == both
    assert ids(alice_api.get(LOGS_URL, {"recipient": "+14155550123"})) == both
    assert ids(alice_api.get(LOGS_URL, {"recipient": "u-1"})) == both
    assert ids(alice_api.get(LOGS_URL, {"recipient": "nobody@example.com"})) == []


def test_filter_by_creation_time(alice, alice_api):
    old = make_delivery(alice, created_at=NOW - timedelta(days=3))
    mid = make_delivery(alice, created_at=NOW - timedelta(days=2))
    new = make_delivery(alice, created_at=NOW - timedelta(days=1))
    after = (NOW - timedelta(days=2)).isoformat()
    before = (NOW - timedelta(days=1)).isoformat()
    assert ids(alice_api.get(LOGS_URL, {"created_after": after})) == [str(new.pk), str(mid.pk)]
    assert ids(alice_api.get(LOGS_URL, {"created_before": before})) == [str(mid.pk), str(old.pk)]
    assert ids(alice_api.get(LOGS_URL, {"created_after": after, "created_before": before})) == [str(mid.pk)]
    assert alice_api.get(LOGS_URL, {"created_after": "yesterday"}).status_code == 400


def test_filter_by_notification(alice, alice_api):
    one = make_delivery(alice)
    make_delivery(alice)
    assert ids(alice_api.get(LOGS_URL, {"notification": str(one.notification_id)})) == [str(one.pk)]


def test_detail_has_attempts_and_events(alice, alice_api):
    # given
    delivery = make_delivery(alice, status="sent", provider="twilio", provider_message_id="SM1")
    started = NOW - timedelta(seconds=5)
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=2,
        provider="twilio",
        outcome="success",
        started_at=started,
        response_code=201,
        provider_message_id="SM1",
    )
    DeliveryAttempt.objects.create(
        delivery=delivery, number=1, provider="twilio", outcome="retryable", started_at=started, response_code=503
    )
    for from_status, status in [("", "queued"), ("queued", "sending"), ("sending", "sent")]:
        DeliveryEvent.objects.create(
            delivery=delivery, from_status=from_status, status=status, source="dispatch", occurred_at=started
        )
    # when
    response = alice_api.get(f"{LOGS_URL}{delivery.pk}/")
    # then
    assert response.status_code == 200
    data = response.json()
    assert data["id"] == str(delivery.pk)
    assert data["body"] == "Hello there"
    assert [(a["number"], a["outcome"], a["response_code"]) for a in data["attempts"]] == [
        (1, "retryable", 503),
        (2, "success", 201),
    ]
    assert [(e["from_status"], e["status"]) for e in data["events"]] == [
        ("", "queued"),
        ("queued", "sending"),
        ("sending", "sent"),
    ]


def test_another_accounts_delivery_is_404(alice, bob, alice_api):
    bobs = make_delivery(bob, status="failed")
    response = alice_api.get(f"{LOGS_URL}{bobs.pk}/")
    assert response.status_code == 404
    assert response.json() == {"message": "Not found.", "errors": {}}
    assert ids(alice_api.get(LOGS_URL)) == []


def test_an_unknown_id_is_404(alice_api):
    import uuid

    assert alice_api.get(f"{LOGS_URL}{uuid.uuid4()}/").status_code == 404


def test_logs_need_a_token(alice, anon_api):
    make_delivery(alice)
    response = anon_api.get(LOGS_URL)
    assert response.status_code == 401


@pytest.mark.parametrize("rows", [10, 30])
def test_the_list_query_count_does_not_grow_with_rows(alice, alice_api, django_assert_max_num_queries, rows):
    # given: rows with a recipient and a template each
    template = make_template(alice)
    for i in range(rows):
        recipient = make_recipient(alice, email=f"p{i}@example.com", phone=f"+1415555{i:04d}")
        make_delivery(alice, recipient=recipient, template=template)
    alice_api.get(LOGS_URL)  # the token's last_used_at is written on first use only
    # when / then: token lookup, count, page
    with django_assert_max_num_queries(3):
        response = alice_api.get(LOGS_URL)
    assert len(response.json()["results"]) == rows
