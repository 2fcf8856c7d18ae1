"""The operator console's provider records, scoped per account like every other row.

Credentials are never on a page: the form has one password input per credential of the
kind, empty, where a value typed replaces the stored one and a blank keeps it; the stored
ones are shown masked ("••••" and at most the last 4 characters). Saving goes through the
services, which validate it as the API does."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import ValidationError

from accounts.admin_scoping import AccountScopedAdmin, action_confirmation

from .health import provider_key, providers_health
from .kinds import KIND_FIELDS
from .models import ProviderConfig
from .services import (
    credentials_masked,
    provider_config_check,
    provider_config_create,
    provider_config_delete,
    provider_config_set_enabled,
    provider_config_update,
)

CREDENTIAL_PREFIX = "credential_"
# The record's own fields on the form (credentials apart).
FORM_FIELDS = [
    "name",
    "channel",
    "kind",
    "priority",
    "enabled",
    "settings",
    "rate_limit_per_second",
    "burst",
    "cost_per_message",
    "currency",
]


def credential_names(kind: str | None) -> tuple[str, ...]:
    """The credentials a kind takes; with no kind known yet, those of every kind."""
    if kind in KIND_FIELDS:
        return KIND_FIELDS[kind].credentials
    return tuple(dict.fromkeys(name for fields in KIND_FIELDS.values() for name in fields.credentials))


def _kinds_taking(name: str) -> str:
    return ", ".join(kind for kind, fields in sorted(KIND_FIELDS.items()) if name in fields.credentials)


class ProviderConfigForm(forms.ModelForm):
    kind = forms.ChoiceField(choices=[(kind, kind) for kind in sorted(KIND_FIELDS)])
    settings = forms.JSONField(
        required=False,
        initial=dict,
        help_text='The kind\'s settings as a JSON object, e.g. {"from_number": "+15005550006"}.',
    )

    class Meta:
        model = ProviderConfig
        fields = ["account", *FORM_FIELDS]

    # Set by the admin: the account a new record is for is the form's; the kind whose
    # credential inputs to show.
    credential_kind: str | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in credential_names(self.credential_kind):
            label = name.replace("_", " ")
            help_text = "Leave blank to keep the stored value."
            if self.credential_kind not in KIND_FIELDS:
                help_text += f" For: {_kinds_taking(name)}."
            self.fields[CREDENTIAL_PREFIX + name] = forms.CharField(
                label=label,
                required=False,
                strip=False,
                widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
                help_text=help_text,
            )

    def given_credentials(self) -> dict:
        """The credentials typed in (a blank one keeps the stored value)."""
        return {
            name.removeprefix(CREDENTIAL_PREFIX): value
            for name, value in self.cleaned_data.items()
            if name.startswith(CREDENTIAL_PREFIX) and value
        }

    def record_fields(self) -> dict:
        if self.instance.pk is None:
            fields = {name: self.cleaned_data.get(name) for name in FORM_FIELDS}
        else:
            fields = {name: self.cleaned_data.get(name) for name in FORM_FIELDS if name in self.changed_data}
        fields = {name: value for name, value in fields.items() if name in self.fields}
        if "settings" in fields and fields["settings"] is None:
            fields["settings"] = {}
        return fields

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        account = self.instance.account if self.instance.pk else cleaned.get("account")
        if account is None:
            return cleaned
        try:
            provider_config_check(
                account,
                instance=self.instance if self.instance.pk else None,
                credentials=self.given_credentials(),
                **self.record_fields(),
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                target = field.split(".", 1)[0]
                if target == "credentials" or target not in self.fields:
                    target = None
                for error in errors:
                    self.add_error(target, f"{field}: {error}" if target is None else error)
        return cleaned

    def _post_clean(self):
        # The services validate (above) and save; the model's own checks would see the
        # credentials column, which this form never touches.
        pass


def _health_of(config: ProviderConfig) -> dict:
    key = provider_key(config.pk, config.kind)
    return providers_health([key])[key]


def _may_change(modeladmin, request) -> bool:
    opts = modeladmin.opts
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")


@admin.register(ProviderConfig)
class ProviderConfigAdmin(AccountScopedAdmin, admin.ModelAdmin):
    form = ProviderConfigForm
    list_display = ("name", "channel", "kind", "priority", "enabled", "health")
    list_filter = ("channel", "kind", "enabled")
    search_fields = ("name", "kind", "account__username")
    list_select_related = ("account",)
    ordering = ("account", "channel", "priority", "name")
    readonly_fields = ("stored_credentials", "health_report", "created_at", "updated_at")
    actions = ["enable", "disable"]

    def _kind_for(self, request, obj) -> str | None:
        if request.method == "POST" and request.POST.get("kind"):
            return request.POST["kind"]
        if obj is not None:
            return obj.kind
        return request.GET.get("kind") or None

    def get_form(self, request, obj=None, change=False, **kwargs):
        kind = self._kind_for(request, obj)
        kwargs["fields"] = None  # the form declares its own; credential inputs are added per kind
        base = super().get_form(request, obj, change=change, **kwargs)
        return type(base.__name__, (base,), {"credential_kind": kind})

    def get_fields(self, request, obj=None):
        kind = self._kind_for(request, obj)
        credentials = [CREDENTIAL_PREFIX + name for name in credential_names(kind)]
        head = ["account"] if obj is None else ["account", "stored_credentials"]
        tail = [] if obj is None else ["health_report", "created_at", "updated_at"]
        return [*head, *FORM_FIELDS, *credentials, *tail]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("account", *self.readonly_fields)

    @admin.display(description="stored credentials")
    def stored_credentials(self, config):
        masked = credentials_masked(config)
        if not masked:
            return "none"
        return ", ".join(f"{name}: {value}" for name, value in sorted(masked.items()))

    @admin.display(description="health")
    def health(self, config):
        return _health_of(config)["status"]

    @admin.display(description="health")
    def health_report(self, config):
        report = _health_of(config)
        if "breaker" not in report:
            return f"{report['status']}: {report.get('problem', '')}"
        rate = "-" if report["success_rate"] is None else f"{report['success_rate']:.1%}"
        latency = "-" if report["p95_latency_ms"] is None else f"{report['p95_latency_ms']} ms"
        parts = [
            f"{report['status']} (breaker {report['breaker'].replace('_', '-')})",
            f"success rate {rate} and p95 latency {latency} over the last {report['window_seconds'] // 60} minutes "
            f"({report['attempts']} attempts, {report['failures']} failed)",
        ]
        if report["open_until"]:
            parts.append(f"skipped until {report['open_until']}")
        if report["paused_until"]:
            parts.append(f"paused until {report['paused_until']}")
        if report["last_error"]:
            parts.append(f"last error at {report['last_error_at']}: {report['last_error']}")
        return "; ".join(parts)

    def save_model(self, request, obj, form, change):
        fields = form.record_fields()
        credentials = form.given_credentials()
        if change:
            current = ProviderConfig.objects.get(pk=obj.pk)
            saved = provider_config_update(current, credentials=credentials, **fields)
        else:
            saved = provider_config_create(form.cleaned_data["account"], credentials=credentials, **fields)
        # The admin goes on with `obj` (its log entry, the redirect): make it the saved row.
        for field in ProviderConfig._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))
        obj._state.adding = False
        obj._state.db = saved._state.db

    def delete_model(self, request, obj):
        provider_config_delete(obj)

    def has_enable_permission(self, request):
        return _may_change(self, request)

    def has_disable_permission(self, request):
        return _may_change(self, request)

    def _set_enabled(self, request, queryset, *, enabled: bool):
        verb = "enable" if enabled else "disable"
        chosen = list(queryset)
        page = action_confirmation(
            self,
            request,
            chosen,
            action=verb,
            heading=f"{verb.capitalize()} providers",
            question=f"Are you sure you want to {verb} these providers? "
            + (
                "An enabled provider is tried in its channel's priority order."
                if enabled
                else "A disabled provider is skipped until enabled again."
            ),
            confirm=f"Yes, {verb} them",
            describe=lambda c: (
                f"{c.name}: {c.kind} for {c.get_channel_display()}, priority {c.priority}, "
                f"{'enabled' if c.enabled else 'disabled'}, of {c.account}"
            ),
        )
        if page is not None:
            return page
        for config in chosen:
            provider_config_set_enabled(config, enabled)
        plural = "" if len(chosen) == 1 else "s"
        self.message_user(request, f"{verb.capitalize()}d {len(chosen)} provider{plural}.", messages.SUCCESS)
        return None

    @admin.action(description="Enable", permissions=["enable"])
    def enable(self, request, queryset):
        return self._set_enabled(request, queryset, enabled=True)

    @admin.action(description="Disable", permissions=["disable"])
    def disable(self, request, queryset):
        return self._set_enabled(request, queryset, enabled=False)
