"""Render: the pinned template version (or a literal subject and message) becomes each
channel's final text for one recipient, under the channel's rules (templates.services)."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from providers.channels import CHANNELS
from templates.models import Template
from templates.rendering import RenderError
from templates.services import RenderedMessage, check_rendered, template_render

from .addresses import missing_addresses


def messages_render(
    *,
    channels: list[str],
    recipient: dict,
    template: Template | None,
    context: dict,
    subject: str,
    message: str,
    options: dict | None = None,
) -> list[RenderedMessage]:
    """One rendered message per channel, in order; a ValidationError names every problem.
    `options` (the send's push options) go to the channels that take options, over the
    template's: its data merged key by key, the rest replaced."""
    errors: dict[str, list[str]] = {}
    rendered = []
    for channel in channels:
        missing = missing_addresses([channel], recipient)
        if missing:
            for field, problems in missing.items():
                errors.setdefault(f"recipient.{field}", []).extend(problems)
            continue
        try:
            if template is not None:
                values = {
                    "recipient_name": recipient.get("name") or "",
                    "recipient_email": recipient.get("email") or "",
                    "recipient_phone": recipient.get("phone") or "",
                    **context,
                }
                item = template_render(
                    version=template.current_version, channel=channel, locale=recipient.get("locale"), context=values
                )
            else:
                item = RenderedMessage(
                    channel=channel, locale="", subject=subject, body=message, html_body="", filled_defaults=[]
                )
            if options and CHANNELS[channel].option_fields:
                data = {**item.options.get("data", {}), **options.get("data", {})}
                item.options = {**item.options, **options, **({"data": data} if data else {})}
            check_rendered(item)
        except RenderError as exc:
            for field, messages in exc.errors.items():
                errors.setdefault(field, []).extend(f"{channel}: {m}" for m in messages)
            continue
        rendered.append(item)
    if errors:
        raise ValidationError(errors)
    return rendered
