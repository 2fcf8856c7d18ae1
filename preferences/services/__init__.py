"""Writes and decisions for preferences: the decision over a batch of deliveries, the
account's preferences, suppression and the consent ledger."""

from .consent import (
    consent_record,
    suppression_add,
    suppression_lift,
    suppressions_add,
)
from .decide import Decision, Planned, Verdict, deliveries_decide, local_zone
from .settings import account_preference, account_preference_update

__all__ = [
    "Decision",
    "Planned",
    "Verdict",
    "account_preference",
    "account_preference_update",
    "consent_record",
    "deliveries_decide",
    "local_zone",
    "suppression_add",
    "suppression_lift",
    "suppressions_add",
]
