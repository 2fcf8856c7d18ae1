"""Sandboxed Jinja2 rendering and the channel rules for its output.

Templates are written by customers, so they run in Jinja2's immutable sandbox: no
attribute starting with an underscore, no mutation of the context, and size limits on
the operators that could build huge strings.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from functools import lru_cache

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

SMS_MAX_CHARS = 1600
MAX_OPERATOR_RESULT = 100_000


class RenderError(Exception):
    """The template cannot be rendered with this context; `errors` is a field -> messages map."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, op, left, right):
        if op == "**":
            if isinstance(right, (int, float)) and abs(right) > 64:
                raise SecurityError("exponent too large")
            return operator.pow(left, right)
        result_size = _repeat_size(left, right)
        if result_size is not None and result_size > MAX_OPERATOR_RESULT:
            raise SecurityError("result of * too large")
        return operator.mul(left, right)


def _repeat_size(left, right) -> int | None:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
            return len(seq) * count
    return None


_text_env = _Sandbox(autoescape=False, keep_trailing_newline=True)
_html_env = _Sandbox(autoescape=True, keep_trailing_newline=True)


def _env(html: bool) -> _Sandbox:
    return _html_env if html else _text_env


@lru_cache(maxsize=2048)
def _compile(source: str, html: bool):
    return _env(html).from_string(source)


@lru_cache(maxsize=2048)
def placeholders(source: str) -> frozenset[str]:
    """Top-level variables a template source refers to."""
    ast = _env(False).parse(source)
    return frozenset(meta.find_undeclared_variables(ast))


def check_syntax(source: str) -> str | None:
    """None when the source compiles; otherwise a message naming the line."""
    try:
        ast = _env(False).parse(source)
    except TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    for node in ast.find_all((nodes.Getattr,)):
        if node.attr.startswith("_"):
            return f"line {node.lineno}: access to attribute {node.attr!r} is not allowed"
    return None


def default_for(name: str) -> str:
    return "Guest" if name == "name" or name.endswith("_name") else "TBD"


def render_string(source: str, values: dict, *, html: bool = False) -> str:
    if not source:
        return ""
    try:
        return _compile(source, html).render(values)
    except SecurityError as exc:
        raise RenderError({"template": [f"unsafe template expression refused: {exc}"]}) from None
    except TemplateError as exc:
        raise RenderError({"template": [f"cannot render: {exc}"]}) from None
    except (ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise RenderError({"template": [f"cannot render: {exc.__class__.__name__}: {exc}"]}) from None


def fill_placeholders(
    sources: list[str], context: dict, *, required: list[str], defaults: dict
) -> tuple[dict, list[str]]:
    """Values for rendering: the context, plus a fallback for each optional placeholder
    the context lacks. Missing required placeholders are an error."""
    missing_required = [name for name in required if _blank(context.get(name))]
    if missing_required:
        raise RenderError({"context": [f"missing required placeholder(s): {', '.join(missing_required)}"]})
    values = {key: value for key, value in context.items() if not _blank(value)}
    filled = []
    for source in sources:
        if not source:
            continue
        for name in sorted(placeholders(source)):
            if name not in values:
                values[name] = defaults.get(name) or default_for(name)
                filled.append(name)
    return values, filled


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# --- SMS ------------------------------------------------------------------------------

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("^{}\\[~]|€\f")


@dataclass
class SmsInfo:
    encoding: str
    characters: int
    segments: int
    units: int = field(default=0)


def sms_info(text: str) -> SmsInfo:
    """GSM-7 when every character is in the GSM 03.38 alphabet, else UCS-2; segments as
    carriers count them (160/153 septets, or 70/67 UTF-16 units)."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        units = len(text) + sum(1 for ch in text if ch in GSM7_EXTENSION)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    segments = 1 if units <= single else math.ceil(units / multi)
    return SmsInfo(encoding=encoding, characters=len(text), segments=segments, units=units)
