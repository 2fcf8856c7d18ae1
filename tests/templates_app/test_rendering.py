"""Sandboxed rendering: escapes are refused or inert, HTML is escaped, placeholders fall back."""

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from templates.models import Template, TemplateVersion
from templates.rendering import RenderError, check_syntax, default_for, fill_placeholders, placeholders, render_string
from templates.services import template_create, template_render, template_update
from tests.factories import make_template

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LEAK_MARKERS = ("<class", "object", "function", "module", "mro", "globals", "builtins", "subclasses")


def assert_inert(output: str) -> None:
    for marker in LEAK_MARKERS:
        assert marker not in output


RENDER_SCRIPT = """
import json, sys, time
from templates.rendering import RenderError, fill_placeholders, render_string
source = sys.stdin.read()
values, _ = fill_placeholders([source], {}, required=[], defaults={})
started = time.monotonic()
try:
    output, error = render_string(source, values), None
except RenderError as exc:
    output, error = None, exc.errors
print(json.dumps({"output": output, "error": error, "seconds": time.monotonic() - started}))
"""


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))


def render_in_subprocess(source: str) -> dict:
    """Render in a child process with a memory cap and a timeout, so that a sandbox
    regression fails the test instead of hanging or exhausting the test run."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", RENDER_SCRIPT],
            input=source,
            capture_output=True,
            text=True,
            timeout=20,
            cwd=PROJECT_ROOT,
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"rendering {source!r} did not finish in 20s: the sandbox let it run unbounded")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def render_or_refuse(source: str, values: dict) -> tuple[str | None, RenderError | None]:
    try:
        return render_string(source, values), None
    except RenderError as exc:
        return None, exc


# --- sandbox ------------------------------------------------------------------------------

# Sources that must never reach Python internals. `saved` is what check_syntax says (None
# means it may be saved), `rendered` what rendering gives: a string (inert output) or a
# RenderError message fragment.
SANDBOX_CASES = [
    pytest.param(
        "{{ ''.__class__.__mro__ }}",
        "line 1: access to attribute '__mro__' is not allowed",
        RenderError,
        id="str-class-mro",
    ),
    pytest.param(
        "{{ ''.__class__ }}",
        "line 1: access to attribute '__class__' is not allowed",
        "",
        id="str-class",
    ),
    pytest.param(
        "{{ cycler.__init__.__globals__ }}",
        "line 1: access to attribute '__globals__' is not allowed",
        RenderError,
        id="cycler-globals",
    ),
    pytest.param(
        "{{ self._TemplateReference__context }}",
        "line 1: access to attribute '_TemplateReference__context' is not allowed",
        "",
        id="self-context",
    ),
    pytest.param(
        "Hi\n{{ x.__class__.__base__.__subclasses__() }}",
        "line 2: access to attribute '__subclasses__' is not allowed",
        RenderError,
        id="subclasses-line-2",
    ),
    pytest.param("{{ x['__class__'] }}", None, "", id="getitem-dunder"),
    pytest.param(
        "{{ x|attr('__class__') }}", "line 1: access to attribute '__class__' is not allowed", "", id="attr-filter"
    ),
    pytest.param("{{ '{0.__class__}'.format(x) }}", None, "", id="str-format"),
]


@pytest.mark.parametrize("source,saved,rendered", SANDBOX_CASES)
def test_sandbox_escapes_are_refused_at_save_or_render_inert(source, saved, rendered):
    # when
    problem = check_syntax(source)
    output, error = render_or_refuse(source, {"x": "abc"})
    # then
    assert problem == saved
    if rendered is RenderError:
        assert output is None
        assert error.errors["template"][0].startswith("unsafe template expression refused: access to attribute")
    else:
        assert error is None
        assert output == rendered
        assert_inert(output)


@pytest.mark.parametrize(
    "source,message",
    [
        ("{{ 'a' * 10**9 }}", "unsafe template expression refused: result of * too large"),
        ("{{ 10**9 * 'a' }}", "unsafe template expression refused: result of * too large"),
        ("{{ [0] * 100001 }}", "unsafe template expression refused: result of * too large"),
        ("{{ 10**100 }}", "unsafe template expression refused: exponent too large"),
        ("{{ 2**64**64**64 }}", "unsafe template expression refused: result of ** too large"),
        ("{{ 9**64**64**64**64**64**64 }}", "unsafe template expression refused: result of ** too large"),
        (
            "{% set ns = namespace(n=2**64) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
            "unsafe template expression refused: result of * too large",
        ),
        ("{{ lipsum(10**9) }}", "unsafe template expression refused: lipsum() is not available in templates"),
        ("{{ '%0999999999d' % 1 }}", "unsafe template expression refused: format width too large"),
        ("{{ '%099999999d'|format(1) }}", "unsafe template expression refused: format width too large"),
        ("{{ '{:>99999999}'.format(1) }}", "unsafe template expression refused: format width too large"),
        ("{{ '{:>99999999}'.format_map({}) }}", "unsafe template expression refused: format width too large"),
        ("{{ 'x'|center(10**9) }}", "unsafe template expression refused: center: argument too large"),
        ("{{ 'x'|indent(10**9) }}", "unsafe template expression refused: indent: argument too large"),
        ("{{ 'x'|wordwrap(10**9) }}", "unsafe template expression refused: wordwrap: argument too large"),
        (
            "{{ ('x' * 100000)|replace('x', 'x' * 100000) }}",
            "unsafe template expression refused: replace: result too large",
        ),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "unsafe template expression refused: range larger than 10000",
        ),
        ("{{ '%*d' % (999999999, 1) }}", "unsafe template expression refused: format width too large"),
        ("{{ '%.*f' % (999999999, 1.0) }}", "unsafe template expression refused: format width too large"),
        ("{{ '{0:>{1}}'.format('a', 999999999) }}", "unsafe template expression refused: format width too large"),
        ("{{ (['x' * 100000] * 100000)|join }}", "unsafe template expression refused: result of * too large"),
        (
            "{% set b = 'x' * 100000 %}{{ [b, b, b, b, b, b, b, b, b, b, b]|join }}",
            "unsafe template expression refused: join: result too large",
        ),
        (
            "{% set x = 'x' * 100000 %}{% set x = x ~ x %}{% set x = x ~ x %}{% set x = x ~ x %}{% set x = x ~ x %}",
            "unsafe template expression refused: ~: result too large",
        ),
        (
            "{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x + ns.x %}{% endfor %}",
            "unsafe template expression refused: result of + too large",
        ),
        (
            "{% set big = 'x' * 100000 %}{% for i in range(10000) %}{{ big }}{% endfor %}",
            "unsafe template expression refused: output larger than 2000000 characters",
        ),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(1) }}", "cannot render: recursion too deep"),
    ],
)
def test_operators_that_build_huge_values_are_refused_quickly(source, message):
    # when
    outcome = render_in_subprocess(source)
    # then
    assert outcome["error"] is not None, outcome
    assert outcome["error"]["template"][0].startswith(message)
    assert outcome["seconds"] < 2


def test_int_multiplication_past_the_size_limit_is_refused():
    output, error = render_or_refuse("{% set n = 2**64**64 %}{% set n = n * n %}{% set n = n * n %}{{ n }}", {})
    assert output is None
    assert error.errors == {"template": ["unsafe template expression refused: result of * too large"]}


def test_small_arithmetic_and_repetition_still_work():
    assert render_string("{{ 2**10 }} {{ 'ab' * 3 }} {{ 3 * 4 }} {{ 2**64**64 > 0 }}", {}) == "1024 ababab 12 True"


def test_ordinary_formatting_filters_and_ranges_still_work():
    source = (
        "{{ '%5d' % 3 }}|{{ 'ab'|center(6) }}|{{ '{:>4}'.format(1) }}|{{ range(3)|list }}|"
        "{{ 'a-b'|replace('-', '+') }}|{{ '%s!'|format('hi') }}|{{ 10 % 3 }}|{{ 'abcdef'|truncate(5, True, '', 0) }}|"
        "{{ 'a' ~ 1 }}|{{ [1, 2]|join(',') }}|{{ 'x' + 'y' }}|{{ 1 + 2 }}|{{ '{}-{}'.format(1, 2) }}"
    )
    assert render_string(source, {}) == "    3|  ab  |   1|[0, 1, 2]|a+b|hi!|1|abcde|a1|1,2|xy|3|1-2"


def test_concatenation_in_html_still_escapes_the_context():
    assert render_string("{{ a ~ b }}", {"a": "<i>", "b": "&"}, html=True) == "&lt;i&gt;&amp;"


def test_immutable_sandbox_refuses_mutating_the_context():
    # given
    items = [1, 2]
    # when
    output, error = render_or_refuse("{{ items.append(3) }}", {"items": items})
    # then
    assert output is None
    assert "unsafe template expression refused" in error.errors["template"][0]
    assert items == [1, 2]


def test_escape_attempts_are_refused_at_save_with_nothing_written(alice):
    # when
    with pytest.raises(ValidationError) as caught:
        template_create(
            account=alice,
            key="evil",
            name="Evil",
            contents=[{"channel": "sms", "body": "ok\n{{ cycler.__init__.__globals__.os }}"}],
        )
    # then
    assert caught.value.message_dict == {
        "contents[0]": ["body: template syntax error at line 2: access to attribute '__globals__' is not allowed"]
    }
    assert Template.objects.count() == 0
    assert TemplateVersion.objects.count() == 0


@pytest.mark.django_db
def test_escape_in_a_saved_template_renders_nothing_leaky():
    # given a version whose content passed check_syntax but probes through item lookup
    template = make_template(
        None,
        key="probe",
        required_placeholders=[],
        contents=[
            {
                "channel": "email",
                "subject": "{{ x['__class__'] }}Hello",
                "body": "{{ x['__class__'] }}|{{ x['__init__'] }}",
                "html_body": "<p>{{ x['__class__'] }}</p>",
            }
        ],
    )
    # when
    rendered = template_render(version=template.current_version, channel="email", locale="", context={"x": "abc"})
    # then
    assert (rendered.subject, rendered.body, rendered.html_body) == ("Hello", "|", "<p></p>")


# --- autoescape ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_html_body_is_autoescaped_but_text_body_and_subject_are_not(alice):
    # given
    template = make_template(alice)
    # when
    rendered = template_render(
        version=template.current_version,
        channel="email",
        locale="",
        context={"event_name": "<b>Cut & Style</b>", "invitee_name": 'Ana "A" O\'Hara'},
    )
    # then
    assert rendered.subject == "Reminder: <b>Cut & Style</b>"
    assert rendered.body == 'Hi Ana "A" O\'Hara, <b>Cut & Style</b> is soon.'
    assert rendered.html_body == (
        "<p>Hi Ana &#34;A&#34; O&#39;Hara, <b>&lt;b&gt;Cut &amp; Style&lt;/b&gt;</b> is soon.</p>"
    )


def test_render_string_escapes_only_in_html_mode():
    assert render_string("{{ v }}", {"v": "<i>&</i>"}) == "<i>&</i>"
    assert render_string("{{ v }}", {"v": "<i>&</i>"}, html=True) == "&lt;i&gt;&amp;&lt;/i&gt;"


@pytest.mark.django_db
def test_subject_is_folded_onto_one_line(alice):
    # given
    template = make_template(alice)
    # when
    rendered = template_render(
        version=template.current_version,
        channel="email",
        locale="",
        context={"event_name": "Cut\r\nBcc: evil@example.com"},
    )
    # then
    assert rendered.subject == "Reminder: Cut Bcc: evil@example.com"


# --- placeholders -------------------------------------------------------------------------


@pytest.mark.django_db
def test_missing_required_placeholder_is_an_error_naming_it(alice):
    template = make_template(alice, required_placeholders=["event_name", "start_time"])
    with pytest.raises(RenderError) as caught:
        template_render(version=template.current_version, channel="sms", locale="", context={"invitee_name": "Ana"})
    assert caught.value.errors == {"context": ["missing required placeholder(s): event_name, start_time"]}
    assert str(caught.value) == "context: missing required placeholder(s): event_name, start_time"


@pytest.mark.django_db
@pytest.mark.parametrize("blank", ["", "   ", None])
def test_blank_or_none_required_value_counts_as_missing(alice, blank):
    template = make_template(alice)
    with pytest.raises(RenderError) as caught:
        template_render(version=template.current_version, channel="sms", locale="", context={"event_name": blank})
    assert caught.value.errors == {"context": ["missing required placeholder(s): event_name"]}


@pytest.mark.django_db
def test_optional_placeholders_fall_back_to_template_defaults_then_guest_then_tbd(alice):
    # given
    template = make_template(
        alice,
        required_placeholders=[],
        defaults={"start_time": "soon"},
        contents=[
            {
                "channel": "sms",
                "body": "{{ invitee_name }}|{{ organizer_name }}|{{ name }}|{{ start_time }}|{{ location }}",
            }
        ],
    )
    # when
    rendered = template_render(version=template.current_version, channel="sms", locale="", context={})
    # then
    assert rendered.body == "Guest|Guest|Guest|soon|TBD"
    assert rendered.filled_defaults == ["invitee_name", "location", "name", "organizer_name", "start_time"]


@pytest.mark.django_db
@pytest.mark.parametrize("blank", ["", "  \n", None])
def test_blank_or_none_optional_value_falls_back(alice, blank):
    template = make_template(alice)
    rendered = template_render(
        version=template.current_version,
        channel="email",
        locale="",
        context={"event_name": "Yoga", "invitee_name": blank, "start_time": blank},
    )
    assert rendered.body == "Hi Guest, Yoga is soon."
    assert rendered.filled_defaults == ["invitee_name", "start_time"]


@pytest.mark.django_db
def test_given_values_win_over_defaults_and_falsy_non_blank_values_are_kept(alice):
    template = make_template(alice, contents=[{"channel": "sms", "body": "{{ event_name }} {{ start_time }} {{ n }}"}])
    rendered = template_render(
        version=template.current_version,
        channel="sms",
        locale="",
        context={"event_name": "Yoga", "start_time": "at 9", "n": 0},
    )
    assert rendered.body == "Yoga at 9 0"
    assert rendered.filled_defaults == []


def test_blank_template_default_falls_back_to_the_generic_one():
    values, filled = fill_placeholders(
        ["{{ invitee_name }} {{ when }}"], {}, required=[], defaults={"invitee_name": "", "when": ""}
    )
    assert values == {"invitee_name": "Guest", "when": "TBD"}
    assert filled == ["invitee_name", "when"]


@pytest.mark.parametrize(
    "name,expected",
    [("name", "Guest"), ("invitee_name", "Guest"), ("organizer_name", "Guest"), ("names", "TBD"), ("date", "TBD")],
)
def test_default_for(name, expected):
    assert default_for(name) == expected


def test_placeholders_are_top_level_undeclared_names_only():
    source = "{% set greeting = 'Hi' %}{{ greeting }} {{ a }}{% for b in items %}{{ b.c }}{{ loop.index }}{% endfor %}"
    assert placeholders(source) == frozenset({"a", "items"})
    assert placeholders("{% for i in range(2) %}{{ i }}{% endfor %}{{ namespace(x=1).x }}") == frozenset()


def test_jinja_globals_are_not_shadowed_by_fallbacks():
    source = "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"
    values, filled = fill_placeholders([source], {}, required=[], defaults={})
    assert (values, filled) == ({}, [])
    assert render_string(source, values) == "3"


@pytest.mark.django_db
def test_render_error_inside_the_template_is_a_render_error(alice):
    template = make_template(alice, required_placeholders=[], contents=[{"channel": "sms", "body": "{{ x.y.z }}"}])
    with pytest.raises(RenderError) as caught:
        template_render(version=template.current_version, channel="sms", locale="", context={})
    assert caught.value.errors == {"template": ["cannot render: 'str object' has no attribute 'y'"]}


@pytest.mark.django_db
def test_channel_without_content_is_an_error(alice):
    template = make_template(alice, contents=[{"channel": "sms", "body": "Hi"}])
    with pytest.raises(RenderError) as caught:
        template_render(version=template.current_version, channel="email", locale="", context={"event_name": "x"})
    assert caught.value.errors == {"channel": ["Template 'reminder' has no email content."]}


@pytest.mark.django_db
def test_email_whose_subject_renders_empty_is_an_error(alice):
    template = make_template(
        alice,
        required_placeholders=[],
        contents=[{"channel": "email", "subject": "{% if show %}Hi{% endif %}", "body": "Body"}],
    )
    with pytest.raises(RenderError) as caught:
        template_render(version=template.current_version, channel="email", locale="", context={"show": False})
    assert caught.value.errors == {"subject": ["An email needs a subject."]}


@pytest.mark.django_db
@override_settings(BEACON_MAX_BODY_CHARS=40)
def test_rendered_output_over_the_body_limit_is_an_error(alice):
    template = make_template(
        alice, required_placeholders=[], contents=[{"channel": "email", "subject": "S", "body": "{{ text }}"}]
    )
    with pytest.raises(RenderError) as caught:
        template_render(version=template.current_version, channel="email", locale="", context={"text": "x" * 41})
    assert caught.value.errors == {"body": ["Rendered body is longer than 40 characters."]}


@pytest.mark.django_db
def test_source_over_the_body_limit_is_refused_at_save(alice):
    template = make_template(alice)
    version = template.current_version
    with override_settings(BEACON_MAX_BODY_CHARS=40), pytest.raises(ValidationError) as caught:
        template_update(template=template, contents=[{"channel": "sms", "body": "y" * 41}])
    assert caught.value.message_dict == {"contents[0]": ["body: longer than 40 characters"]}
    template.refresh_from_db()
    assert template.current_version == version
    assert template.versions.count() == 1
