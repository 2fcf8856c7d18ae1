"""Decide: the pipeline's stage between accept and render. The rules live in
preferences.services.decide (account and recipient preferences, quiet hours, caps,
suppression, consent); this module is the pipeline's name for them.

Accept calls it over the whole batch, after the recipients are resolved and before
anything is written: `DEFER` stores the delivery as scheduled for `until` (the sweep
queues it then); `SKIP` stores it as `suppressed` with the reason as its error and event,
and never sends it.
"""

from preferences.services.decide import SEND_NOW, Decision, Planned, Verdict, deliveries_decide

__all__ = ["SEND_NOW", "Decision", "Planned", "Verdict", "deliveries_decide"]
