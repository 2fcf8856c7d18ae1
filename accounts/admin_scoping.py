"""Which accounts' rows an operator sees in the admin.

An account is a user. A superuser works across every account; any other staff user is
scoped to their own account: the changelists, change pages and actions hold only its rows,
and the choices on an add form offer only it and what it owns. Every app's admin mixes
this in, so there is one rule for all of them (it lives here because every app may import
`accounts`). `action_confirmation` is the confirmation page every bulk action shows first.
"""

from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.template.response import TemplateResponse


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


def action_confirmation(
    modeladmin, request, rows, *, action: str, heading: str, question: str, confirm: str, describe
) -> TemplateResponse | None:
    """The "Are you sure?" page of a bulk action, or None once the operator said yes: call
    it first in the action and act only when it returns None."""
    if request.POST.get("post") == "yes":
        return None
    return TemplateResponse(
        request,
        "admin/confirm_action.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": "Are you sure?",
            "opts": modeladmin.opts,
            "heading": heading,
            "question": question,
            "confirm": confirm,
            "action": action,
            "lines": [describe(row) for row in rows],
            "pks": [row.pk for row in rows],
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        },
    )
