"""A value a process keeps for a few seconds, so that a hot path asks the database nothing
when nothing changed: "which accounts have webhook endpoints", "which have provider
records". Writes in this process forget it at once (and again at commit); other processes
see a change within `seconds`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from django.db import transaction

# "at" before anything was read: the next call reads, whatever the monotonic clock's origin.
NEVER_READ = float("-inf")


class ProcessCache:
    def __init__(self, load: Callable[[], object], seconds: float):
        self.load, self.seconds = load, seconds
        self._lock = threading.Lock()
        self._at, self._value = NEVER_READ, None

    def get(self):
        now = time.monotonic()
        with self._lock:
            if now - self._at < self.seconds:
                return self._value
        value = self.load()
        with self._lock:
            self._at, self._value = now, value
        return value

    def set(self, value) -> None:
        """Hold this value as if just read (tests start from a known state)."""
        with self._lock:
            self._at, self._value = time.monotonic(), value

    def forget(self) -> None:
        """Read again at the next call, and again after the current transaction commits."""
        self._forget_now()
        transaction.on_commit(self._forget_now)

    def _forget_now(self) -> None:
        with self._lock:
            self._at = NEVER_READ
