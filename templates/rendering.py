"""Sandboxed Jinja2 rendering and the channel rules for its output.

Templates are written by customers, so they run in Jinja2's immutable sandbox: no
attribute starting with an underscore, no mutation of the context, and size limits on
the operators that could build huge strings.
"""

from __future__ import annotations

import contextvars
import functools
import math
import operator
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

SMS_MAX_CHARS = 1600
MAX_OPERATOR_RESULT = 100_000
# Integers past this many bits cost real memory and time to build (and cannot be printed:
# Python refuses str() of ints over 4,300 digits, about 14,000 bits).
MAX_INT_BITS = 10_000


class RenderError(Exception):
    """The template cannot be rendered with this context; `errors` is a field -> messages map."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))


class RenderUndefined(RenderError):
    """The template reached for a value the context does not have (data, not the template)."""


class RenderRefused(RenderError):
    """The sandbox refused the template whatever the data: an unsafe expression, or one
    past a size, depth or time limit. Templates are checked for this when saved."""


MAX_RANGE = 10_000
# The wall-clock time one render may take: loops and calls check it as they go, so no
# template can hold a worker (nested loops within every size limit can still run long).
MAX_RENDER_SECONDS = 1.0
_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("render_deadline", default=0.0)
# The most one value built inside a template (a string, a joined list) may hold, and the
# most one render may output.
MAX_VALUE_CHARS = 1_000_000
MAX_OUTPUT_CHARS = 2_000_000
# Format strings that size their output from data: a width or precision of six digits or
# more ('%0999999999d', '{:>999999}'), a '*' width ('%*d'), or a nested field ('{:>{1}}').
HUGE_FORMAT_FIELD = re.compile(r"\d{6,}|%[-#0 +]*\*|%[-#0 +]*\d*\.\*|\{[^{}]*\{")
# Filters whose numeric arguments size their output.
SIZED_FILTERS = ("center", "indent", "wordwrap", "truncate", "filesizeformat", "round")


def _refuse_huge_format(template) -> None:
    if isinstance(template, str) and HUGE_FORMAT_FIELD.search(template):
        raise SecurityError("format width too large")


def _check_deadline() -> None:
    deadline = _deadline.get()
    if deadline and time.monotonic() > deadline:
        raise SecurityError(f"render took longer than {MAX_RENDER_SECONDS:g} s")


class _TimedRange:
    """A range whose iteration keeps to the render's time budget."""

    def __init__(self, items: range):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]

    def __contains__(self, value) -> bool:
        return value in self.items

    def __iter__(self):
        for count, item in enumerate(self.items):
            if count % 256 == 0:
                _check_deadline()
            yield item


def _refused(name: str):
    def refuse(*args, **kwargs):
        raise SecurityError(f"{name}() is not available in templates")

    return refuse


def _bounded_range(*args):
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise SecurityError(f"range larger than {MAX_RANGE}")
    return _TimedRange(items)


def _bounded_arguments(name, func):
    @functools.wraps(func)
    def guarded(*args, **kwargs):
        if any(_is_int(value) and abs(value) > MAX_OPERATOR_RESULT for value in [*args[1:], *kwargs.values()]):
            raise SecurityError(f"{name}: argument too large")
        return func(*args, **kwargs)

    return guarded


def _bounded_replace(func):
    @functools.wraps(func)
    def guarded(*args, **kwargs):
        strings = [value for value in args if isinstance(value, str)]
        if len(strings) >= 3:
            subject, old, new = strings[:3]
            occurrences = subject.count(old) if old else len(subject) + 1
            if len(subject) + occurrences * len(new) > MAX_OPERATOR_RESULT * 10:
                raise SecurityError("replace: result too large")
        return func(*args, **kwargs)

    return guarded


def _bounded_join(func):
    @functools.wraps(func)
    def guarded(*args, **kwargs):
        items = next((value for value in args if isinstance(value, (list, tuple))), None)
        if items is not None and _size(items) > MAX_VALUE_CHARS:
            raise SecurityError("join: result too large")
        return func(*args, **kwargs)

    return guarded


def _size(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(_size(item) for item in value) + len(value)
    return 1


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles `a ~ b` through the environment, so string concatenation is bounded too."""

    def visit_Concat(self, node, frame):
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.bounded_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _bounded_format(func):
    @functools.wraps(func)
    def guarded(value, *args, **kwargs):
        _refuse_huge_format(value)
        return func(value, *args, **kwargs)

    return guarded


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with the size of what one expression can build bounded:
    no operator, filter, format or range can allocate gigabytes or loop for minutes."""

    intercepted_binops = frozenset(["*", "**", "%", "+"])
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # lipsum(n) builds n paragraphs with no upper bound: lipsum(10**9) never returns.
        self.globals["lipsum"] = _refused("lipsum")
        self.globals["range"] = _bounded_range
        for name in SIZED_FILTERS:
            self.filters[name] = _bounded_arguments(name, self.filters[name])
        self.filters["replace"] = _bounded_replace(self.filters["replace"])
        self.filters["format"] = _bounded_format(self.filters["format"])
        self.filters["join"] = _bounded_join(self.filters["join"])

    def call(self, context, obj, *args, **kwargs):
        _check_deadline()
        return super().call(context, obj, *args, **kwargs)

    def getattr(self, obj, attribute):
        _check_deadline()
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        _check_deadline()
        return super().getitem(obj, argument)

    def bounded_concat(self, join, items):
        if sum(len(str(item)) for item in items) > MAX_VALUE_CHARS:
            raise SecurityError("~: result too large")
        return join(items)

    def concat(self, pieces) -> str:
        """Join a render's output, refusing it once it passes MAX_OUTPUT_CHARS (the pieces
        are produced lazily, so the refusal comes before the memory is spent)."""
        output, total = [], 0
        for piece in pieces:
            total += len(piece)
            if total > MAX_OUTPUT_CHARS:
                raise SecurityError(f"output larger than {MAX_OUTPUT_CHARS} characters")
            output.append(piece)
        return "".join(output)

    def wrap_str_format(self, value):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        _refuse_huge_format(value.__self__)
        return wrapped

    def call_binop(self, context, op, left, right):
        if op == "+":
            if isinstance(left, (str, list, tuple)) and _size(left) + _size(right) > MAX_VALUE_CHARS:
                raise SecurityError("result of + too large")
            return operator.add(left, right)
        if op == "%":
            _refuse_huge_format(left)
            return operator.mod(left, right)
        if op == "**":
            if isinstance(right, (int, float)) and abs(right) > 64:
                raise SecurityError("exponent too large")
            # A small exponent is not enough: (2**64)**64**64 chains to a number of
            # gigabytes, so bound the size of the result as well.
            if _is_int(left) and _is_int(right) and right > 0 and abs(left).bit_length() * right > MAX_INT_BITS:
                raise SecurityError("result of ** too large")
            return operator.pow(left, right)
        result_size = _repeat_size(left, right)
        if result_size is not None and result_size > MAX_OPERATOR_RESULT:
            raise SecurityError("result of * too large")
        if _is_int(left) and _is_int(right) and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
            raise SecurityError("result of * too large")
        return operator.mul(left, right)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _repeat_size(left, right) -> int | None:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
            return _size(seq) * count
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
    for node in ast.find_all((nodes.Filter,)):
        # |attr('__class__') names the attribute as a string: refuse it as plainly.
        if node.name == "attr" and any(
            isinstance(arg, nodes.Const) and isinstance(arg.value, str) and arg.value.startswith("_")
            for arg in node.args
        ):
            return f"line {node.lineno}: access to attribute {node.args[0].value!r} is not allowed"
    return None


# The built-in fallbacks for a name ("Guest") and anything else ("TBD"), by language.
BUILT_IN_FALLBACKS = {
    "": ("Guest", "TBD"),
    "es": ("Invitado", "por confirmar"),
    "fr": ("Invité", "à confirmer"),
    "pt": ("Convidado", "a confirmar"),
    "de": ("Gast", "noch offen"),
}


def default_for(name: str, locales=("",)) -> str:
    """The built-in fallback for a placeholder, in the first of `locales` there is one for."""
    fallbacks = next((BUILT_IN_FALLBACKS[loc] for loc in locales if loc in BUILT_IN_FALLBACKS), BUILT_IN_FALLBACKS[""])
    return fallbacks[0] if name == "name" or name.endswith("_name") else fallbacks[1]


def localized(value, locales) -> str:
    """A template default: one text, or texts by locale ({"": "your host", "es": "tu anfitrión"})."""
    if isinstance(value, dict):
        return next((value[loc] for loc in locales if value.get(loc)), "")
    return value or ""


def render_string(source: str, values: dict, *, html: bool = False) -> str:
    if not source:
        return ""
    token = _deadline.set(time.monotonic() + MAX_RENDER_SECONDS)
    try:
        return _compile(source, html).render(values)
    except SecurityError as exc:
        raise RenderRefused({"template": [f"unsafe template expression refused: {exc}"]}) from None
    except UndefinedError as exc:
        raise RenderUndefined({"template": [f"cannot render: {exc}"]}) from None
    except TemplateError as exc:
        raise RenderError({"template": [f"cannot render: {exc}"]}) from None
    except (ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise RenderError({"template": [f"cannot render: {exc.__class__.__name__}: {exc}"]}) from None
    except RecursionError:
        raise RenderRefused({"template": ["cannot render: recursion too deep"]}) from None
    except MemoryError:
        raise RenderRefused({"template": ["cannot render: out of memory"]}) from None
    finally:
        _deadline.reset(token)


def fill_placeholders(
    sources: list[str], context: dict, *, required: list[str], defaults: dict, locales: list[str] = ("",)
) -> tuple[dict, list[str]]:
    """Values for rendering: the context, plus a fallback for each optional placeholder
    the context lacks, in the first of `locales` (most specific first, "" last) it has.
    Missing required placeholders are an error."""
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
                values[name] = localized(defaults.get(name), locales) or default_for(name, locales)
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
