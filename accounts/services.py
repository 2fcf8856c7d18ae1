import secrets
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from .models import ApiToken, token_digest

TOKEN_PREFIX = "bcn_"


class AccountNotFound(Exception):
    pass


@transaction.atomic
def api_token_issue(*, username: str, create: bool = False, name: str = "") -> tuple[ApiToken, str]:
    """Create a token for the account; returns the row and the raw token (shown once)."""
    User = get_user_model()
    if create:
        account, _ = User.objects.get_or_create(username=username)
    else:
        try:
            account = User.objects.get(username=username)
        except User.DoesNotExist:
            raise AccountNotFound(username) from None
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(account=account, name=name, prefix=raw[:12], digest=token_digest(raw))
    return token, raw


def api_token_revoke(*, token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    _authenticated.pop(token.digest, None)


# digest -> (monotonic expiry, account): every API request reads its token, so a process
# remembers a good one for BEACON_TOKEN_CACHE_SECONDS. Revoking a token or saving its
# account forgets it here at once; other processes notice within that many seconds.
_authenticated: dict[str, tuple[float, object]] = {}
_CACHE_LIMIT = 10_000


def api_token_authenticate(*, raw_token: str):
    """The active account owning the token, or None."""
    digest = token_digest(raw_token)
    cached = _authenticated.get(digest)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    token = ApiToken.objects.select_related("account").filter(digest=digest, revoked_at__isnull=True).first()
    if token is None or not token.account.is_active:
        _authenticated.pop(digest, None)
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    if settings.BEACON_TOKEN_CACHE_SECONDS > 0:
        if len(_authenticated) >= _CACHE_LIMIT:
            _authenticated.clear()
        _authenticated[digest] = (time.monotonic() + settings.BEACON_TOKEN_CACHE_SECONDS, token.account)
    return token.account


def account_tokens_forget(*, account_id) -> None:
    """Drop the remembered tokens of an account (it was changed or deleted)."""
    for digest, (_, account) in list(_authenticated.items()):
        if account.pk == account_id:
            _authenticated.pop(digest, None)
