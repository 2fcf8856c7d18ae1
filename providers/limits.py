"""Rate limits per provider, per account and per recipient, enforced across every worker
with token buckets in the shared provider state (providers.shared_state): one Lua script
takes a flush's tokens from all three kinds of bucket at once, atomically, in one round
trip.

A bucket holds at most `burst` tokens and gains `rate` a second; a message takes one
token from its account's and its recipient's bucket when its flush is formed (one over
either limit waits alone, back in the queue, and the others go on), and one from its
provider's right before its request (the batch sleeps for it, so that it waits rather
than hammering the provider; a wait beyond BEACON_RATE_LIMIT_MAX_WAIT_SECONDS sends the
rest of the batch back to the queue).

Limits: a provider record's `rate_limit_per_second` and `burst`; the platform's providers
from BEACON_PROVIDER_RATE_LIMITS ("twilio=100:20,fcm=500"); every account from
BEACON_ACCOUNT_RATE_LIMIT_PER_SECOND / _BURST; every recipient (address on a channel)
from BEACON_RECIPIENT_RATE_LIMIT_PER_SECOND / _BURST. A rate of 0 or unset is no limit.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .shared_state import PREFIX, StateUnavailable, script

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens a second; 0 is no limit
    burst: int

    @classmethod
    def of(cls, rate, burst=None) -> Limit:
        rate = float(rate or 0)
        if rate <= 0:
            return NO_LIMIT
        return cls(rate, max(1, int(burst or math.ceil(rate))))

    @property
    def limited(self) -> bool:
        return self.rate > 0


NO_LIMIT = Limit(0.0, 0)


@lru_cache(maxsize=8)
def _platform_limits(spec: str) -> dict[str, Limit]:
    limits = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, value = part.partition("=")
        rate, _, burst = value.partition(":")
        try:
            limits[kind.strip()] = Limit.of(float(rate), int(burst) if burst else None)
        except ValueError:
            raise ImproperlyConfigured(
                f"BEACON_PROVIDER_RATE_LIMITS: {part!r} is not kind=rate or kind=rate:burst."
            ) from None
    return limits


def platform_limit(kind: str) -> Limit:
    return _platform_limits(settings.BEACON_PROVIDER_RATE_LIMITS).get(kind, NO_LIMIT)


def account_limit() -> Limit:
    return Limit.of(settings.BEACON_ACCOUNT_RATE_LIMIT_PER_SECOND, settings.BEACON_ACCOUNT_RATE_LIMIT_BURST)


def recipient_limit() -> Limit:
    return Limit.of(settings.BEACON_RECIPIENT_RATE_LIMIT_PER_SECOND, settings.BEACON_RECIPIENT_RATE_LIMIT_BURST)


# KEYS: the provider's bucket, then per message its account's bucket and its recipient's.
# ARGV: now, then rate and burst of the provider, the accounts and the recipients (rate 0:
# no bucket). Returns the seconds the provider's bucket needs before the first message it
# could not grant ("0": all granted), then per message: "0" granted, "-1" waits for the
# provider's bucket, or the seconds its account's or recipient's bucket needs (counting
# the messages waiting on that bucket before it in this flush).
TAKE = """
local now = tonumber(ARGV[1])
local limits = {}
for i = 0, 2 do
  limits[i + 1] = {rate = tonumber(ARGV[2 + 2 * i]), burst = tonumber(ARGV[3 + 2 * i])}
end
local buckets = {}
local function bucket(key, limit)
  local b = buckets[key]
  if b == nil then
    local stored = redis.call('HMGET', key, 'tokens', 'at')
    local tokens = tonumber(stored[1] or limit.burst)
    local at = tonumber(stored[2] or now)
    tokens = math.min(limit.burst, tokens + math.max(0, now - at) * limit.rate)
    b = {tokens = tokens, limit = limit, key = key}
    buckets[key] = b
  end
  return b
end
local provider = nil
if limits[1].rate > 0 then provider = bucket(KEYS[1], limits[1]) end
local out = {'0'}
local blocked = false
local waiting = {}
for i = 1, (#KEYS - 1) / 2 do
  if blocked then
    table.insert(out, '-1')
  elseif provider ~= nil and provider.tokens < 1 then
    blocked = true
    out[1] = tostring((1 - provider.tokens) / limits[1].rate)
    table.insert(out, '-1')
  else
    local own = {}
    if limits[2].rate > 0 then table.insert(own, bucket(KEYS[2 * i], limits[2])) end
    if limits[3].rate > 0 then table.insert(own, bucket(KEYS[2 * i + 1], limits[3])) end
    local wait = 0
    for _, b in ipairs(own) do
      if b.tokens < 1 then
        wait = math.max(wait, (1 + (waiting[b.key] or 0) - b.tokens) / b.limit.rate)
      end
    end
    if wait > 0 then
      for _, b in ipairs(own) do
        if b.tokens < 1 then waiting[b.key] = (waiting[b.key] or 0) + 1 end
      end
      table.insert(out, tostring(wait))
    else
      if provider ~= nil then provider.tokens = provider.tokens - 1 end
      for _, b in ipairs(own) do b.tokens = b.tokens - 1 end
      table.insert(out, '0')
    end
  end
end
for key, b in pairs(buckets) do
  redis.call('HSET', key, 'tokens', tostring(b.tokens), 'at', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((b.limit.burst / b.limit.rate + 1) * 1000))
end
return out
"""


@dataclass
class Grant:
    """Per message: 0 (send now), None (waits for the provider's bucket, `provider_wait`
    seconds for the first of them), or the seconds its account or recipient needs."""

    waits: list[float | None]
    provider_wait: float = 0.0


def tokens_take(
    *,
    provider_key: str,
    provider: Limit,
    messages: list[tuple[int, str]],
    own_limits: bool = True,
    now: float | None = None,
) -> Grant:
    """Take one token per message (account id, recipient key), in order, from the
    provider's bucket and (unless `own_limits` is False) its account's and recipient's.
    No round trip when none of them is limited."""
    account, recipient = (account_limit(), recipient_limit()) if own_limits else (NO_LIMIT, NO_LIMIT)
    if not (provider.limited or account.limited or recipient.limited):
        return Grant([0.0] * len(messages))
    now = time.time() if now is None else now
    if provider.limited:
        # The provider counts arrivals, we count departures: keep a little below its limit
        # so that the jitter of the network and of the workers' scheduling never tips a
        # second over it.
        keep = 1 - settings.BEACON_RATE_LIMIT_HEADROOM
        provider = Limit(provider.rate * keep, max(1, math.floor(provider.burst * keep)))
    keys = [f"{PREFIX}{provider_key}:tokens"]
    for account_id, recipient_key in messages:
        keys += [f"{PREFIX}account:{account_id}:tokens", f"{PREFIX}recipient:{recipient_key}:tokens"]
    args = [now, provider.rate, provider.burst, account.rate, account.burst, recipient.rate, recipient.burst]
    try:
        provider_wait, *waits = script(TAKE)(keys=keys, args=args)
    except StateUnavailable as exc:
        logger.warning("provider state unavailable, sending without rate limits: %s", exc)
        return Grant([0.0] * len(messages))
    return Grant([None if float(w) < 0 else float(w) for w in waits], float(provider_wait))


def provider_token_wait(provider_key: str, provider: Limit, *, most: float) -> float:
    """Take one token from the provider's bucket, sleeping for it when it is due within
    `most` seconds: 0 once taken, else the (longer) wait, and nothing is taken. Asked
    right before each request, so that what the provider sees is paced, not what we
    planned a moment before."""
    while True:
        grant = tokens_take(provider_key=provider_key, provider=provider, messages=[(0, "")], own_limits=False)
        if grant.waits[0] == 0:
            return 0.0
        if grant.provider_wait > most:
            return grant.provider_wait
        time.sleep(grant.provider_wait)
