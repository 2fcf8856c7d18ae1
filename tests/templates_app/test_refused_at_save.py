"""What the sandbox would refuse at render is refused when the template is saved (a 400
naming the content, no template or version written), and every render has a time budget."""

import time

import pytest

from templates import rendering
from templates.models import Template, TemplateVersion
from templates.rendering import RenderRefused, render_string
from tests.templates_app.test_api import URL, payload

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("{% for i in range(10**9) %}x{% endfor %}", "unsafe template expression refused: range larger than 10000"),
        ("{{ range(10**9)|list }}", "unsafe template expression refused: range larger than 10000"),
        ("{{ 'a' * 10**9 }}", "unsafe template expression refused: result of * too large"),
        ("{{ '%999999999s'|format('a') }}", "unsafe template expression refused: format width too large"),
        ("{{ lipsum(10**6) }}", "unsafe template expression refused: lipsum() is not available in templates"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "unsafe template expression refused: range larger than 10000",
        ),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "cannot render: recursion too deep"),
        ("{{ (['a'] * 10**8)|join }}", "unsafe template expression refused: result of * too large"),
        # the filter binds first: join(10**8) cannot render with any data
        ("{{ ['a'] * 10**8|join }}", "cannot render: TypeError: 'int' object is not iterable"),
    ],
    ids=[
        "for-range",
        "range-list",
        "repeat",
        "format-width",
        "lipsum",
        "nested-loops",
        "recursive-macro",
        "join",
        "join-of-an-int",
    ],
)
def test_a_template_the_sandbox_would_refuse_is_refused_at_save(alice_api, body, problem):
    # given
    templates_before, versions_before = Template.objects.count(), TemplateVersion.objects.count()
    # when
    response = alice_api.post(
        URL, payload(key="unsafe", contents=[{"channel": "sms", "body": f"Hi {body}"}]), format="json"
    )
    # then
    assert response.status_code == 400
    assert response.json()["errors"] == {"contents[0]": [f"body: {problem}"]}
    assert (Template.objects.count(), TemplateVersion.objects.count()) == (templates_before, versions_before)


def test_an_attribute_named_by_string_is_refused_as_syntax(alice_api):
    response = alice_api.post(
        URL, payload(key="attr", contents=[{"channel": "sms", "body": "{{ ''|attr('__class__') }}"}]), format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "contents[0]": ["body: template syntax error at line 1: access to attribute '__class__' is not allowed"]
    }


def test_an_edit_is_checked_like_a_new_template(alice_api):
    created = alice_api.post(URL, payload(key="edited"), format="json")
    assert created.status_code == 201
    response = alice_api.patch(
        f"{URL}{created.json()['id']}/", {"contents": [{"channel": "sms", "body": "{{ 'a' * 10**9 }}"}]}, format="json"
    )
    assert response.status_code == 400
    assert TemplateVersion.objects.filter(template_id=created.json()["id"]).count() == 1


def test_an_error_that_depends_on_the_data_is_left_to_the_send(alice_api):
    # the sample lacks `booking`: its placeholder default is a string, so .start.day fails
    # here, but a send that gives a booking renders it
    response = alice_api.post(
        URL, payload(key="data", contents=[{"channel": "sms", "body": "{{ booking.start.day }}"}]), format="json"
    )
    assert response.status_code == 201


def test_a_render_has_a_time_budget(monkeypatch):
    # given: loops that stay within every size limit but would run for a long time
    monkeypatch.setattr(rendering, "MAX_RENDER_SECONDS", 0.2)
    source = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    # when
    with pytest.raises(RenderRefused) as refused:
        render_string(source, {})
    # then
    assert refused.value.errors == {"template": ["unsafe template expression refused: render took longer than 0.2 s"]}
    assert time.monotonic() - started < 2
