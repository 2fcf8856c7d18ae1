"""The state every worker shares about providers (circuit breakers, health, pauses and
rate-limit buckets), kept in Redis and changed only by Lua scripts, so that each change
is atomic and one round trip.

Without REDIS_URL (the embedded defaults of `make run`) the same scripts run in process
against fakeredis: the state is then each worker process's own.

Redis being unreachable must not stop sending: callers catch `StateUnavailable`, log it
and go on as if every provider were healthy and unlimited.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

PREFIX = "beacon:prov:"
StateUnavailable = redis.RedisError

_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def state_client() -> redis.Redis:
    if settings.REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    import fakeredis

    return fakeredis.FakeRedis()


_SCRIPTS: dict[str, object] = {}


def script(source: str):
    """A registered script (EVALSHA, loading it again after a Redis restart)."""
    with _LOCK:
        registered = _SCRIPTS.get(source)
        if registered is None:
            registered = _SCRIPTS[source] = state_client().register_script(source)
    return registered


def state_reset() -> None:
    """Forget every provider's shared state (tests, and an operator after an incident)."""
    client = state_client()
    keys = list(client.scan_iter(match=f"{PREFIX}*", count=1000))
    if keys:
        client.delete(*keys)


def client_reset() -> None:
    """Build the client again (after REDIS_URL changes, e.g. in tests)."""
    with _LOCK:
        _SCRIPTS.clear()
    state_client.cache_clear()
