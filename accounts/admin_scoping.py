"""Which accounts' rows an operator sees in the admin.

An account is a user. A superuser works across every account; any other staff user is
scoped to their own account: the changelists, change pages and actions hold only its rows,
and the choices on an add form offer only it and what it owns. Every app's admin mixes
this in, so there is one rule for all of them (it lives here because every app may import
`accounts`).
"""

from django.contrib.auth import get_user_model


def sees_every_account(user) -> bool:
    return user.is_superuser


class AccountScopedAdmin:
    """Mix in before `admin.ModelAdmin`. `account_path` is the lookup from the model to
    the account that owns the row, e.g. "delivery__account"."""

    account_path = "account"

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if sees_every_account(request.user):
            return queryset
        return queryset.filter(**{self.account_path: request.user})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if not sees_every_account(request.user):
            related = db_field.remote_field.model
            if related is get_user_model():
                kwargs["queryset"] = related._default_manager.filter(pk=request.user.pk)
                kwargs.setdefault("initial", request.user.pk)
            elif _owned_by_account(related):
                kwargs["queryset"] = related._default_manager.filter(account=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


def _owned_by_account(model) -> bool:
    field = next((f for f in model._meta.fields if f.name == "account"), None)
    return field is not None and field.is_relation and field.remote_field.model is get_user_model()
