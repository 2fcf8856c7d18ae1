"""The account's preferences: one row per account, made with the defaults when first read."""

from ..models import AccountPreference


def account_preference(*, account) -> AccountPreference:
    preference, _ = AccountPreference.objects.get_or_create(account=account)
    return preference
