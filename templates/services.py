"""Writes for templates: every change of content makes a new immutable version."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from providers.channels import CHANNELS, ChannelSpec
from providers.push_payload import payload_size

from .models import Channel, Template, TemplateContent, TemplateVersion
from .rendering import RenderError, RenderUndefined, check_syntax, fill_placeholders, render_string, sms_info
from .selectors import templates_forget

CONTENT_FIELDS = ("subject", "body", "html_body")
SUBJECT_MAX_CHARS = 500  # Delivery.subject's column
VERSIONED_FIELDS = ("required_placeholders", "defaults", "sample_context", "contents")
META_FIELDS = ("key", "name", "template_type", "category", "description", "is_active")


@dataclass
class RenderedMessage:
    channel: str
    locale: str
    subject: str
    body: str
    html_body: str
    filled_defaults: list[str]
    encoding: str = ""
    segments: int = 0
    options: dict = dataclasses.field(default_factory=dict)  # the channel's structured content, rendered


def normalize_locale(locale: str | None) -> str:
    return (locale or "").strip().replace("_", "-").lower()


def locale_candidates(locale: str | None) -> list[str]:
    """es-MX -> ["es-mx", "es", ""]: the order content is looked up in."""
    locale = normalize_locale(locale)
    candidates = []
    while locale:
        candidates.append(locale)
        locale = locale.rpartition("-")[0]
    candidates.append("")
    return candidates


# Options whose values are texts, rendered like the content (data's values are too).
OPTION_TEXTS = ("image_url", "action_url")
OPTION_OBJECTS = ("android", "apns", "webpush")


def options_clean(spec: ChannelSpec, options) -> tuple[dict, list[str]]:
    """A channel's structured content, checked: (the cleaned options, the problems)."""
    if options in (None, {}):
        return {}, []
    if not isinstance(options, dict):
        return {}, ["options: must be an object"]
    if not spec.option_fields:
        return {}, [f"options: the {spec.name} channel takes none"]
    problems = []
    unknown = sorted(set(options) - set(spec.option_fields))
    if unknown:
        problems.append(f"options: unknown {', '.join(unknown)}; {spec.name} takes {', '.join(spec.option_fields)}")
    cleaned = {}
    for name in OPTION_TEXTS:
        if name in options:
            if not isinstance(options[name], str):
                problems.append(f"options.{name}: must be a text")
            elif options[name]:
                cleaned[name] = options[name]
    if "data" in options:
        data = options["data"]
        scalar = (str, int, float, bool)
        if not isinstance(data, dict) or not all(isinstance(v, scalar) for v in data.values()):
            problems.append("options.data: must be an object of texts (FCM data values are strings)")
        elif data:
            cleaned["data"] = {str(k): v if isinstance(v, str) else json_text(v) for k, v in data.items()}
    if "silent" in options:
        if not isinstance(options["silent"], bool):
            problems.append("options.silent: must be true or false")
        elif options["silent"]:
            cleaned["silent"] = True
    for name in OPTION_OBJECTS:
        if name in options:
            if not isinstance(options[name], dict):
                problems.append(f"options.{name}: must be an object")
            elif options[name]:
                cleaned[name] = options[name]
    if cleaned.get("silent") and not cleaned.get("data"):
        problems.append("options.silent: a silent push carries data; give options.data")
    for name, source in option_texts(cleaned).items():
        problem = check_syntax(source)
        if problem:
            problems.append(f"options.{name}: template syntax error at {problem}")
    return cleaned, problems


def json_text(value) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def option_texts(options: dict) -> dict[str, str]:
    """The options' template texts by name: image_url, action_url and data.<key>."""
    texts = {name: options[name] for name in OPTION_TEXTS if name in options}
    texts.update({f"data.{key}": value for key, value in (options.get("data") or {}).items()})
    return texts


def options_render(options: dict, values: dict) -> dict:
    """The options with their texts rendered (the content's values); the rest as given."""
    if not options:
        return {}
    rendered = dict(options)
    for name in OPTION_TEXTS:
        if name in options:
            rendered[name] = render_string(options[name], values).strip()
    if options.get("data"):
        rendered["data"] = {key: render_string(value, values) for key, value in options["data"].items()}
    return rendered


def _validate_contents(contents: list[dict]) -> list[dict]:
    if not contents:
        raise ValidationError({"contents": ["At least one channel's content is required."]})
    errors: dict[str, list[str]] = {}
    seen = set()
    cleaned = []
    for index, item in enumerate(contents):
        channel = item.get("channel")
        locale = normalize_locale(item.get("locale"))
        prefix = f"contents[{index}]"
        if channel not in Channel.values:
            errors.setdefault(prefix, []).append(f"unknown channel {channel!r}")
            continue
        if (channel, locale) in seen:
            errors.setdefault(prefix, []).append(f"duplicate content for {channel}/{locale or 'default'}")
        seen.add((channel, locale))
        spec = CHANNELS[channel]
        for field in spec.required_fields:
            if not (item.get(field) or "").strip():
                errors.setdefault(prefix, []).append(
                    "body: may not be blank" if field == "body" else f"{field}: an {channel} needs a {field}"
                )
        body = item.get("body") or ""
        if spec.max_body_chars is not None and len(body) > spec.max_body_chars:
            errors.setdefault(prefix, []).append(
                f"body: an {spec.label} body may not exceed {spec.max_body_chars} characters"
            )
        for field in CONTENT_FIELDS:
            source = item.get(field) or ""
            if len(source) > settings.BEACON_MAX_BODY_CHARS:
                errors.setdefault(prefix, []).append(
                    f"{field}: longer than {settings.BEACON_MAX_BODY_CHARS} characters"
                )
                continue
            problem = check_syntax(source)
            if problem:
                errors.setdefault(prefix, []).append(f"{field}: template syntax error at {problem}")
        options, problems = options_clean(spec, item.get("options"))
        if problems:
            errors.setdefault(prefix, []).extend(problems)
        cleaned.append(
            {
                "channel": channel,
                "locale": locale,
                **{field: (item.get(field) or "") if field in spec.content_fields else "" for field in CONTENT_FIELDS},
                "options": options,
            }
        )
    if errors:
        raise ValidationError(errors)
    return cleaned


def _validate_placeholders(required: list, defaults: dict, sample_context: dict) -> None:
    errors = {}
    if not isinstance(required, list) or not all(isinstance(p, str) and p.isidentifier() for p in required):
        errors["required_placeholders"] = ["Must be a list of placeholder names."]
    if not isinstance(defaults, dict) or not all(_is_default(value) for value in defaults.values()):
        # A fallback is a text, or texts by locale: {"": "your host", "es": "tu anfitrión"}.
        errors["defaults"] = ["Must be an object of placeholder -> fallback value."]
    if not isinstance(sample_context, dict):
        errors["sample_context"] = ["Must be an object."]
    if errors:
        raise ValidationError(errors)


def _is_default(value) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def template_content_validate(*, required_placeholders, defaults, sample_context, contents) -> list[dict]:
    """Raise the ValidationError a new version with this content would raise; writes
    nothing. Returns the cleaned contents."""
    _validate_placeholders(required_placeholders, defaults, sample_context)
    cleaned = _validate_contents(contents)
    _validate_renders(cleaned, defaults=defaults, sample_context=sample_context)
    return cleaned


def _validate_renders(cleaned: list[dict], *, defaults: dict, sample_context: dict) -> None:
    """Render each content against the sample context, under the limits every send has:
    what the sandbox refuses (a huge range or string, a recursive macro, a render over its
    time budget) and what cannot render with the sample (a type error) is refused now,
    naming the content. A value the sample lacks is left to the send that has it."""
    errors: dict[str, list[str]] = {}
    for index, item in enumerate(cleaned):
        sources = [item[field] for field in CONTENT_FIELDS] + list(option_texts(item["options"]).values())
        values, _ = fill_placeholders(
            sources, sample_context, required=[], defaults=defaults, locales=locale_candidates(item["locale"])
        )
        try:
            for field in CONTENT_FIELDS:
                render_string(item[field], values, html=field == "html_body")
            options_render(item["options"], values)
        except RenderUndefined:
            continue  # the sample lacks a value: the send that has it decides
        except RenderError as exc:
            problems = [message for messages in exc.errors.values() for message in messages]
            errors.setdefault(f"contents[{index}]", []).extend(f"{field}: {problem}" for problem in problems)
    if errors:
        raise ValidationError(errors)


def _templates_changed() -> None:
    templates_forget()
    transaction.on_commit(templates_forget)


def _create_version(
    *, template: Template, required_placeholders, defaults, sample_context, contents, created_by, note=""
) -> TemplateVersion:
    _templates_changed()
    cleaned = template_content_validate(
        required_placeholders=required_placeholders, defaults=defaults, sample_context=sample_context, contents=contents
    )
    # Lock the template row so two concurrent edits get consecutive numbers.
    Template.objects.select_for_update().filter(pk=template.pk).first()
    number = (template.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = TemplateVersion.objects.create(
        template=template,
        number=number,
        required_placeholders=list(required_placeholders),
        defaults=dict(defaults),
        sample_context=dict(sample_context),
        created_by=created_by,
        note=note,
    )
    TemplateContent.objects.bulk_create([TemplateContent(version=version, **item) for item in cleaned])
    template.current_version = version
    template.save(update_fields=["current_version", "updated_at"])
    return version


@transaction.atomic
def template_create(
    *,
    account,
    key: str,
    name: str,
    contents: list[dict],
    template_type: str = "custom",
    category: str = "transactional",
    description: str = "",
    is_active: bool = True,
    required_placeholders: list | None = None,
    defaults: dict | None = None,
    sample_context: dict | None = None,
    created_by=None,
) -> Template:
    """Create a template and its first version."""
    try:
        with transaction.atomic():
            template = Template.objects.create(
                account=account,
                key=key,
                name=name,
                template_type=template_type,
                category=category,
                description=description,
                is_active=is_active,
            )
    except IntegrityError:
        raise ValidationError({"key": [f"A template with key {key!r} already exists."]}) from None
    _create_version(
        template=template,
        required_placeholders=required_placeholders or [],
        defaults=defaults or {},
        sample_context=sample_context or {},
        contents=contents,
        created_by=created_by,
        note="created",
    )
    return template


@transaction.atomic
def template_update(*, template: Template, updated_by=None, **changes) -> Template:
    _templates_changed()
    """Change a template. Descriptive fields change in place; any content change makes a
    new version carrying the unchanged parts of the current one."""
    unknown = set(changes) - set(META_FIELDS) - set(VERSIONED_FIELDS)
    if unknown:
        raise ValidationError({field: ["Unknown field."] for field in sorted(unknown)})
    meta = {field: changes[field] for field in META_FIELDS if field in changes}
    if meta:
        for field, value in meta.items():
            setattr(template, field, value)
        try:
            with transaction.atomic():
                template.save(update_fields=[*meta, "updated_at"])
        except IntegrityError:
            raise ValidationError({"key": [f"A template with key {template.key!r} already exists."]}) from None
    if any(field in changes for field in VERSIONED_FIELDS):
        current = template.current_version
        versioned = {
            "required_placeholders": changes.get("required_placeholders", current.required_placeholders),
            "defaults": changes.get("defaults", current.defaults),
            "sample_context": changes.get("sample_context", current.sample_context),
            "contents": changes.get("contents") or [content_as_dict(c) for c in current.contents.all()],
        }
        # A full replacement (PUT, the admin form) that repeats the live content is not an edit.
        if not _version_matches(current, **versioned):
            _create_version(template=template, created_by=updated_by, note="edited", **versioned)
    return template


def _version_matches(version: TemplateVersion, *, required_placeholders, defaults, sample_context, contents) -> bool:
    """True when the given (valid) content is exactly what the version holds."""
    _validate_placeholders(required_placeholders, defaults, sample_context)
    wanted = sorted(_validate_contents(contents), key=lambda c: (c["channel"], c["locale"]))
    have = sorted((content_as_dict(c) for c in version.contents.all()), key=lambda c: (c["channel"], c["locale"]))
    return (
        wanted == have
        and version.required_placeholders == list(required_placeholders)
        and version.defaults == dict(defaults)
        and version.sample_context == dict(sample_context)
    )


def content_as_dict(content: TemplateContent) -> dict:
    return {
        "channel": content.channel,
        "locale": content.locale,
        **{f: getattr(content, f) for f in CONTENT_FIELDS},
        "options": content.options or {},
    }


@transaction.atomic
def template_restore(*, template: Template, number: int, restored_by=None) -> TemplateVersion:
    """Make an older version live again, as a new version (history is never rewritten)."""
    try:
        old = template.versions.get(number=number)
    except TemplateVersion.DoesNotExist:
        raise ValidationError({"version": [f"Template has no version {number}."]}) from None
    return _create_version(
        template=template,
        required_placeholders=old.required_placeholders,
        defaults=old.defaults,
        sample_context=old.sample_context,
        contents=[content_as_dict(c) for c in old.contents.all()],
        created_by=restored_by,
        note=f"restored from v{number}",
    )


def template_archive(*, template: Template) -> None:
    """Templates are archived rather than deleted: sent notifications pin their versions."""
    _templates_changed()
    Template.objects.filter(pk=template.pk).update(is_active=False)


@lru_cache(maxsize=1024)
def version_contents(version_id) -> tuple[TemplateContent, ...]:
    """A version's contents. Versions never change once written, so every send of a
    template reads them from the database once per process."""
    return tuple(TemplateContent.objects.filter(version_id=version_id))


def content_select(*, version: TemplateVersion, channel: str, locale: str | None) -> TemplateContent | None:
    """The content for a channel in the closest locale: es-MX, then es, then the default."""
    by_locale = {c.locale: c for c in version_contents(version.pk) if c.channel == channel}
    for candidate in locale_candidates(locale):
        if candidate in by_locale:
            return by_locale[candidate]
    return None


def template_render(*, version: TemplateVersion, channel: str, locale: str | None, context: dict) -> RenderedMessage:
    """Render a version for a channel and locale; raises RenderError naming what is wrong."""
    content = content_select(version=version, channel=channel, locale=locale)
    if content is None:
        raise RenderError({"channel": [f"Template {version.template.key!r} has no {channel} content."]})
    sources = [content.subject, content.body, content.html_body, *option_texts(content.options or {}).values()]
    # Fallbacks speak the language the content is written in.
    values, filled = fill_placeholders(
        sources,
        context,
        required=version.required_placeholders,
        defaults=version.defaults,
        locales=locale_candidates(content.locale),
    )
    subject = " ".join(render_string(content.subject, values).split())
    body = render_string(content.body, values)
    html_body = render_string(content.html_body, values, html=True)
    rendered = RenderedMessage(
        channel=channel,
        locale=content.locale,
        subject=subject,
        body=body,
        html_body=html_body,
        filled_defaults=filled,
        options=options_render(content.options or {}, values),
    )
    check_rendered(rendered)
    return rendered


def check_rendered(rendered: RenderedMessage) -> None:
    """Channel rules on the final text; fills in SMS encoding and segments."""
    limit = settings.BEACON_MAX_BODY_CHARS
    for field in CONTENT_FIELDS:
        if len(getattr(rendered, field)) > limit:
            raise RenderError({field: [f"Rendered {field} is longer than {limit} characters."]})
    spec = CHANNELS[rendered.channel]
    if spec.max_body_chars is not None:
        if not rendered.body.strip():
            raise RenderError({"message": [f"The {spec.label} body is empty."]})
        if len(rendered.body) > spec.max_body_chars:
            raise RenderError(
                {
                    "message": [
                        f"The {spec.label} body is {len(rendered.body)} characters; the limit is {spec.max_body_chars}."
                    ]
                }
            )
    if spec.max_payload_bytes is not None:
        image = rendered.options.get("image_url", "")
        if image and not image.startswith(("https://", "http://")):
            raise RenderError({"options": ["options.image_url: must render to an http(s) URL."]})
        size = payload_size(title=rendered.subject, body=rendered.body, options=rendered.options)
        if size > spec.max_payload_bytes:
            raise RenderError(
                {"message": [f"The {spec.label} payload is {size} bytes; the limit is {spec.max_payload_bytes}."]}
            )
    if spec.counts_segments:
        info = sms_info(rendered.body)
        rendered.encoding, rendered.segments = info.encoding, info.segments
    if "subject" in spec.required_fields:
        if not rendered.subject:
            raise RenderError({"subject": [f"An {spec.name} needs a subject."]})
        if len(rendered.subject) > SUBJECT_MAX_CHARS:
            raise RenderError({"subject": [f"The subject is longer than {SUBJECT_MAX_CHARS} characters."]})
        if "\r" in rendered.subject or "\n" in rendered.subject:
            raise RenderError({"subject": ["The subject may not contain line breaks."]})


@transaction.atomic
def system_templates_load(*, definitions: list[dict]) -> dict[str, int]:
    """Create or update the shared default templates; unchanged ones are left alone."""
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    for definition in definitions:
        definition = dict(definition)
        key = definition.pop("key")
        template = Template.objects.filter(account__isnull=True, key=key).select_related("current_version").first()
        if template is None:
            template_create(account=None, key=key, **definition)
            counts["created"] += 1
            continue
        same = _version_matches(
            template.current_version,
            required_placeholders=definition.get("required_placeholders", []),
            defaults=definition.get("defaults", {}),
            sample_context=definition.get("sample_context", {}),
            contents=definition["contents"],
        ) and all(getattr(template, f) == definition[f] for f in META_FIELDS if f in definition)
        if same:
            counts["unchanged"] += 1
            continue
        template_update(template=template, **definition)
        counts["updated"] += 1
    return counts
