"""The operator console: template pages load, preview is escaped, saving makes versions."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from templates.models import Template, TemplateContent, TemplateVersion
from templates.services import template_update
from tests.factories import make_template

CHANGELIST = "/admin/templates/{}/"


@pytest.fixture
def root(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", None)


@pytest.fixture
def admin_client(root):
    client = Client()
    client.force_login(root)
    return client


def change_url(template) -> str:
    return f"/admin/templates/template/{template.pk}/change/"


def change_form(template, **overrides) -> dict:
    """The POST body of the change form, as the browser sends it unchanged."""
    version = template.current_version
    data = {
        "account": template.account_id or "",
        "key": template.key,
        "name": template.name,
        "template_type": template.template_type,
        "category": template.category,
        "description": template.description,
        "required_placeholders": json.dumps(version.required_placeholders),
        "defaults": json.dumps(version.defaults),
        "sample_context": json.dumps(version.sample_context),
        "contents": json.dumps(
            [
                {
                    "channel": c.channel,
                    "locale": c.locale,
                    "subject": c.subject,
                    "body": c.body,
                    "html_body": c.html_body,
                }
                for c in version.contents.all()
            ]
        ),
        "versions-TOTAL_FORMS": str(template.versions.count()),
        "versions-INITIAL_FORMS": str(template.versions.count()),
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
    }
    if template.is_active:
        data["is_active"] = "on"
    for index, v in enumerate(template.versions.order_by("-number")):
        data[f"versions-{index}-id"] = str(v.pk)
        data[f"versions-{index}-template"] = str(template.pk)
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.django_db
def test_change_page_shows_the_rendered_preview_escaped(alice, admin_client):
    # given
    template = make_template(
        alice,
        sample_context={"event_name": "<script>alert(1)</script>", "invitee_name": "Ana & Co"},
    )
    # when
    response = admin_client.get(change_url(template))
    # then
    assert response.status_code == 200
    page = response.content.decode()
    assert "Rendered preview (sample data)" in page
    assert "<script>alert(1)</script>" not in page
    assert "Reminder: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Hi Ana &amp; Co, &lt;script&gt;alert(1)&lt;/script&gt; is soon." in page
    assert "Recordatorio: &lt;script&gt;alert(1)&lt;/script&gt; soon" in page
    assert "GSM-7, 1 segment(s)" in page
    assert "<td>sms/es</td>" in page


@pytest.mark.django_db
def test_change_page_shows_a_render_error_instead_of_failing(alice, admin_client):
    template = make_template(alice, sample_context={})
    response = admin_client.get(change_url(template))
    assert response.status_code == 200
    assert "context: missing required placeholder(s): event_name" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["template", "templateversion", "templatecontent"])
def test_changelists_load(alice, admin_client, model):
    # given
    template = make_template(alice)
    make_template(None, key="system")
    template_update(template=template, contents=[{"channel": "sms", "body": "v2"}])
    # when
    response = admin_client.get(CHANGELIST.format(model))
    # then
    assert response.status_code == 200
    assert "reminder" in response.content.decode()


@pytest.mark.django_db
def test_version_and_content_pages_are_read_only(alice, admin_client):
    template = make_template(alice)
    version = template.current_version
    content = version.contents.first()
    assert admin_client.get(f"/admin/templates/templateversion/{version.pk}/change/").status_code == 200
    assert admin_client.get(f"/admin/templates/templatecontent/{content.pk}/change/").status_code == 200
    assert admin_client.get("/admin/templates/templateversion/add/").status_code == 403
    assert (
        admin_client.post(f"/admin/templates/templateversion/{version.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_saving_new_contents_in_the_change_form_makes_a_new_version(alice, root, admin_client):
    # given
    template = make_template(alice)
    new_contents = [{"channel": "sms", "locale": "", "subject": "", "body": "Admin: {{ event_name }}", "html_body": ""}]
    # when
    response = admin_client.post(change_url(template), change_form(template, contents=json.dumps(new_contents)))
    # then
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    template.refresh_from_db()
    version = template.current_version
    assert (version.number, version.note, version.created_by) == (2, "edited", root)
    assert list(version.contents.values("channel", "locale", "subject", "body", "html_body")) == new_contents
    assert (version.required_placeholders, version.defaults) == (["event_name"], {"start_time": "soon"})
    assert TemplateVersion.objects.count() == 2


@pytest.mark.django_db
def test_saving_only_the_name_in_the_change_form_makes_no_version(alice, admin_client):
    template = make_template(alice)
    response = admin_client.post(change_url(template), change_form(template, name="Renamed in admin"))
    assert response.status_code == 302
    template.refresh_from_db()
    assert (template.name, template.current_version.number) == ("Renamed in admin", 1)
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_unticking_active_in_the_change_form_archives(alice, admin_client):
    template = make_template(alice)
    data = change_form(template)
    del data["is_active"]
    response = admin_client.post(change_url(template), data)
    assert response.status_code == 302
    template.refresh_from_db()
    assert template.is_active is False
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_a_syntax_error_in_the_change_form_is_shown_and_nothing_is_saved(alice, admin_client):
    # given
    template = make_template(alice)
    broken = [{"channel": "sms", "body": "ok\n{{ event_name"}]
    # when
    response = admin_client.post(
        change_url(template), change_form(template, name="Should not stick", contents=json.dumps(broken))
    )
    # then
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["contents"] == [
        "contents[0]: body: template syntax error at line 2: unexpected end of template, "
        "expected 'end of print statement'."
    ]
    template.refresh_from_db()
    assert (template.name, template.current_version.number) == ("Reminder", 1)
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_bad_placeholders_in_the_change_form_are_shown_on_their_field(alice, admin_client):
    template = make_template(alice)
    response = admin_client.post(change_url(template), change_form(template, defaults=json.dumps(["x"])))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["defaults"] == [
        "Must be an object of placeholder -> fallback value."
    ]
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_adding_a_template_in_the_admin_makes_version_one(alice, root, admin_client):
    # when
    response = admin_client.post(
        "/admin/templates/template/add/",
        {
            "account": alice.pk,
            "key": "from_admin",
            "name": "From admin",
            "template_type": "custom",
            "category": "transactional",
            "description": "",
            "required_placeholders": "[]",
            "defaults": "{}",
            "sample_context": json.dumps({"who": "Ana"}),
            "contents": json.dumps([{"channel": "sms", "body": "Hi {{ who }}"}]),
            "versions-TOTAL_FORMS": "0",
            "versions-INITIAL_FORMS": "0",
            "versions-MIN_NUM_FORMS": "0",
            "versions-MAX_NUM_FORMS": "1000",
        },
    )
    # then
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    template = Template.objects.get(key="from_admin")
    assert (template.account, template.is_active) == (alice, False)
    assert (template.current_version.number, template.current_version.created_by) == (1, root)
    assert TemplateContent.objects.filter(version__template=template).count() == 1
    assert admin_client.get(change_url(template)).status_code == 200
