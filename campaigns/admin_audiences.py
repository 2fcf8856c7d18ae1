"""The admin of audiences and their members.

An audience's change form takes a CSV file (list audiences): saving it runs the same
import as the API's upload/ and reports the result (imported, duplicates, the rejected
lines) as messages. Members are read-only, on their own changelist filtered by audience
(an audience may hold a million of them: no inline)."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html

from accounts.admin_scoping import AccountScopedAdmin, sees_every_account

from .audiences import (
    audience_check,
    audience_count,
    audience_create,
    audience_delete,
    audience_import_csv,
    audience_update,
)
from .models import Audience, AudienceKind, AudienceMember

# Rejected lines listed in the admin's message (the API reports up to REJECTED_REPORTED).
REJECTED_SHOWN = 20


class AudienceForm(forms.ModelForm):
    filter = forms.JSONField(
        required=False,
        initial=dict,
        help_text='A filter audience\'s conditions, e.g. {"tags": ["vip"], "locale": "es", '
        '"attributes": {"plan": "gold"}, "last_booking_after": "2025-01-01"}.',
    )
    csv_file = forms.FileField(
        required=False,
        label="Upload CSV",
        help_text="List audiences: a UTF-8 CSV with a header line; columns phone, email, external_id (one at "
        "least per row), name, locale, timezone, and any others as member attributes. Its rows are added "
        "when you save.",
    )

    class Meta:
        model = Audience
        fields = ["account", "name", "kind", "filter"]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        instance = self.instance if self.instance.pk else None
        account = instance.account if instance else cleaned.get("account")
        kind = instance.kind if instance else cleaned.get("kind")
        if account is None or kind is None:
            return cleaned
        if cleaned.get("csv_file") and kind != AudienceKind.LIST:
            self.add_error("csv_file", "A filter audience takes no upload: its members come from its filter.")
        try:
            name, filter = audience_check(
                account, name=cleaned.get("name", ""), kind=kind, filter=cleaned.get("filter"), instance=instance
            )
        except ValidationError as exc:
            for key, errors in exc.message_dict.items():
                target = key.split(".", 1)[0]
                for error in errors:
                    if target in self.fields:
                        self.add_error(target, error if target == key else f"{key}: {error}")
                    else:
                        self.add_error(None, f"{key}: {error}")
        else:
            cleaned["name"], cleaned["filter"] = name, filter
        return cleaned

    def _post_clean(self):
        # The services validate (above) and save.
        pass


class AudienceMemberInScope(admin.SimpleListFilter):
    """The members of one audience, chosen among the operator's own audiences."""

    title = "audience"
    parameter_name = "audience"

    def lookups(self, request, model_admin):
        audiences = Audience.objects.order_by("name", "pk")
        if not sees_every_account(request.user):
            audiences = audiences.filter(account=request.user)
        return [(str(audience.pk), audience.name) for audience in audiences[:200]]

    def queryset(self, request, queryset):
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(audience_id=int(value))
        return queryset


@admin.register(Audience)
class AudienceAdmin(AccountScopedAdmin, admin.ModelAdmin):
    form = AudienceForm
    list_display = ("name", "kind", "member_count", "created_at", "account")
    list_filter = ("kind",)
    search_fields = ("name", "account__username")
    list_select_related = ("account",)
    ordering = ("-created_at", "-pk")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["account", "name", "kind", "filter", "csv_file"]
        if obj.kind == AudienceKind.FILTER:
            return ["account", "kind", "name", "filter", "matching_now", "members", "created_at", "updated_at"]
        return ["account", "kind", "name", "csv_file", "members", "created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("account", "kind", "matching_now", "members", "created_at", "updated_at")

    @admin.display(description="members")
    def members(self, audience):
        url = reverse("admin:campaigns_audiencemember_changelist") + f"?audience={audience.pk}"
        return format_html('{} member(s): <a href="{}">view them</a>', audience.member_count, url)

    @admin.display(description="matching now")
    def matching_now(self, audience):
        return (
            f"{audience_count(audience)} recipient(s) match the filter now (written as members when a campaign starts)."
        )

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            saved = audience_update(Audience.objects.get(pk=obj.pk), name=data["name"], filter=data.get("filter"))
        else:
            saved = audience_create(data["account"], name=data["name"], kind=data["kind"], filter=data.get("filter"))
        # The admin goes on with `obj` (its log entry, the redirect): make it the saved row.
        for field in Audience._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))
        obj._state.adding = False
        obj._state.db = saved._state.db
        upload = data.get("csv_file")
        if upload:
            self._import(request, obj, upload)

    def _import(self, request, audience, upload):
        try:
            result = audience_import_csv(audience, upload)
        except ValidationError as exc:
            self.message_user(request, f"The file {upload.name} was refused: {' '.join(exc.messages)}", messages.ERROR)
            return
        self.message_user(
            request,
            f"{upload.name}: {result['imported']} member(s) imported, {result['duplicates']} already in the "
            f"audience (updated), {result['rejected_count']} row(s) rejected; the audience has "
            f"{result['member_count']} member(s).",
            messages.SUCCESS if not result["rejected_count"] else messages.WARNING,
        )
        shown = result["rejected"][:REJECTED_SHOWN]
        if shown:
            lines = "; ".join(f"line {row['line']}: {row['reason']}" for row in shown)
            more = result["rejected_count"] - len(shown)
            tail = f" (and {more} more)" if more else ""
            self.message_user(request, f"Rejected {lines}{tail}", messages.WARNING)

    def delete_model(self, request, obj):
        audience_delete(obj)

    def delete_queryset(self, request, queryset):
        for audience in queryset:
            audience_delete(audience)


@admin.register(AudienceMember)
class AudienceMemberAdmin(AccountScopedAdmin, admin.ModelAdmin):
    """Read-only: members come from uploads and freezes."""

    account_path = "audience__account"
    list_display = ("id", "audience", "recipient", "email", "phone", "external_id", "attributes", "created_at")
    list_filter = (AudienceMemberInScope,)
    search_fields = ("recipient__email", "recipient__phone", "recipient__external_id", "recipient__name")
    list_select_related = ("audience", "recipient")
    ordering = ("audience", "pk")
    fields = ("audience", "recipient", "attributes", "created_at")
    readonly_fields = fields

    @admin.display(description="email")
    def email(self, member):
        return member.recipient.email

    @admin.display(description="phone")
    def phone(self, member):
        return member.recipient.phone

    @admin.display(description="external id")
    def external_id(self, member):
        return member.recipient.external_id

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
