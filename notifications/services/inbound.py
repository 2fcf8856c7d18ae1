"""Inbound: what recipients tell Beacon, directly or through a provider, becomes
suppression, opt-outs and consent records.

- An SMS keyword to the platform number: STOP and its synonyms suppress the number for
  every account that has it as a recipient; START and UNSTOP lift a STOP suppression (a
  bounce or a manual one stays). Each is recorded in the consent ledger, keyed by the
  number, so that START restores what was in force before STOP.
- Twilio's error 21610 (the number had replied STOP to the sender), on a send or in a
  status callback: the number is suppressed on the delivery's channel (SMS, WhatsApp or
  voice) for the delivery's account, as for STOP.
- An ESP's hard bounce or spam complaint: the email address is suppressed for the
  delivery's account; a complaint is also recorded as a withdrawal of consent.
- An unsubscribe link: an opt-out of the category on the channel, and a withdrawal.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from preferences.models import (
    ConsentMethod,
    Suppression,
    SuppressionReason,
    address_hash,
)
from preferences.services import consent_record, suppression_add, suppression_lift, suppressions_add
from templates.models import Channel

from ..models import Delivery, Recipient

logger = logging.getLogger("beacon.inbound")

STOP_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
START_KEYWORDS = frozenset({"START", "UNSTOP"})
STOP, START = "stop", "start"
# Twilio's Advanced Opt-Out names the keyword class it applied (an account may configure
# its own keywords there); HELP needs nothing from Beacon.
TWILIO_OPT_OUT_TYPES = {"STOP": STOP, "START": START}

# Provider error codes that mean the recipient unsubscribed from the sender.
# Twilio answers 21610 on every channel it sends when the number is blocked for the sender.
UNSUBSCRIBED_ERRORS = {
    (channel, "21610"): "Twilio error 21610: the number replied STOP to the sender"
    for channel in (Channel.SMS, Channel.WHATSAPP, Channel.VOICE)
}

BOUNCED, COMPLAINED = "bounced", "complained"  # anymail's event types


@dataclass(frozen=True)
class SmsInbound:
    keyword: str  # the keyword, upper case; "" when the body is not one
    action: str  # STOP, START or ""
    accounts: int  # accounts it was applied to


def sms_keyword(body: str) -> str:
    """The keyword a message is, or "": the whole trimmed body, in any case ("stop please"
    is not a keyword, as for Twilio)."""
    word = (body or "").strip().upper()
    return word if word in STOP_KEYWORDS or word in START_KEYWORDS else ""


def masked_phone(phone: str) -> str:
    return f"***{phone[-4:]}" if len(phone) > 4 else "***"


@transaction.atomic
def sms_inbound(*, from_: str, body: str, opt_out_type: str = "") -> SmsInbound:
    """Apply an inbound SMS from `from_` to every account that has the number as a
    recipient: a STOP keyword suppresses it, START or UNSTOP lifts a STOP suppression.
    Anything else changes nothing."""
    keyword = sms_keyword(body)
    if keyword:
        action = STOP if keyword in STOP_KEYWORDS else START
    else:
        action = TWILIO_OPT_OUT_TYPES.get((opt_out_type or "").strip().upper(), "")
        keyword = (opt_out_type or "").strip().upper() if action else ""
    phone = (from_ or "").strip()
    if not action or not phone:
        logger.info("inbound sms from %s: not a keyword, nothing to do", masked_phone(phone))
        return SmsInbound(keyword="", action="", accounts=0)
    accounts = _accounts_with_phone(phone)
    for account in accounts:
        if action == STOP:
            _sms_stop(account, phone, keyword)
        else:
            _sms_start(account, phone, keyword)
    logger.info(
        "inbound sms %s from %s: %s applied to %d account(s)", keyword, masked_phone(phone), action, len(accounts)
    )
    return SmsInbound(keyword=keyword, action=action, accounts=len(accounts))


def _accounts_with_phone(phone: str) -> list:
    """The accounts that have the number as a recipient (one platform number serves them all)."""
    account_ids = Recipient.objects.filter(phone=phone).values("account_id")
    return list(get_user_model().objects.filter(pk__in=account_ids).order_by("pk"))


def _sms_stop(account, phone: str, keyword: str) -> None:
    suppression_add(
        account=account,
        channel=Channel.SMS,
        address=phone,
        reason=SuppressionReason.STOP,
        detail=f"{keyword} from the recipient",
    )
    consent_record(
        account=account,
        address=(Channel.SMS, phone),
        channel=Channel.SMS,
        category="*",
        granted=False,
        method=ConsentMethod.KEYWORD,
        detail=keyword,
    )


def _sms_start(account, phone: str, keyword: str) -> None:
    reason = (
        Suppression.objects.filter(account=account, channel=Channel.SMS, address_hash=address_hash(Channel.SMS, phone))
        .values_list("reason", flat=True)
        .first()
    )
    detail = keyword
    if reason == SuppressionReason.STOP:
        suppression_lift(account=account, channel=Channel.SMS, address=phone)
    elif reason:
        # A number that bounced or that an operator suppressed stays so: only an
        # operator lifts those.
        detail = f"{keyword}; the {reason} suppression stays"
    consent_record(
        account=account,
        address=(Channel.SMS, phone),
        channel=Channel.SMS,
        category="*",
        granted=True,
        method=ConsentMethod.KEYWORD,
        detail=detail,
    )


# --- Provider reports ------------------------------------------------------------------


def unsubscribed_errors_suppress(*, reports: list[tuple[int, str, str, str]]) -> int:
    """Suppress the addresses of (account id, channel, address, provider error code)
    reports whose code says the recipient unsubscribed (Twilio 21610). For a batch: one
    query for the accounts, then a few statements per account, never per report.
    Returns how many suppressions were new."""
    wanted: dict[int, list[tuple[str, str]]] = defaultdict(list)
    details: dict[int, str] = {}
    for account_id, channel, address, code in reports:
        detail = UNSUBSCRIBED_ERRORS.get((channel, str(code or "")))
        if detail and address:
            wanted[account_id].append((channel, address))
            details[account_id] = detail
    if not wanted:
        return 0
    accounts = get_user_model().objects.in_bulk(list(wanted))
    added = 0
    for account_id, entries in wanted.items():
        if account_id in accounts:
            added += suppressions_add(
                account=accounts[account_id], entries=entries, reason=SuppressionReason.STOP, detail=details[account_id]
            )
    return added


def soft_bounce(esp_event) -> bool:
    """anymail reports some ESPs' temporary failures as "bounced" too; those are no reason
    to stop mailing an address."""
    if not isinstance(esp_event, dict):
        return False
    data = esp_event.get("data")
    return any(
        (
            esp_event.get("event") == "bounce" and esp_event.get("type") == "blocked",  # SendGrid: a block
            esp_event.get("Type") == "SoftBounce",  # Postmark
            esp_event.get("event") == "soft_bounce",  # Mandrill, Brevo
            isinstance(data, dict) and data.get("type") == "soft_bounced",  # MailerSend
        )
    )


@transaction.atomic
def esp_feedback_record(*, delivery: Delivery, event_type: str, esp_event=None, detail: str = "") -> bool:
    """A hard bounce or a spam complaint about an email delivery: its address is suppressed
    for the delivery's account, and a complaint withdraws consent to email. Other events,
    and soft bounces, change nothing. Returns whether a suppression was added."""
    if delivery.channel != Channel.EMAIL or not delivery.to:
        return False
    if event_type == BOUNCED and not soft_bounce(esp_event):
        reason = SuppressionReason.BOUNCED
    elif event_type == COMPLAINED:
        reason = SuppressionReason.COMPLAINED
    else:
        return False
    account = delivery.account
    added = suppression_add(
        account=account, channel=Channel.EMAIL, address=delivery.to, reason=reason, detail=detail or event_type
    )
    if reason == SuppressionReason.COMPLAINED:
        consent_record(
            account=account,
            recipient=delivery.notification.recipient,
            address=(Channel.EMAIL, delivery.to),
            channel=Channel.EMAIL,
            category="*",
            granted=False,
            method=ConsentMethod.ESP,
            detail=(detail or "spam complaint")[:500],
        )
    return added
