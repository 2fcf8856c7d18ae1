"""The circuit breaker and health in the shared provider state, with a frozen clock:
opens at the threshold, skips during the cool-down, half-opens with exactly one probe,
closes on the probe's success and opens again on its failure."""

import time

import pytest
import time_machine

from providers.health import Outcomes, provider_admit, provider_pause, provider_record, providers_health

KEY = "record:1"
START = 1_800_000_000.0


@pytest.fixture
def clock(settings):
    settings.BEACON_BREAKER_THRESHOLD = 3
    settings.BEACON_BREAKER_COOLDOWN_SECONDS = 30
    settings.BEACON_BREAKER_PROBE_SECONDS = 10
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def fail(count: int = 1) -> str:
    return provider_record(KEY, Outcomes([False] * count, [5] * count, "HTTP 503"))


def succeed(count: int = 1) -> str:
    return provider_record(KEY, Outcomes([True] * count, [5] * count))


def test_the_breaker_opens_at_the_threshold_of_consecutive_failures(clock):
    assert fail(2) == "closed"
    assert provider_admit(KEY).verdict == "closed"
    assert fail() == "open"
    admission = provider_admit(KEY)
    assert (admission.verdict, admission.until) == ("open", START + 30)


def test_a_success_resets_the_count(clock):
    fail(2)
    succeed()
    assert fail(2) == "closed"
    # failures after the last success in one flush count from there
    assert provider_record(KEY, Outcomes([False, True, False], [1, 1, 1])) == "closed"
    assert fail() == "closed"
    assert fail() == "open"


def test_during_the_cool_down_the_provider_is_skipped(clock):
    fail(3)
    clock.shift(29.9)
    assert provider_admit(KEY).verdict == "open"


def test_after_the_cool_down_exactly_one_probe_goes(clock):
    fail(3)
    clock.shift(30)
    assert provider_admit(KEY).verdict == "probe"
    # every other worker keeps skipping it while the probe is out
    second = provider_admit(KEY)
    assert (second.verdict, second.until) == ("open", START + 30 + 10)
    assert providers_health([KEY])[KEY]["breaker"] == "half_open"


def test_the_probe_s_success_closes_the_breaker(clock):
    fail(3)
    clock.shift(30)
    provider_admit(KEY)
    assert succeed() == "closed"
    assert provider_admit(KEY).verdict == "closed"
    # and it takes the full threshold to open again
    assert fail(2) == "closed"


def test_the_probe_s_failure_opens_it_for_another_cool_down(clock):
    fail(3)
    clock.shift(30)
    provider_admit(KEY)
    assert fail() == "open"
    assert provider_admit(KEY).until == START + 60


def test_a_probe_that_never_reports_frees_the_way_for_another(clock):
    fail(3)
    clock.shift(30)
    assert provider_admit(KEY).verdict == "probe"
    clock.shift(10)
    assert provider_admit(KEY).verdict == "probe"


def test_a_pause_skips_the_provider_until_it_ends_and_only_lengthens(clock):
    provider_pause(KEY, 20, "throttled: HTTP 429")
    provider_pause(KEY, 5, "throttled: HTTP 429")
    assert provider_admit(KEY).verdict == "paused"
    assert provider_admit(KEY).until == START + 20
    clock.shift(20)
    assert provider_admit(KEY).verdict == "closed"


def test_health_reports_the_window_s_success_rate_latency_and_last_error(clock, settings):
    settings.BEACON_HEALTH_WINDOW_SECONDS = 300
    provider_record(KEY, Outcomes([False] * 2 + [True] * 18, list(range(1, 21)), "Twilio answered HTTP 503"))
    health = providers_health([KEY])[KEY]
    assert health["status"] == "healthy"
    assert (health["attempts"], health["failures"], health["success_rate"]) == (20, 2, 0.9)
    assert health["p95_latency_ms"] == 19
    assert health["last_error"] == "Twilio answered HTTP 503"
    # under the degraded threshold
    fail(1)
    assert providers_health([KEY])[KEY]["status"] == "degraded"
    # counts older than the window drop out
    clock.shift(301 + 60)
    health = providers_health([KEY])[KEY]
    assert (health["attempts"], health["success_rate"], health["p95_latency_ms"]) == (0, None, None)


def test_an_unknown_provider_is_healthy_with_no_figures(clock):
    health = providers_health(["platform:console"])["platform:console"]
    assert (health["status"], health["breaker"], health["attempts"]) == ("healthy", "closed", 0)


def test_a_paused_provider_is_degraded(clock):
    provider_pause(KEY, 10, "throttled")
    assert providers_health([KEY])[KEY]["status"] == "degraded"
    assert time.time() == START


def test_a_late_success_does_not_close_a_breaker_still_cooling_down(clock):
    fail(3)
    clock.shift(5)
    # a flush admitted before it opened ends on a success
    assert succeed() == "open"
    assert provider_admit(KEY).verdict == "open"


def test_a_pause_is_capped_at_the_longest_retry_delay(clock, settings):
    settings.BEACON_RETRY_MAX_SECONDS = 900
    provider_pause(KEY, 30 * 24 * 3600, "throttled")
    assert provider_admit(KEY).until == START + 900
