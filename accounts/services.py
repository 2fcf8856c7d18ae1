import secrets

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


def api_token_authenticate(*, raw_token: str):
    """The active account owning the token, or None."""
    token = (
        ApiToken.objects.select_related("account")
        .filter(digest=token_digest(raw_token), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.account.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.account
