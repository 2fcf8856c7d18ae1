"""Decide: for each planned delivery, send now, defer until a time, or skip with a reason.

This is the seam the preferences app fills (account and recipient preferences, quiet
hours in the recipient's time zone, weekend exclusion, daily caps, consent, suppression,
with a priority override for critical messages). It runs inside accept, over the whole
batch, after the recipients are resolved and before anything is rendered or written, so
that a skipped delivery costs no render and a deferred one is stored with its due time.

Today Beacon keeps no preferences, so every delivery is sent at its requested time.
What accept does with each answer is already in place: `DEFER` stores the delivery as
scheduled for `until` (the sweep queues it then); `SKIP` stores it as `suppressed` with
the reason as its error and event, and never sends it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Verdict(enum.Enum):
    SEND = "send"
    DEFER = "defer"
    SKIP = "skip"


@dataclass(frozen=True)
class Planned:
    """One delivery accept is about to write: who, on which channel, of what kind."""

    recipient_id: int
    channel: str
    category: str
    priority: str
    send_at: datetime  # when it was asked to go (now, or scheduled_for)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    until: datetime | None = None  # DEFER: when it may go
    reason: str = ""  # SKIP: why (shown on the delivery and its event)


SEND_NOW = Decision(Verdict.SEND)


def deliveries_decide(*, account, planned: list[Planned]) -> list[Decision]:
    """One decision per planned delivery, in order, in a constant number of queries."""
    return [SEND_NOW for _ in planned]
