"""The operator console for preferences, suppression and the consent ledger.

Suppressions and consent are written through `preferences.services` (the address hash and
the ledger's method are theirs to set); the ledger and the recipients' own preferences are
shown, never edited here.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import ValidationError
from rest_framework import serializers

from accounts.admin_scoping import AccountScopedAdmin, action_confirmation

from .models import (
    TOGGLE_PREFIXES,
    AccountPreference,
    ConsentMethod,
    ConsentRecord,
    DailyCount,
    RecipientPreference,
    Suppression,
    address_hash,
)
from .serializers import ReminderMinutesField, time_zone_problem
from .services import consent_record, suppression_add, suppression_lift


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shown, never added, edited or deleted here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def toggles(channel: str) -> tuple[str, ...]:
    return tuple(f"{prefix}_{channel}" for prefix in TOGGLE_PREFIXES.values())


ACCOUNT_PREFERENCE_FIELDSETS = (
    (None, {"fields": ("account", "timezone", "updated_at")}),
    ("Email", {"fields": toggles("email")}),
    ("SMS", {"fields": toggles("sms")}),
    ("Timing", {"fields": ("reminder_minutes_before", "follow_up_minutes_after", "daily_agenda_time")}),
    ("Do not disturb", {"fields": ("dnd_enabled", "dnd_start_time", "dnd_end_time")}),
    ("Weekends", {"fields": ("exclude_weekends_reminders", "exclude_weekends_agenda")}),
    ("Method and cap", {"fields": ("preferred_notification_method", "max_reminders_per_day")}),
)


class AccountPreferenceForm(forms.ModelForm):
    """The API's input rules for the fields it checks beyond the model's."""

    class Meta:
        model = AccountPreference
        fields = [name for _, group in ACCOUNT_PREFERENCE_FIELDSETS for name in group["fields"] if name != "updated_at"]

    def clean_timezone(self):
        value = self.cleaned_data["timezone"]
        problem = time_zone_problem(value)
        if problem:
            raise ValidationError(problem)
        return value

    def clean_reminder_minutes_before(self):
        try:
            return ReminderMinutesField().run_validation(self.cleaned_data["reminder_minutes_before"])
        except serializers.ValidationError as exc:
            raise ValidationError(_flatten(exc.detail)) from exc


def _flatten(detail) -> list[str]:
    if isinstance(detail, dict):
        return [f"{key}: {message}" for key, value in detail.items() for message in _flatten(value)]
    if isinstance(detail, list):
        return [message for item in detail for message in _flatten(item)]
    return [str(detail)]


@admin.register(AccountPreference)
class AccountPreferenceAdmin(AccountScopedAdmin, admin.ModelAdmin):
    form = AccountPreferenceForm
    list_display = (
        "account",
        "timezone",
        "preferred_notification_method",
        "dnd_enabled",
        "dnd_start_time",
        "dnd_end_time",
        "max_reminders_per_day",
        "updated_at",
    )
    list_filter = ("preferred_notification_method", "dnd_enabled")
    search_fields = ("account__username", "account__email")
    list_select_related = ("account",)
    readonly_fields = ("updated_at",)
    fieldsets = ACCOUNT_PREFERENCE_FIELDSETS

    def get_readonly_fields(self, request, obj=None):
        # The row belongs to its account for good; a change of owner would be a new row.
        return ("account", *self.readonly_fields) if obj else self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        # The row is made again with the defaults on the next read: a delete would be a
        # silent reset.
        return False


@admin.register(RecipientPreference)
class RecipientPreferenceAdmin(AccountScopedAdmin, ReadOnlyAdmin):
    # A recipient's own say is written through the recipients API, which normalises the
    # opt-outs; here it is only looked up.
    list_display = (
        "recipient",
        "account",
        "preferred_channel",
        "quiet_hours_enabled",
        "quiet_hours_start",
        "quiet_hours_end",
        "opt_outs",
        "updated_at",
    )
    list_filter = ("quiet_hours_enabled", "preferred_channel")
    search_fields = ("recipient__email", "recipient__phone", "recipient__external_id")
    list_select_related = ("recipient", "account")


class SuppressionAddForm(forms.ModelForm):
    address = forms.CharField(max_length=254)

    class Meta:
        model = Suppression
        fields = ["account", "channel", "address", "reason", "detail"]

    def clean_channel(self):
        return self.cleaned_data["channel"].strip().lower()

    def clean(self):
        cleaned = super().clean()
        account, channel, address = (cleaned.get(name) for name in ("account", "channel", "address"))
        if account and channel and address:
            existing = Suppression.objects.filter(
                account=account, channel=channel, address_hash=address_hash(channel, address)
            ).first()
            if existing is not None:
                self.add_error("address", f"Already suppressed on {channel} ({existing.get_reason_display()}).")
        return cleaned


@admin.register(Suppression)
class SuppressionAdmin(AccountScopedAdmin, admin.ModelAdmin):
    add_form = SuppressionAddForm
    list_display = ("channel", "address_shown", "reason", "account", "created_at")
    list_filter = ("channel", "reason")
    search_fields = ("address",)
    list_select_related = ("account",)
    date_hierarchy = "created_at"
    actions = ["lift_suppressions"]

    @admin.display(description="address", ordering="address")
    def address_shown(self, suppression):
        return suppression.address or "erased"

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.add_form.Meta.fields
        return ("account", "channel", "address_shown", "address_hash", "reason", "detail", "created_at")

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        suppression_add(
            account=data["account"],
            channel=data["channel"],
            address=data["address"],
            reason=data["reason"],
            detail=data["detail"],
        )
        saved = Suppression.objects.get(
            account=data["account"],
            channel=data["channel"],
            address_hash=address_hash(data["channel"], data["address"]),
        )
        obj.pk, obj.address_hash, obj.created_at = saved.pk, saved.address_hash, saved.created_at

    def has_change_permission(self, request, obj=None):
        # A suppression is added or lifted, never edited: its key is the address's hash.
        return False

    def has_delete_permission(self, request, obj=None):
        # Lifting goes through the service (the action below), not a bare delete.
        return False

    def has_lift_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.{get_permission_codename('delete', self.opts)}")

    @admin.action(description="Lift suppression", permissions=["lift"])
    def lift_suppressions(self, request, queryset):
        rows = list(queryset.select_related("account"))
        page = action_confirmation(
            self,
            request,
            rows,
            action="lift_suppressions",
            heading="Lift suppressions",
            question="Are you sure you want to lift these suppressions? Messages to these addresses will go out again.",
            confirm="Yes, lift them",
            describe=lambda r: (
                f"{r.channel} {r.address or 'erased (cannot be lifted)'}: {r.get_reason_display()}, "
                f"since {r.created_at} ({r.account})"
            ),
        )
        if page is not None:
            return page
        lifted, erased = 0, []
        for suppression in rows:
            # The service finds a suppression by its address; one whose address was erased
            # is kept on purpose, so that the erased person stays unreachable.
            if not suppression.address:
                erased.append(suppression)
                continue
            lifted += suppression_lift(
                account=suppression.account, channel=suppression.channel, address=suppression.address
            )
        if lifted:
            plural = "" if lifted == 1 else "s"
            self.message_user(request, f"Lifted {lifted} suppression{plural}.", messages.SUCCESS)
        for suppression in erased:
            self.message_user(
                request,
                f"{suppression}: not lifted, its address was erased.",
                messages.WARNING,
            )
        return None


class ConsentAddForm(forms.ModelForm):
    """An operator records a grant or a withdrawal they were told of."""

    granted = forms.TypedChoiceField(
        label="Consent",
        choices=((True, "Granted"), (False, "Withdrawn")),
        coerce=lambda value: value in (True, "True"),
        widget=forms.RadioSelect,
    )
    detail = forms.CharField(
        max_length=400, required=False, help_text="How and when the recipient said so, e.g. 'by phone, 3 March'."
    )

    class Meta:
        model = ConsentRecord
        fields = ["account", "recipient", "channel", "category", "granted", "detail"]
        help_texts = {"channel": '"*" for every channel.', "category": '"*" for every category.'}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["recipient"].required = True

    def clean(self):
        cleaned = super().clean()
        account, recipient = cleaned.get("account"), cleaned.get("recipient")
        if account and recipient and recipient.account_id != account.pk:
            self.add_error("recipient", "This recipient belongs to another account.")
        return cleaned


@admin.register(ConsentRecord)
class ConsentRecordAdmin(AccountScopedAdmin, admin.ModelAdmin):
    add_form = ConsentAddForm
    list_display = ("recorded_at", "recipient", "channel", "category", "consent", "method", "detail", "account")
    list_filter = ("granted", "method", "channel", "category")
    search_fields = ("recipient__email", "recipient__phone", "recipient__external_id", "detail")
    list_select_related = ("recipient", "account")
    date_hierarchy = "recorded_at"
    raw_id_fields = ("recipient",)

    @admin.display(description="consent", boolean=False, ordering="granted")
    def consent(self, record):
        return "granted" if record.granted else "withdrawn"

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.add_form.Meta.fields
        return (
            "account",
            "recipient",
            "address_hash",
            "channel",
            "category",
            "consent",
            "method",
            "detail",
            "recorded_at",
        )

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        operator = f"recorded by {request.user.get_username()}"
        record = consent_record(
            account=data["account"],
            recipient=data["recipient"],
            channel=data["channel"],
            category=data["category"],
            granted=data["granted"],
            method=ConsentMethod.ADMIN,
            detail=f"{operator}: {data['detail']}" if data["detail"] else operator,
        )
        obj.pk, obj.method, obj.detail, obj.recorded_at = record.pk, record.method, record.detail, record.recorded_at

    def has_change_permission(self, request, obj=None):
        # The ledger is appended to, never changed: a correction is a new record.
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DailyCount)
class DailyCountAdmin(AccountScopedAdmin, ReadOnlyAdmin):
    account_path = "recipient__account"
    list_display = ("recipient", "day", "count")
    list_filter = ("day",)
    search_fields = ("recipient__email", "recipient__phone", "recipient__external_id")
    list_select_related = ("recipient",)
    date_hierarchy = "day"
