"""The account's preferences: one row per account, made with the defaults when first read."""

from ..models import AccountPreference


def account_preference(*, account) -> AccountPreference:
    preference, _ = AccountPreference.objects.get_or_create(account=account)
    return preference


def account_preference_update(*, preference: AccountPreference, changes: dict) -> AccountPreference:
    """Write only the fields given, so that two partial updates at once both stay."""
    for name, value in changes.items():
        setattr(preference, name, value)
    preference.save(update_fields=[*changes, "updated_at"])
    return preference
