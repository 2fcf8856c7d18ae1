"""An account's chain of providers on the real parts: the send API -> PostgreSQL -> Redis ->
Celery worker processes -> the real twilio client -> two Twilio doubles. Failover moves a
delivery to the second provider when the first fails (500, a timeout, 401, 429), never for
an error about the recipient; and two worker processes pace a batch under a provider's
rate limit through the token bucket they share in Redis."""

import pytest

from notifications.models import Delivery, DeliveryAttempt
from providers.services import provider_config_create
from tests.conftest import client_for
from tests.doubles.twilio import INVALID_NUMBER, TwilioDouble
from tests.factories import UserFactory
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

FIRST_SID, FIRST_TOKEN = "AC" + "3" * 32, "first-chain-token"
SECOND_SID, SECOND_TOKEN = "AC" + "4" * 32, "second-chain-token"
SEND_URL = "/api/v1/notifications/send/"
BATCH_URL = "/api/v1/notifications/send/batch/"


@pytest.fixture
def doubles(settings):
    settings.BEACON_ALLOW_PRIVATE_TARGETS = True  # the doubles listen on loopback
    first = TwilioDouble(account_sid=FIRST_SID, auth_token=FIRST_TOKEN).start()
    second = TwilioDouble(account_sid=SECOND_SID, auth_token=SECOND_TOKEN).start()
    yield first, second
    first.stop()
    second.stop()


def records(account, first, second, **first_fields):
    for name, priority, sid, token, double, fields in (
        ("first", 10, FIRST_SID, FIRST_TOKEN, first, first_fields),
        ("second", 20, SECOND_SID, SECOND_TOKEN, second, {}),
    ):
        provider_config_create(
            account,
            name=name,
            channel="sms",
            kind="twilio",
            priority=priority,
            credentials={"account_sid": sid, "auth_token": token},
            settings={"from_number": "+15005550009", "api_base_url": double.base_url},
            **fields,
        )


def attempts_of(delivery_id) -> list[tuple]:
    return list(
        DeliveryAttempt.objects.filter(delivery_id=delivery_id)
        .order_by("number")
        .values_list("provider_config__name", "outcome", "response_code")
    )


FAILURES = [
    ("500", (500, {}, {"code": 20500, "message": "Internal Server Error", "status": 500}), 500),
    ("timeout", None, None),
    ("401", (401, {}, {"code": 20003, "message": "Authenticate", "status": 401}), 401),
    ("429", (429, {"Retry-After": "60"}, {"code": 20429, "message": "Too Many Requests", "status": 429}), 429),
]


def test_each_provider_failure_fails_over_and_exactly_one_provider_accepts(doubles, workers):
    # given: alice's SMS goes to "first", then "second"
    first, second = doubles
    alice = UserFactory(username="alice")
    records(alice, first, second)
    workers(1, PROVIDER_TIMEOUT_SECONDS="0.5")
    api = client_for(alice)
    for name, answer, code in FAILURES:
        first.reset()
        second.reset()
        if answer is None:
            first.delay = 1.5  # past the worker's provider timeout
        else:
            first.script = [answer]
        phone = f"+14155550{FAILURES.index((name, answer, code)):03d}"
        # when
        response = api.post(SEND_URL, {"channel": "sms", "recipient": {"phone": phone}, "message": name}, format="json")
        assert response.status_code == 202, response.json()
        delivery_id = response.json()["deliveries"][0]["id"]
        # then: the second delivered it; exactly one request reached it
        wait_for(
            lambda delivery_id=delivery_id: Delivery.objects.filter(pk=delivery_id, status="sent").exists(),
            timeout=30,
            message=f"the delivery sent after the first provider's {name}",
        )
        assert [r["To"] for r in second.requests] == [phone], name
        assert [r["To"] for r in first.requests] == [phone], name
        (tried, accepted) = attempts_of(delivery_id)
        assert tried[0] == "first" and tried[2] == code, name
        assert accepted == ("second", "success", 201), name
        first.delay = 0


def test_an_error_about_the_recipient_does_not_fail_over(doubles, workers):
    first, second = doubles
    alice = UserFactory(username="alice")
    records(alice, first, second)
    workers(1)
    response = client_for(alice).post(
        SEND_URL, {"channel": "sms", "recipient": {"phone": INVALID_NUMBER}, "message": "x"}, format="json"
    )
    delivery_id = response.json()["deliveries"][0]["id"]
    wait_for(
        lambda: Delivery.objects.filter(pk=delivery_id, status="failed").exists(),
        timeout=30,
        message="the delivery failed",
    )
    assert attempts_of(delivery_id) == [("first", "permanent", 400)]
    assert second.sent_count() == 0


def test_two_worker_processes_pace_300_messages_under_a_50_per_second_limit(doubles, workers):
    # given: the provider answers 429 over 50 requests plus a burst of 10 in any second;
    # its record asks Beacon for 50 a second with that burst
    first, second = doubles
    first.limit = 60
    alice = UserFactory(username="alice")
    records(alice, first, second, rate_limit_per_second=50, burst=10)
    workers(2)
    recipients = [{"phone": f"+1415556{n:04d}"} for n in range(300)]
    # when: 300 in three batch requests (three dispatch tasks, shared by both processes)
    api = client_for(alice)
    for start in range(0, 300, 100):
        response = api.post(
            BATCH_URL,
            {"channel": "sms", "message": "Paced", "recipients": recipients[start : start + 100]},
            format="json",
        )
        assert response.status_code == 202, response.json()
    # then: all 300 reach the provider, never more than 50 a second plus the burst, no 429
    wait_for(
        lambda: Delivery.objects.filter(status="sent").count() == 300,
        timeout=60,
        message="300 sent",
    )
    assert (first.sent_count(), first.throttled, second.sent_count()) == (300, 0, 0)
    assert first.busiest_second() <= 60
    span = first.arrivals[-1] - first.arrivals[0]
    assert span >= (300 - 10) / 50 - 0.5
