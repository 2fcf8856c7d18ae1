"""One-click unsubscribe (RFC 8058) for marketing email.

Each marketing email carries `List-Unsubscribe: <https://.../u/<token>/>` and
`List-Unsubscribe-Post: List-Unsubscribe=One-Click`. The token is signed (Django's signing,
under SECRET_KEY and its fallbacks) and names the account, the recipient, the channel and
the category; it does not expire, since a message may be read years after it was sent.

- A POST to the link, with no cookie or session (a mail client's one-click request, or the
  page's own form), opts the recipient out of that category on that channel and records
  the withdrawal in the consent ledger. Repeating it changes nothing.
- A GET only shows a page with a button that makes that POST: link scanners and previews
  fetch links, and must not unsubscribe anyone.
- A forged or damaged token is a 404 page, and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from preferences.models import ConsentMethod
from templates.models import Category, Channel

from .models import Recipient
from .services.recipients import recipient_unsubscribe

SALT = "beacon.unsubscribe"
TEMPLATE = "notifications/unsubscribe.html"
ONE_CLICK = "List-Unsubscribe=One-Click"


@dataclass(frozen=True)
class UnsubscribeClaims:
    account_id: int
    recipient_id: int
    channel: str
    category: str


def unsubscribe_token(
    *, account_id: int, recipient_id: int, channel: str = Channel.EMAIL, category: str = Category.MARKETING
) -> str:
    # A list keeps the link short; no timestamp, as the link does not expire.
    return signing.Signer(salt=SALT).sign_object([account_id, recipient_id, str(channel), str(category)])


def unsubscribe_claims(token: str) -> UnsubscribeClaims | None:
    """What a token says, or None for a forged, damaged or foreign one."""
    try:
        account_id, recipient_id, channel, category = signing.Signer(salt=SALT).unsign_object(token)
        return UnsubscribeClaims(
            account_id=int(account_id), recipient_id=int(recipient_id), channel=str(channel), category=str(category)
        )
    except (signing.BadSignature, TypeError, ValueError):
        return None


def unsubscribe_url(*, account_id: int, recipient_id: int) -> str:
    token = unsubscribe_token(account_id=account_id, recipient_id=recipient_id)
    return settings.PUBLIC_BASE_URL + reverse("unsubscribe", args=[token])


def unsubscribe_headers(*, account_id: int, recipient_id: int) -> dict[str, str]:
    """The RFC 8058 headers of a marketing email to this recipient."""
    return {
        "List-Unsubscribe": f"<{unsubscribe_url(account_id=account_id, recipient_id=recipient_id)}>",
        "List-Unsubscribe-Post": ONE_CLICK,
    }


@method_decorator([csrf_exempt, never_cache], name="dispatch")
class UnsubscribeView(View):
    """GET: the confirmation page, changing nothing. POST: unsubscribe (no cookie needed)."""

    http_method_names = ["get", "head", "post"]

    def get(self, request, token: str):
        claims = unsubscribe_claims(token)
        if claims is None or not _recipient_exists(claims):
            return _page(request, "invalid", status=404)
        return _page(request, "confirm", claims=claims)

    def post(self, request, token: str):
        claims = unsubscribe_claims(token)
        if claims is None:
            return _page(request, "invalid", status=404)
        with transaction.atomic():
            recipient = (
                Recipient.objects.select_related("account")
                .filter(pk=claims.recipient_id, account_id=claims.account_id)
                .first()
            )
            if recipient is None:
                return _page(request, "invalid", status=404)
            recipient_unsubscribe(
                account=recipient.account,
                recipient=recipient,
                channel=claims.channel,
                category=claims.category,
                method=ConsentMethod.LINK,
                detail="unsubscribe page" if request.POST.get("from") == "page" else "one-click request",
            )
        return _page(request, "done", claims=claims)


def _recipient_exists(claims: UnsubscribeClaims) -> bool:
    return Recipient.objects.filter(pk=claims.recipient_id, account_id=claims.account_id).exists()


def _page(request, state: str, *, claims: UnsubscribeClaims | None = None, status: int = 200):
    response = render(request, TEMPLATE, {"state": state, "claims": claims}, status=status)
    response["X-Robots-Tag"] = "noindex"
    return response
