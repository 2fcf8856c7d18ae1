"""Failover along an account's chain of providers, the circuit breaker in the send path,
and each attempt's cost: two Twilio doubles are the account's first and second SMS
providers, driven through the real twilio client."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from notifications.models import Delivery, DeliveryAttempt
from notifications.services import delivery_dispatch
from providers.health import Outcomes, provider_pause, provider_record, providers_health
from providers.services import provider_config_create
from tests.doubles.twilio import INVALID_NUMBER, TwilioDouble
from tests.factories import make_template
from tests.notifications.factories import SEND_URL, sms_request

pytestmark = pytest.mark.django_db

FIRST_SID, FIRST_TOKEN = "AC" + "1" * 32, "first-twilio-token"
SECOND_SID, SECOND_TOKEN = "AC" + "2" * 32, "second-twilio-token"


@pytest.fixture(scope="module")
def doubles():
    first = TwilioDouble(account_sid=FIRST_SID, auth_token=FIRST_TOKEN).start()
    second = TwilioDouble(account_sid=SECOND_SID, auth_token=SECOND_TOKEN).start()
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture
def chain(alice, doubles, twilio, settings):
    """alice's SMS chain: "first" (priority 10) then "second" (priority 20)."""
    settings.BEACON_ALLOW_PRIVATE_TARGETS = True  # the doubles listen on loopback
    settings.BEACON_RETRY_BASE_SECONDS = 0.01
    first, second = doubles
    first.reset()
    second.reset()
    make_template(alice)
    records = [
        provider_config_create(
            alice,
            name=name,
            channel="sms",
            kind="twilio",
            priority=priority,
            credentials={"account_sid": sid, "auth_token": token},
            settings={"from_number": "+15005550009", "api_base_url": double.base_url},
            cost_per_message="0.0075",
            currency="USD",
        )
        for name, priority, sid, token, double in (
            ("first", 10, FIRST_SID, FIRST_TOKEN, first),
            ("second", 20, SECOND_SID, SECOND_TOKEN, second),
        )
    ]
    return first, second, records


def send(api, capture, **overrides) -> Delivery:
    body = {name: value for name, value in sms_request(**overrides).items() if value is not None}
    with capture(execute=True):
        response = api.post(SEND_URL, body, format="json")
    assert response.status_code == 202, response.json()
    return Delivery.objects.get(pk=response.json()["deliveries"][0]["id"])


def attempts_of(delivery) -> list[tuple]:
    return list(
        DeliveryAttempt.objects.filter(delivery=delivery)
        .order_by("number")
        .values_list("number", "provider_config__name", "outcome", "response_code")
    )


def details(delivery) -> list[str]:
    return list(delivery.events.order_by("occurred_at", "pk").values_list("detail", flat=True))


SERVER_ERROR = (500, {}, {"code": 20500, "message": "Internal Server Error", "status": 500})
UNAUTHORIZED = (401, {}, {"code": 20003, "message": "Authenticate", "status": 401})
THROTTLED = (429, {"Retry-After": "30"}, {"code": 20429, "message": "Too Many Requests", "status": 429})


@pytest.mark.parametrize(
    "answer, code",
    [(SERVER_ERROR, 500), (UNAUTHORIZED, 401), (THROTTLED, 429)],
    ids=["500", "401", "429"],
)
def test_a_provider_failure_moves_the_delivery_to_the_next_provider(
    alice_api, chain, django_capture_on_commit_callbacks, answer, code
):
    # given: the first provider fails once
    first, second, (one, two) = chain
    first.script = [answer]
    # when
    delivery = send(alice_api, django_capture_on_commit_callbacks)
    # then: the second delivered it; each provider saw exactly one request
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    assert (first.sent_count(), second.sent_count()) == (1, 1)
    outcome = "permanent" if code == 401 else "retryable"
    assert attempts_of(delivery) == [(1, "first", outcome, code), (2, "second", "success", 201)]
    assert delivery.providers_tried == []
    assert any(d.startswith("failing over from first (twilio) to second (twilio)") for d in details(delivery))
    assert details(delivery)[-1] == "accepted by second (twilio)"


def test_a_timeout_fails_over(alice_api, chain, settings, django_capture_on_commit_callbacks):
    # given: the first provider stalls past the provider timeout
    first, second, _ = chain
    settings.PROVIDER_TIMEOUT_SECONDS = 0.3
    first.delay = 1.0
    # when
    delivery = send(alice_api, django_capture_on_commit_callbacks)
    # then
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    assert [a[1:3] for a in attempts_of(delivery)] == [("first", "retryable"), ("second", "success")]
    assert second.sent_count() == 1


def test_an_error_about_the_recipient_does_not_fail_over(alice_api, chain, django_capture_on_commit_callbacks):
    # given
    first, second, _ = chain
    # when: the number is invalid
    delivery = send(alice_api, django_capture_on_commit_callbacks, recipient={"phone": INVALID_NUMBER, "name": "Ana"})
    # then: failed on the first provider, the second never asked
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert attempts_of(delivery) == [(1, "first", "permanent", 400)]
    assert second.sent_count() == 0


def test_when_every_provider_fails_the_retry_starts_again_from_the_first(
    alice_api, chain, settings, django_capture_on_commit_callbacks
):
    # given: both fail once; the retry (after its backoff) finds the first healthy again
    first, second, _ = chain
    first.script = [SERVER_ERROR]
    second.script = [SERVER_ERROR]
    # when
    delivery = send(alice_api, django_capture_on_commit_callbacks)
    # then
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    assert [a[1:] for a in attempts_of(delivery)] == [
        ("first", "retryable", 500),
        ("second", "retryable", 500),
        ("first", "success", 201),
    ]
    assert (first.sent_count(), second.sent_count()) == (2, 1)


def test_a_delivery_out_of_attempts_still_gets_one_on_the_next_provider(
    alice_api, chain, settings, django_capture_on_commit_callbacks
):
    # given: one attempt per delivery; the first provider is broken
    settings.BEACON_MAX_ATTEMPTS = 1
    first, second, _ = chain
    first.script = [SERVER_ERROR]
    # when
    delivery = send(alice_api, django_capture_on_commit_callbacks)
    # then
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count, delivery.max_attempts) == ("sent", 2, 2)


def test_when_the_last_provider_fails_on_the_last_attempt_the_delivery_fails(
    alice_api, chain, settings, django_capture_on_commit_callbacks
):
    settings.BEACON_MAX_ATTEMPTS = 1
    first, second, _ = chain
    first.script = [SERVER_ERROR]
    second.script = [UNAUTHORIZED]
    delivery = send(alice_api, django_capture_on_commit_callbacks)
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert details(delivery)[-1].startswith("every provider failed: ")


def test_a_throttling_provider_is_paused_for_every_delivery(alice_api, chain, django_capture_on_commit_callbacks):
    # given: the first answered 429 with Retry-After: 30
    first, second, (one, _) = chain
    first.script = [THROTTLED]
    send(alice_api, django_capture_on_commit_callbacks)
    # when: more are sent within the pause
    later = [send(alice_api, django_capture_on_commit_callbacks) for _ in range(3)]
    # then: they go straight to the second; the first sees nothing more
    assert first.sent_count() == 1
    assert second.sent_count() == 4
    assert all(attempts_of(d) == [(1, "second", "success", 201)] for d in later)
    assert providers_health([f"record:{one.pk}"])[f"record:{one.pk}"]["paused_until"] is not None


def test_the_breaker_opens_and_later_deliveries_skip_the_failing_provider(
    alice_api, chain, settings, django_capture_on_commit_callbacks
):
    # given: the first provider fails the threshold's worth of deliveries
    settings.BEACON_BREAKER_THRESHOLD = 3
    settings.BEACON_BREAKER_COOLDOWN_SECONDS = 60
    first, second, (one, _) = chain
    first.script = [SERVER_ERROR] * 3
    for _ in range(3):
        send(alice_api, django_capture_on_commit_callbacks)
    assert first.sent_count() == 3
    health = providers_health([f"record:{one.pk}"])[f"record:{one.pk}"]
    assert (health["status"], health["breaker"]) == ("down", "open")
    # when: the next one is sent during the cool-down
    skipped = send(alice_api, django_capture_on_commit_callbacks)
    # then: no request reaches the first; no attempt is spent on it
    assert first.sent_count() == 3
    assert attempts_of(skipped) == [(1, "second", "success", 201)]
    # when: after the cool-down, one probe goes to the first and closes the breaker
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        probe = send(alice_api, django_capture_on_commit_callbacks)
        after = send(alice_api, django_capture_on_commit_callbacks)
    assert attempts_of(probe) == [(1, "first", "success", 201)]
    assert attempts_of(after) == [(1, "first", "success", 201)]
    assert first.sent_count() == 5


def test_each_accepted_attempt_records_its_cost_by_segment(alice_api, chain, django_capture_on_commit_callbacks):
    # given: a body of two GSM-7 segments; the first provider fails, the second accepts
    first, _, _ = chain
    first.script = [SERVER_ERROR]
    # when
    delivery = send(alice_api, django_capture_on_commit_callbacks, template=None, context=None, message="x" * 200)
    # then: the failed attempt cost nothing; the accepted one 2 x 0.0075 USD
    delivery.refresh_from_db()
    assert delivery.segments == 2
    costs = list(DeliveryAttempt.objects.filter(delivery=delivery).order_by("number").values_list("cost", "currency"))
    assert costs == [(None, ""), (Decimal("0.015"), "USD")]
    assert Decimal(delivery.cost) == Decimal("0.015")


# --- Rate limits in the send path -----------------------------------------------------------


def test_a_record_s_rate_limit_paces_a_batch_under_the_provider_s_own_limit(
    alice, alice_api, chain, django_capture_on_commit_callbacks
):
    # given: the first provider allows 25 requests a second; its record asks for 20 (burst 5)
    first, second, (one, _) = chain
    one.rate_limit_per_second, one.burst = 20, 5
    one.save()
    first.limit = 25
    recipients = [{"phone": f"+1415555{n:04d}"} for n in range(40)]
    # when: one batch of 40 (one dispatch task)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(
            "/api/v1/notifications/send/batch/",
            {"channel": "sms", "message": "Paced", "recipients": recipients},
            format="json",
        )
    assert response.status_code == 202, response.json()
    # then: every one sent through the first, none refused, never over its limit
    assert Delivery.objects.filter(status="sent").count() == 40
    assert (first.sent_count(), first.throttled, second.sent_count()) == (40, 0, 0)
    assert first.busiest_second() <= 25
    # the batch waited for its tokens: 35 beyond the burst at 20 a second
    span = first.arrivals[-1] - first.arrivals[0]
    assert span >= 35 / 20 - 0.1


def test_a_recipient_over_its_limit_is_delayed_not_dropped(
    alice_api, chain, settings, django_capture_on_commit_callbacks
):
    # given: one message a second per recipient
    settings.BEACON_RECIPIENT_RATE_LIMIT_PER_SECOND = 1
    settings.BEACON_RECIPIENT_RATE_LIMIT_BURST = 1
    first, _, _ = chain
    sent = send(alice_api, django_capture_on_commit_callbacks)
    # when: a second one to the same number within the second (its retry task not run here)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = alice_api.post(SEND_URL, sms_request(), format="json")
        delayed = Delivery.objects.get(pk=response.json()["deliveries"][0]["id"])
    for callback in callbacks[:1]:
        with django_capture_on_commit_callbacks(execute=False):
            callback()  # the accept's own dispatch task
    # then: put back in the queue, unsent, due within a second; no attempt counted
    delayed.refresh_from_db()
    sent.refresh_from_db()
    assert sent.status == "sent"
    assert (delayed.status, delayed.attempt_count) == ("queued", 0)
    assert 0 < (delayed.next_attempt_at - timezone.now()).total_seconds() <= 1.1
    assert first.sent_count() == 1
    # when: its time comes
    with time_machine.travel(delayed.next_attempt_at + timedelta(seconds=0.05)):
        assert delivery_dispatch(delivery_id=delayed.pk, attempts_before=0) == "sent"
    assert first.sent_count() == 2


# --- Holds, rounds and the breaker with fallback -------------------------------------------


def test_a_delivery_whose_failed_provider_recovered_starts_a_new_round_rather_than_wait(
    alice_api, chain, django_capture_on_commit_callbacks
):
    # given: the first failed it; before its failover runs, the second is paused
    first, second, (one, two) = chain
    first.script = [SERVER_ERROR]
    with django_capture_on_commit_callbacks() as accepted:
        response = alice_api.post(SEND_URL, sms_request(), format="json")
    with django_capture_on_commit_callbacks() as failover:
        accepted[0]()
    delivery = Delivery.objects.get(pk=response.json()["deliveries"][0]["id"])
    assert delivery.providers_tried == [f"record:{one.pk}"]
    provider_pause(f"record:{two.pk}", 60, "throttled")
    # when
    with django_capture_on_commit_callbacks(execute=True):
        failover[0]()
    # then: back to the first, which answers now
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    assert attempts_of(delivery) == [(1, "first", "retryable", 500), (2, "first", "success", 201)]
    assert second.sent_count() == 0


def test_a_round_with_a_passing_failure_is_retried_whatever_the_last_provider_said(
    alice_api, chain, django_capture_on_commit_callbacks
):
    # given: the first has a moment's 5xx, the second refuses the credentials
    first, second, _ = chain
    first.script = [SERVER_ERROR]
    second.script = [UNAUTHORIZED]
    # when
    delivery = send(alice_api, django_capture_on_commit_callbacks)
    # then: a second round from the first, which delivers
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    assert [a[1:] for a in attempts_of(delivery)] == [
        ("first", "retryable", 500),
        ("second", "permanent", 401),
        ("first", "success", 201),
    ]


@pytest.fixture
def sms_down(alice, twilio, settings):
    """The platform's SMS provider with its breaker open."""
    settings.BEACON_BREAKER_THRESHOLD = 1
    provider_record("platform:twilio", Outcomes([False], [5], "Twilio answered HTTP 503"))
    make_template(alice)


def test_a_hold_uses_an_attempt_and_the_last_one_fails_the_delivery(
    alice_api, sms_down, twilio, django_capture_on_commit_callbacks
):
    # when: sent while the only provider's breaker is open
    with django_capture_on_commit_callbacks() as accepted:
        response = alice_api.post(SEND_URL, sms_request(), format="json")
    delivery = Delivery.objects.get(pk=response.json()["deliveries"][0]["id"])
    Delivery.objects.filter(pk=delivery.pk).update(max_attempts=2)
    with django_capture_on_commit_callbacks():
        accepted[0]()
    # then: it waits, unsent, one attempt used
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count, twilio.sent_count()) == ("queued", 1, 0)
    assert delivery.next_attempt_at > timezone.now() + timedelta(seconds=20)
    # when: still open at its last attempt
    with django_capture_on_commit_callbacks():
        assert delivery_dispatch(delivery_id=delivery.pk, attempts_before=1) == "failed"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count, delivery.error_code) == ("failed", 2, "providers_unavailable")
    assert details(delivery)[-1] == "every provider of the channel is unavailable (circuit open or paused)"
    assert not DeliveryAttempt.objects.filter(delivery=delivery).exists()
    assert twilio.sent_count() == 0


def test_with_fallback_a_channel_whose_providers_are_down_moves_on_at_once(
    alice_api, sms_down, twilio, smtp, django_capture_on_commit_callbacks
):
    # when: sms, then email
    body = sms_request(
        channels=["sms", "email"],
        fallback=True,
        recipient={"phone": "+14155550123", "email": "ana@example.com", "name": "Ana"},
    )
    del body["channel"]
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(SEND_URL, body, format="json")
    assert response.status_code == 202, response.json()
    # then: sms failed without a request, email was released and sent
    statuses = {d.channel: d for d in Delivery.objects.all()}
    assert statuses["sms"].status == "failed"
    assert statuses["sms"].error_code == "providers_unavailable"
    assert statuses["email"].status == "sent"
    assert twilio.sent_count() == 0
