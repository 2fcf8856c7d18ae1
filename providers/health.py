"""Circuit breakers and health, per provider, shared by every worker (providers.shared_state).

A provider is keyed by `provider_key`: an account's record ("record:12") or the platform's
provider from settings ("platform:twilio").

The breaker counts the provider's consecutive provider-level failures (configuration
errors, 5xx, timeouts; not an error about a recipient, which says the provider is up).
Providers that send to the recipients' own endpoints (webhooks, chat, Web Push) have none.
At BEACON_BREAKER_THRESHOLD it opens: the provider is skipped for
BEACON_BREAKER_COOLDOWN_SECONDS. Then it is half-open: one message is let through as a
probe (the others still skip it); its success closes the breaker, its failure opens it
for another cool-down. A probe that never reports back (its worker died) frees the way
for another after BEACON_BREAKER_PROBE_SECONDS.

A provider's 429 pauses it for every worker until its Retry-After (`provider_pause`).

Health is counted per minute (answers, provider failures) with the latest latencies, and
read over the last BEACON_HEALTH_WINDOW_SECONDS: healthy, degraded (a pause, a half-open
breaker, or a success rate under BEACON_HEALTH_DEGRADED_BELOW) or down (breaker open).

Times are the caller's `time.time()`, so that a frozen clock in tests moves the breaker.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings

from .shared_state import PREFIX, StateUnavailable, script, state_client

logger = logging.getLogger(__name__)

LATENCY_SAMPLES = 500


def provider_key(record_id: int | None, kind: str) -> str:
    return f"record:{record_id}" if record_id is not None else f"platform:{kind}"


def _breaker(key: str) -> str:
    return f"{PREFIX}{key}:breaker"


def _minute(key: str, minute: int) -> str:
    return f"{PREFIX}{key}:m:{minute}"


def _latencies(key: str) -> str:
    return f"{PREFIX}{key}:latency"


# KEYS[1] breaker hash. ARGV: now, probe lease.
# Returns {verdict, until}: "closed" (send), "probe" (send one message, the probe),
# "open" (skip until `until`), "paused" (skip until `until`).
ADMIT = """
local b = redis.call('HMGET', KEYS[1], 'open_until', 'probe_until', 'paused_until')
local now = tonumber(ARGV[1])
local open_until = tonumber(b[1] or '0')
local probe_until = tonumber(b[2] or '0')
local paused_until = tonumber(b[3] or '0')
if paused_until > now then return {'paused', tostring(paused_until)} end
if open_until == 0 then return {'closed', '0'} end
if open_until > now then return {'open', tostring(open_until)} end
if probe_until > now then return {'open', tostring(probe_until)} end
redis.call('HSET', KEYS[1], 'probe_until', tostring(now + tonumber(ARGV[2])))
return {'probe', '0'}
"""

# KEYS: breaker hash, this minute's counters, latency list.
# ARGV: now, answers, failures, failures since the flush's last success (-1: no success),
# threshold, cool-down, counter ttl, last error ('' for none), latencies "minute:ms"...
RECORD = """
local now = tonumber(ARGV[1])
local answers = tonumber(ARGV[2])
local failures = tonumber(ARGV[3])
local tail = tonumber(ARGV[4])
if answers > 0 then
  redis.call('HINCRBY', KEYS[2], 'answers', answers)
  redis.call('HINCRBY', KEYS[2], 'failures', failures)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
end
if #ARGV > 8 then
  redis.call('LPUSH', KEYS[3], unpack(ARGV, 9))
  redis.call('LTRIM', KEYS[3], 0, 499)
end
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[1], 'last_error', ARGV[8], 'last_error_at', ARGV[1])
end
local b = redis.call('HMGET', KEYS[1], 'open_until', 'fails')
local open_until = tonumber(b[1] or '0')
local fails = tonumber(b[2] or '0')
local half_open = open_until > 0 and open_until <= now
if tail >= 0 then
  fails = tail
else
  fails = fails + failures
end
if tail == 0 and half_open then
  redis.call('HSET', KEYS[1], 'fails', 0, 'open_until', 0, 'probe_until', 0, 'closed_at', ARGV[1])
  return 'closed'
end
if failures > 0 and (half_open or (open_until == 0 and fails >= tonumber(ARGV[5]))) then
  redis.call('HSET', KEYS[1], 'fails', fails, 'open_until', tostring(now + tonumber(ARGV[6])),
    'probe_until', 0, 'opened_at', ARGV[1])
  return 'open'
end
redis.call('HSET', KEYS[1], 'fails', fails)
if open_until > now then return 'open' end
if open_until > 0 then return 'half_open' end
return 'closed'
"""

# KEYS[1] breaker hash. ARGV: until, reason, now. A pause only ever lengthens.
PAUSE = """
local paused_until = tonumber(redis.call('HGET', KEYS[1], 'paused_until') or '0')
if tonumber(ARGV[1]) > paused_until then
  redis.call('HSET', KEYS[1], 'paused_until', ARGV[1])
end
redis.call('HSET', KEYS[1], 'last_error', ARGV[2], 'last_error_at', ARGV[3])
return 1
"""


@dataclass(frozen=True)
class Admission:
    verdict: str  # closed, probe, open, paused
    until: float = 0.0  # when an open or paused provider may be tried again

    @property
    def sends(self) -> bool:
        return self.verdict in ("closed", "probe")


CLOSED = Admission("closed")


def provider_admit(key: str, *, now: float | None = None) -> Admission:
    """May a batch send through this provider now? One round trip. A half-open breaker
    admits one message (verdict "probe") to the caller that asked first."""
    now = time.time() if now is None else now
    try:
        verdict, until = script(ADMIT)(keys=[_breaker(key)], args=[now, settings.BEACON_BREAKER_PROBE_SECONDS])
    except StateUnavailable as exc:
        logger.warning("provider state unavailable, sending without the breaker: %s", exc)
        return CLOSED
    return Admission(_text(verdict), float(until))


@dataclass
class Outcomes:
    """What one flush through a provider showed: answers in order (True: the provider
    did its part, whether or not the recipient was accepted; False: a provider failure)
    with their latencies, and the last provider failure's message."""

    results: list[bool]
    latencies_ms: list[int]
    last_error: str = ""


def provider_record(key: str, outcomes: Outcomes, *, now: float | None = None) -> str:
    """Count a flush's outcomes into the provider's health and breaker; the breaker's
    state after it ("closed", "open", "half_open"). One round trip."""
    if not outcomes.results:
        return "closed"
    now = time.time() if now is None else now
    minute = int(now // 60)
    failures = outcomes.results.count(False)
    tail = -1
    if True in outcomes.results:
        tail = len(outcomes.results) - 1 - max(i for i, ok in enumerate(outcomes.results) if ok)
    window = settings.BEACON_HEALTH_WINDOW_SECONDS
    args = [
        now,
        len(outcomes.results),
        failures,
        tail,
        settings.BEACON_BREAKER_THRESHOLD,
        settings.BEACON_BREAKER_COOLDOWN_SECONDS,
        int(window + 120),
        outcomes.last_error[:300],
        *(f"{minute}:{ms}" for ms in outcomes.latencies_ms[-LATENCY_SAMPLES:]),
    ]
    try:
        state = script(RECORD)(keys=[_breaker(key), _minute(key, minute), _latencies(key)], args=args)
    except StateUnavailable as exc:
        logger.warning("provider state unavailable, outcomes not counted: %s", exc)
        return "closed"
    state = _text(state)
    if state == "open":
        logger.warning("provider %s: circuit open after %d failures", key, failures)
    return state


def provider_pause(key: str, seconds: float, reason: str, *, now: float | None = None) -> None:
    """The provider asked to be left alone (429 with Retry-After): every worker skips it
    until then."""
    now = time.time() if now is None else now
    # A provider's word is not taken beyond the longest retry delay.
    seconds = min(max(seconds, 0.0), settings.BEACON_RETRY_MAX_SECONDS)
    try:
        script(PAUSE)(keys=[_breaker(key)], args=[now + seconds, reason[:300], now])
    except StateUnavailable as exc:
        logger.warning("provider state unavailable, pause not shared: %s", exc)


def providers_health(keys: list[str], *, now: float | None = None) -> dict[str, dict]:
    """Each provider's health over the window, by key: one pipelined round trip."""
    if not keys:
        return {}
    now = time.time() if now is None else now
    window = settings.BEACON_HEALTH_WINDOW_SECONDS
    first, last = int((now - window) // 60) + 1, int(now // 60)
    minutes = range(first, last + 1)
    try:
        pipe = state_client().pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(_breaker(key))
            for minute in minutes:
                pipe.hmget(_minute(key, minute), "answers", "failures")
            pipe.lrange(_latencies(key), 0, LATENCY_SAMPLES - 1)
        replies = pipe.execute()
    except StateUnavailable as exc:
        logger.warning("provider state unavailable: %s", exc)
        return {key: {"status": "unknown", "problem": "the shared provider state is unreachable"} for key in keys}
    report, step = {}, len(minutes) + 2
    for index, key in enumerate(keys):
        chunk = replies[index * step : (index + 1) * step]
        breaker = {_text(k): _text(v) for k, v in chunk[0].items()}
        answers = sum(int(a or 0) for a, _ in chunk[1:-1])
        failures = sum(int(f or 0) for _, f in chunk[1:-1])
        latencies = sorted(int(ms) for minute, ms in (_text(s).split(":") for s in chunk[-1]) if int(minute) >= first)
        report[key] = _health(breaker, answers, failures, latencies, now)
    return report


def _health(breaker: dict, answers: int, failures: int, latencies: list[int], now: float) -> dict:
    open_until = float(breaker.get("open_until") or 0)
    paused_until = float(breaker.get("paused_until") or 0)
    rate = round((answers - failures) / answers, 4) if answers else None
    if open_until > now:
        breaker_state, status = "open", "down"
    elif open_until > 0:
        breaker_state, status = "half_open", "degraded"
    else:
        breaker_state, status = "closed", "healthy"
    if status == "healthy" and (
        paused_until > now or (rate is not None and rate < settings.BEACON_HEALTH_DEGRADED_BELOW)
    ):
        status = "degraded"
    last_error_at = float(breaker.get("last_error_at") or 0)
    return {
        "status": status,
        "breaker": breaker_state,
        "open_until": _stamp(open_until) if open_until > now else None,
        "paused_until": _stamp(paused_until) if paused_until > now else None,
        "consecutive_failures": int(breaker.get("fails") or 0),
        "window_seconds": int(settings.BEACON_HEALTH_WINDOW_SECONDS),
        "attempts": answers,
        "failures": failures,
        "success_rate": rate,
        "p95_latency_ms": latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)] if latencies else None,
        "last_error": breaker.get("last_error") or "",
        "last_error_at": _stamp(last_error_at) if last_error_at else None,
    }


def _stamp(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
