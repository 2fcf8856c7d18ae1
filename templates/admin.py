from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join

from .models import Template, TemplateContent, TemplateVersion
from .rendering import RenderError
from .services import content_as_dict, template_content_validate, template_create, template_render, template_update


class TemplateAdminForm(forms.ModelForm):
    """Edits the live version's content as JSON; saving makes a new version."""

    required_placeholders = forms.JSONField(required=False, initial=list)
    defaults = forms.JSONField(required=False, initial=dict)
    sample_context = forms.JSONField(required=False, initial=dict)
    contents = forms.JSONField(
        help_text='A list of {"channel", "locale", "subject", "body", "html_body", "options"} (options: push only).',
        initial=list,
    )

    class Meta:
        model = Template
        fields = ["account", "key", "name", "template_type", "category", "description", "is_active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        version = self.instance.current_version if self.instance.pk else None
        if version is not None:
            self.initial.update(
                required_placeholders=version.required_placeholders,
                defaults=version.defaults,
                sample_context=version.sample_context,
                contents=[content_as_dict(c) for c in version.contents.all()],
            )

    def clean_contents(self):
        contents = self.cleaned_data["contents"]
        if not isinstance(contents, list) or not all(isinstance(c, dict) for c in contents):
            raise ValidationError("Must be a list of objects.")
        return contents

    def clean(self):
        # The services refuse bad content in save_model, too late to show on the form: ask
        # them first, so that the operator sees the error instead of a server error.
        cleaned = super().clean()
        if "contents" not in cleaned:
            return cleaned
        version = self.instance.current_version if self.instance.pk else None

        def current(name, empty):
            value = cleaned.get(name)
            if value is None:
                return getattr(version, name) if version is not None else empty
            return value

        try:
            template_content_validate(
                required_placeholders=current("required_placeholders", []),
                defaults=current("defaults", {}),
                sample_context=current("sample_context", {}),
                contents=cleaned["contents"],
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                for message in messages:
                    if field in self.fields:
                        self.add_error(field, message)
                    else:
                        self.add_error("contents", f"{field}: {message}")
        return cleaned


class ImmutableAdmin(admin.ModelAdmin):
    """Shown, never added, edited or deleted: such rows are written by the services only."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class TemplateVersionInline(admin.TabularInline):
    model = TemplateVersion
    fields = ("number", "note", "created_by", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("-number",)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    form = TemplateAdminForm
    list_display = ("key", "name", "account", "template_type", "category", "is_active", "current_version", "updated_at")
    list_filter = ("template_type", "category", "is_active")
    search_fields = ("key", "name", "account__username")
    readonly_fields = ("current_version", "preview", "created_at", "updated_at")
    inlines = [TemplateVersionInline]

    def save_model(self, request, obj, form, change):
        versioned = {
            f: form.cleaned_data[f] for f in ("required_placeholders", "defaults", "sample_context", "contents")
        }
        versioned = {k: v for k, v in versioned.items() if v is not None}
        meta = {
            f: form.cleaned_data[f] for f in ("key", "name", "template_type", "category", "description", "is_active")
        }
        if change:
            changed = {k: v for k, v in versioned.items() if k in form.changed_data}
            template_update(template=obj, updated_by=request.user, **meta, **changed)
        else:
            is_active = meta.pop("is_active")
            created = template_create(
                account=form.cleaned_data["account"], created_by=request.user, **meta, **versioned
            )
            if not is_active:
                template_update(template=created, is_active=False)
            obj.pk = created.pk

    def save_related(self, request, form, formsets, change):
        # Versions are written by the services only. The change message still reads what
        # the inline formsets saved, so record that it was nothing.
        for formset in formsets:
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    @admin.display(description="Rendered preview (sample data)")
    def preview(self, obj):
        version = obj.current_version
        if version is None:
            return "-"
        rows = []
        for content in version.contents.all():
            try:
                rendered = template_render(
                    version=version, channel=content.channel, locale=content.locale, context=version.sample_context
                )
            except RenderError as exc:
                rows.append((str(content), "", str(exc), ""))
                continue
            extra = f"{rendered.encoding}, {rendered.segments} segment(s)" if rendered.encoding else ""
            rows.append((str(content), rendered.subject, rendered.body, extra))
        # format_html_join escapes every value: the rendered text is shown, never run.
        return format_html(
            "<table><tr><th>content</th><th>subject</th><th>body</th><th>sms</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td><pre style='white-space:pre-wrap'>{}</pre></td><td>{}</td></tr>",
                rows,
            ),
        )


class TemplateContentInline(admin.StackedInline):
    model = TemplateContent
    fields = ("channel", "locale", "subject", "body", "html_body", "options")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(TemplateVersion)
class TemplateVersionAdmin(ImmutableAdmin):
    list_display = ("template", "number", "note", "created_by", "created_at")
    list_select_related = ("template", "created_by")
    list_filter = ("template__template_type",)
    search_fields = ("template__key", "note")
    readonly_fields = (
        "template",
        "number",
        "note",
        "required_placeholders",
        "defaults",
        "sample_context",
        "created_by",
        "created_at",
    )
    inlines = [TemplateContentInline]


@admin.register(TemplateContent)
class TemplateContentAdmin(ImmutableAdmin):
    list_display = ("version", "channel", "locale", "subject")
    list_select_related = ("version__template",)
    list_filter = ("channel", "locale")
    search_fields = ("version__template__key", "subject", "body")
    readonly_fields = ("version", "channel", "locale", "subject", "body", "html_body", "options")
