"""Token buckets per provider, account and recipient in the shared provider state, with a
frozen clock: one atomic take per flush."""

import pytest
import time_machine
from django.core.exceptions import ImproperlyConfigured

from providers import limits
from providers.limits import NO_LIMIT, Limit, platform_limit, tokens_take

START = 1_800_000_000.0


@pytest.fixture
def clock(settings):
    settings.BEACON_RATE_LIMIT_HEADROOM = 0  # exact figures; the headroom has its own test
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def take(count, *, provider=NO_LIMIT, account=1, recipients=None):
    recipients = recipients or [f"r{n}" for n in range(count)]
    return tokens_take(provider_key="record:1", provider=provider, messages=[(account, r) for r in recipients])


def test_the_provider_s_burst_goes_at_once_and_the_rest_waits_in_order(clock):
    grant = take(8, provider=Limit(10, 5))
    assert grant.waits == [0.0] * 5 + [None] * 3
    assert grant.provider_wait == pytest.approx(0.1)


def test_tokens_come_back_at_the_rate_up_to_the_burst(clock):
    take(5, provider=Limit(10, 5))
    clock.shift(0.25)
    assert take(5, provider=Limit(10, 5)).waits == [0.0, 0.0, None, None, None]
    clock.shift(60)
    assert take(8, provider=Limit(10, 5)).waits.count(0.0) == 5


def test_the_bucket_is_shared_by_every_caller(clock):
    # two workers asking in turn share one provider's 5 tokens
    first = take(3, provider=Limit(10, 5))
    second = take(3, provider=Limit(10, 5))
    assert (first.waits.count(0.0), second.waits.count(0.0)) == (3, 2)


def test_an_account_over_its_limit_waits_alone_and_others_go_on(clock, settings):
    settings.BEACON_ACCOUNT_RATE_LIMIT_PER_SECOND = 2
    settings.BEACON_ACCOUNT_RATE_LIMIT_BURST = 2
    grant = tokens_take(
        provider_key="platform:twilio",
        provider=NO_LIMIT,
        messages=[(1, "a"), (1, "b"), (1, "c"), (2, "d"), (1, "e")],
    )
    # account 1 has 2 tokens: its third and fourth wait, staggered at its rate
    assert grant.waits == [0.0, 0.0, pytest.approx(0.5), 0.0, pytest.approx(1.0)]


def test_a_recipient_over_its_limit_waits_and_the_rest_are_sent(clock, settings):
    settings.BEACON_RECIPIENT_RATE_LIMIT_PER_SECOND = 1
    settings.BEACON_RECIPIENT_RATE_LIMIT_BURST = 1
    grant = take(4, recipients=["same", "other", "same", "same"])
    assert grant.waits == [0.0, 0.0, pytest.approx(1.0), pytest.approx(2.0)]


def test_a_message_waiting_for_its_recipient_takes_no_provider_token(clock, settings):
    settings.BEACON_RECIPIENT_RATE_LIMIT_PER_SECOND = 1
    settings.BEACON_RECIPIENT_RATE_LIMIT_BURST = 1
    grant = take(3, provider=Limit(10, 2), recipients=["same", "same", "other"])
    assert grant.waits == [0.0, pytest.approx(1.0), 0.0]


def test_without_any_limit_nothing_is_asked(monkeypatch):
    monkeypatch.setattr(limits, "script", lambda source: pytest.fail("a round trip without limits"))
    assert take(3).waits == [0.0, 0.0, 0.0]


def test_platform_limits_come_from_settings(settings):
    settings.BEACON_PROVIDER_RATE_LIMITS = "twilio=100:20, fcm=500"
    assert platform_limit("twilio") == Limit(100.0, 20)
    assert platform_limit("fcm") == Limit(500.0, 500)
    assert platform_limit("smtp") == NO_LIMIT
    settings.BEACON_PROVIDER_RATE_LIMITS = "twilio=fast"
    with pytest.raises(ImproperlyConfigured, match="twilio=fast"):
        platform_limit("twilio")


def test_a_limit_without_a_burst_allows_one_second_s_worth():
    assert Limit.of(2.5) == Limit(2.5, 3)
    assert Limit.of(0.2) == Limit(0.2, 1)
    assert Limit.of(None) == Limit.of(0) == NO_LIMIT


def test_a_token_is_slept_for_when_due_soon_and_refused_when_far(clock, monkeypatch):
    slept = []
    monkeypatch.setattr(limits.time, "sleep", lambda seconds: (slept.append(seconds), clock.shift(seconds)))
    limit = Limit(10, 1)
    assert limits.provider_token_wait("record:1", limit, most=1.0) == 0.0
    # the next is due in 0.1 s: slept for
    assert limits.provider_token_wait("record:1", limit, most=1.0) == 0.0
    assert sum(slept) == pytest.approx(0.1)
    # far off: not taken, the wait returned
    assert limits.provider_token_wait("record:2", Limit(0.01, 1), most=1.0) == 0.0
    assert limits.provider_token_wait("record:2", Limit(0.01, 1), most=1.0) == pytest.approx(100)


def test_a_provider_is_paced_a_little_under_its_limit(clock, settings):
    settings.BEACON_RATE_LIMIT_HEADROOM = 0.03
    grant = take(30, provider=Limit(100, 20))
    # a burst of 19 of its 20, then tokens at 97 a second
    assert grant.waits.count(0.0) == 19
    assert grant.provider_wait == pytest.approx(1 / 97)
