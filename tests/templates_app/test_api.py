"""The templates API: CRUD, ownership, system templates, preview, versions, restore."""

import pytest
from django.core import mail

from notifications.models import Delivery, Notification
from templates.models import Template, TemplateContent, TemplateVersion
from templates.services import template_update
from tests.factories import make_template

URL = "/api/v1/notifications/templates/"


def detail(template, action=""):
    return f"{URL}{template.pk}/{action + '/' if action else ''}"


def payload(**overrides):
    body = {
        "key": "welcome",
        "name": "Welcome",
        "template_type": "custom",
        "category": "transactional",
        "description": "Sent after sign-up",
        "required_placeholders": ["invitee_name"],
        "defaults": {"organizer_name": "the team"},
        "sample_context": {"invitee_name": "Ana"},
        "contents": [
            {"channel": "email", "subject": "Welcome, {{ invitee_name }}", "body": "Hi {{ invitee_name }}"},
            {"channel": "sms", "locale": "es_MX", "body": "Hola {{ invitee_name }} de {{ organizer_name }}"},
        ],
    }
    body.update(overrides)
    return body


SMS_ONLY = [
    {"channel": "sms", "locale": "", "subject": "", "body": "New: {{ event_name }}", "html_body": "", "options": {}}
]

# --- authentication -----------------------------------------------------------------------


@pytest.mark.django_db
def test_unauthenticated_requests_are_401_json(anon_api, alice):
    template = make_template(alice)
    for method, url in [
        ("get", URL),
        ("post", URL),
        ("get", detail(template)),
        ("patch", detail(template)),
        ("delete", detail(template)),
        ("post", detail(template, "preview")),
        ("get", detail(template, "versions")),
        ("post", detail(template, "restore")),
    ]:
        response = getattr(anon_api, method)(url, {}, format="json")
        assert response.status_code == 401, (method, url)
        assert response.json() == {"message": "Authentication credentials were not provided.", "errors": {}}
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    template.refresh_from_db()
    assert template.is_active is True
    assert Template.objects.count() == 1
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_a_wrong_token_is_401_and_creates_nothing(anon_api):
    anon_api.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    response = anon_api.post(URL, payload(), format="json")
    assert response.status_code == 401
    assert response.json() == {"message": "Invalid or revoked token.", "errors": {}}
    assert Template.objects.count() == 0


# --- create -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create(alice, alice_api):
    # when
    response = alice_api.post(URL, payload(), format="json")
    # then
    assert response.status_code == 201, response.json()
    template = Template.objects.get()
    body = response.json()
    assert body["id"] == str(template.pk)
    assert {k: body[k] for k in ("key", "name", "template_type", "category", "description", "is_active")} == {
        "key": "welcome",
        "name": "Welcome",
        "template_type": "custom",
        "category": "transactional",
        "description": "Sent after sign-up",
        "is_active": True,
    }
    assert (body["is_system"], body["version"]) == (False, 1)
    assert body["required_placeholders"] == ["invitee_name"]
    assert body["defaults"] == {"organizer_name": "the team"}
    assert body["sample_context"] == {"invitee_name": "Ana"}
    assert body["contents"] == [
        {
            "channel": "email",
            "locale": "",
            "subject": "Welcome, {{ invitee_name }}",
            "body": "Hi {{ invitee_name }}",
            "html_body": "",
            "options": {},
        },
        {
            "channel": "sms",
            "locale": "es-mx",
            "subject": "",
            "body": "Hola {{ invitee_name }} de {{ organizer_name }}",
            "html_body": "",
            "options": {},
        },
    ]
    assert template.account == alice
    assert template.current_version.created_by == alice


@pytest.mark.django_db
def test_create_archived(alice_api):
    response = alice_api.post(URL, payload(is_active=False), format="json")
    assert response.status_code == 201
    assert response.json()["is_active"] is False
    assert Template.objects.get().is_active is False


@pytest.mark.django_db
def test_create_with_a_syntax_error_is_400_with_the_line_and_creates_nothing(alice_api):
    # when
    response = alice_api.post(
        URL,
        payload(contents=[{"channel": "sms", "body": "Hi\n{{ invitee_name "}]),
        format="json",
    )
    # then
    assert response.status_code == 400
    message = "body: template syntax error at line 2: unexpected end of template, expected 'end of print statement'."
    assert response.json() == {
        "message": f"Invalid input: contents[0]: {message}",
        "errors": {"contents[0]": [message]},
    }
    assert Template.objects.count() == 0
    assert TemplateVersion.objects.count() == 0


@pytest.mark.django_db
def test_create_with_a_sandbox_escape_is_refused(alice_api):
    response = alice_api.post(
        URL, payload(contents=[{"channel": "sms", "body": "{{ ''.__class__.__mro__ }}"}]), format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "contents[0]": ["body: template syntax error at line 1: access to attribute '__mro__' is not allowed"]
    }
    assert Template.objects.count() == 0


@pytest.mark.django_db
def test_create_with_an_sms_body_over_1600_characters_is_refused(alice_api):
    response = alice_api.post(URL, payload(contents=[{"channel": "sms", "body": "a" * 1601}]), format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"contents[0]": ["body: an SMS body may not exceed 1600 characters"]}
    assert Template.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"key": "not a slug"}, "key"),
        ({"contents": []}, "contents"),
        ({"contents": [{"channel": "fax", "body": "x"}]}, "contents"),
        ({"required_placeholders": ["1bad"]}, "required_placeholders"),
        ({"template_type": "nope"}, "template_type"),
    ],
)
def test_create_with_invalid_fields_is_400(alice_api, overrides, field):
    response = alice_api.post(URL, payload(**overrides), format="json")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]
    assert response.json()["message"].startswith(f"Invalid input: {field}:")
    assert Template.objects.count() == 0


@pytest.mark.django_db
def test_duplicate_key_in_the_account_is_400(alice, alice_api):
    make_template(alice, key="welcome")
    response = alice_api.post(URL, payload(), format="json")
    assert response.status_code == 400
    assert response.json() == {
        "message": "Invalid input: key: A template with key 'welcome' already exists.",
        "errors": {"key": ["A template with key 'welcome' already exists."]},
    }
    assert Template.objects.count() == 1


@pytest.mark.django_db
def test_same_key_in_another_account_or_as_a_system_template_is_allowed(bob, alice_api):
    make_template(bob, key="welcome")
    make_template(None, key="welcome")
    response = alice_api.post(URL, payload(), format="json")
    assert response.status_code == 201
    assert Template.objects.filter(key="welcome").count() == 3


# --- list and retrieve --------------------------------------------------------------------


@pytest.mark.django_db
def test_list_has_own_and_system_templates_but_never_another_accounts(alice, bob, alice_api, bob_api):
    # given
    make_template(alice, key="alices")
    make_template(bob, key="bobs")
    make_template(None, key="system")
    # when
    alice_list = alice_api.get(URL).json()
    bob_list = bob_api.get(URL).json()
    # then
    assert alice_list["count"] == 2
    assert [(t["key"], t["is_system"]) for t in alice_list["results"]] == [("alices", False), ("system", True)]
    assert [t["key"] for t in bob_list["results"]] == ["bobs", "system"]


@pytest.mark.django_db
def test_list_filters(alice, alice_api):
    make_template(alice, key="one")
    make_template(alice, key="two", template_type="follow_up", category="marketing")
    assert [t["key"] for t in alice_api.get(URL, {"key": "two"}).json()["results"]] == ["two"]
    assert [t["key"] for t in alice_api.get(URL, {"template_type": "follow_up"}).json()["results"]] == ["two"]
    assert [t["key"] for t in alice_api.get(URL, {"category": "transactional"}).json()["results"]] == ["one"]


@pytest.mark.django_db
def test_retrieve_own_and_system(alice, alice_api):
    own = make_template(alice, key="own")
    system = make_template(None, key="system")
    assert alice_api.get(detail(own)).json()["key"] == "own"
    body = alice_api.get(detail(system)).json()
    assert (body["key"], body["is_system"], body["version"]) == ("system", True, 1)


@pytest.mark.django_db
def test_unknown_id_is_404_json(alice_api):
    response = alice_api.get(f"{URL}00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 404
    assert response.json() == {"message": "Not found.", "errors": {}}


# --- another account's template -----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method,action,body",
    [
        ("get", "", None),
        ("put", "", "full"),
        ("patch", "", {"name": "Hijacked"}),
        ("delete", "", None),
        ("post", "preview", {"channel": "sms"}),
        ("get", "versions", None),
        ("post", "restore", {"version": 1}),
    ],
)
def test_another_accounts_template_is_404_and_unchanged(bob, alice_api, method, action, body):
    # given
    template = make_template(bob)
    template_update(template=template, contents=SMS_ONLY)
    if body == "full":
        body = payload(key="reminder")
    # when
    response = getattr(alice_api, method)(detail(template, action), body, format="json")
    # then
    assert response.status_code == 404
    assert response.json() == {"message": "Not found.", "errors": {}}
    template.refresh_from_db()
    assert (template.name, template.is_active, template.current_version.number) == ("Reminder", True, 2)
    assert TemplateVersion.objects.count() == 2


# --- system templates are read-only -------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method,action,body",
    [
        ("put", "", "full"),
        ("patch", "", {"name": "Mine now"}),
        ("patch", "", {"contents": SMS_ONLY}),
        ("delete", "", None),
        ("post", "restore", {"version": 1}),
    ],
)
def test_system_templates_are_read_only(alice_api, method, action, body):
    # given
    template = make_template(None)
    if body == "full":
        body = payload(key="reminder")
    # when
    response = getattr(alice_api, method)(detail(template, action), body, format="json")
    # then
    assert response.status_code == 403
    assert response.json() == {
        "message": "System templates are read-only; create a template with the same key to override it.",
        "errors": {},
    }
    template.refresh_from_db()
    assert (template.name, template.is_active, template.account) == ("Reminder", True, None)
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_system_templates_can_be_previewed_and_their_versions_read(alice_api):
    template = make_template(None)
    preview = alice_api.post(detail(template, "preview"), {"channel": "sms"}, format="json")
    assert preview.status_code == 200
    assert preview.json()["body"] == "Reminder: Haircut soon"
    versions = alice_api.get(detail(template, "versions"))
    assert [v["number"] for v in versions.json()] == [1]


# --- update -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_put_with_new_contents_makes_a_new_version(alice, alice_api):
    # given
    template = make_template(alice, key="welcome")
    # when
    response = alice_api.put(detail(template), payload(name="Welcome!"), format="json")
    # then
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["name"], body["version"], body["description"]) == ("Welcome!", 2, "Sent after sign-up")
    assert [c["channel"] for c in body["contents"]] == ["email", "sms"]
    template.refresh_from_db()
    assert (template.current_version.number, template.current_version.created_by) == (2, alice)
    assert template.versions.count() == 2


@pytest.mark.django_db
def test_put_repeating_the_live_content_makes_no_version(alice, alice_api):
    # given
    alice_api.post(URL, payload(), format="json")
    template = Template.objects.get()
    # when
    response = alice_api.put(detail(template), payload(name="Renamed"), format="json")
    # then
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["version"]) == ("Renamed", 1)
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_patch_name_only_makes_no_version(alice, alice_api):
    template = make_template(alice)
    response = alice_api.patch(detail(template), {"name": "Renamed"}, format="json")
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["version"]) == ("Renamed", 1)
    template.refresh_from_db()
    assert (template.name, template.description, template.is_active) == ("Renamed", "", True)
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_patch_contents_makes_a_new_version_carrying_the_rest(alice, alice_api):
    template = make_template(alice)
    response = alice_api.patch(detail(template), {"contents": SMS_ONLY}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 2
    assert body["contents"] == SMS_ONLY
    assert body["defaults"] == {"start_time": "soon"}
    assert body["required_placeholders"] == ["event_name"]


@pytest.mark.django_db
def test_patch_with_a_syntax_error_is_400_and_changes_nothing(alice, alice_api):
    template = make_template(alice)
    response = alice_api.patch(
        detail(template), {"name": "Broken", "contents": [{"channel": "sms", "body": "{% if x %}"}]}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("Invalid input: contents[0]: body: template syntax error at line 1:")
    template.refresh_from_db()
    assert (template.name, template.current_version.number) == ("Reminder", 1)
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_patch_key_onto_an_existing_key_is_400(alice, alice_api):
    make_template(alice, key="taken")
    template = make_template(alice, key="mine")
    response = alice_api.patch(detail(template), {"key": "taken"}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"key": ["A template with key 'taken' already exists."]}
    template.refresh_from_db()
    assert template.key == "mine"


# --- delete -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_delete_archives_instead_of_deleting(alice, alice_api):
    # given
    template = make_template(alice)
    # when
    response = alice_api.delete(detail(template))
    # then
    assert response.status_code == 204
    template.refresh_from_db()
    assert template.is_active is False
    assert template.versions.count() == 1
    assert alice_api.get(detail(template)).json()["is_active"] is False
    assert [t["key"] for t in alice_api.get(URL, {"is_active": "true"}).json()["results"]] == []


@pytest.mark.django_db
def test_patch_is_active_restores_an_archived_template(alice, alice_api):
    template = make_template(alice)
    alice_api.delete(detail(template))
    response = alice_api.patch(detail(template), {"is_active": True}, format="json")
    assert response.status_code == 200
    assert (response.json()["is_active"], response.json()["version"]) == (True, 1)
    template.refresh_from_db()
    assert template.is_active is True


# --- preview ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_preview_email_merges_sample_context_and_sends_nothing(alice, alice_api):
    # given
    template = make_template(alice)
    # when
    response = alice_api.post(
        detail(template, "preview"),
        {"channel": "email", "context": {"event_name": "<Yoga & Tea>"}},
        format="json",
    )
    # then
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "channel": "email",
        "locale": "",
        "version": 1,
        "subject": "Reminder: <Yoga & Tea>",
        "body": "Hi Ana, <Yoga & Tea> is soon.",
        "html_body": "<p>Hi Ana, <b>&lt;Yoga &amp; Tea&gt;</b> is soon.</p>",
        "filled_defaults": ["start_time"],
        "encoding": "",
        "segments": 0,
        "options": {},
    }
    assert Notification.objects.count() == 0
    assert Delivery.objects.count() == 0
    assert mail.outbox == []
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_preview_sms_in_a_locale_reports_encoding_and_segments(alice, alice_api):
    template = make_template(alice)
    response = alice_api.post(
        detail(template, "preview"),
        {"channel": "sms", "locale": "es_MX", "context": {"start_time": "mañana"}},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["locale"], body["body"], body["encoding"], body["segments"]) == (
        "es",
        "Recordatorio: Haircut mañana",
        "GSM-7",
        1,
    )
    assert body["filled_defaults"] == []
    long = alice_api.post(
        detail(template, "preview"), {"channel": "sms", "context": {"event_name": "ü" * 150 + "ł"}}, format="json"
    )
    assert (long.json()["encoding"], long.json()["segments"]) == ("UCS-2", 3)
    assert Delivery.objects.count() == 0


@pytest.mark.django_db
def test_preview_of_an_older_version(alice, alice_api):
    # given
    template = make_template(alice)
    template_update(template=template, contents=SMS_ONLY)
    # when
    old = alice_api.post(detail(template, "preview"), {"channel": "sms", "version": 1}, format="json")
    new = alice_api.post(detail(template, "preview"), {"channel": "sms"}, format="json")
    # then
    assert (old.json()["version"], old.json()["body"]) == (1, "Reminder: Haircut soon")
    assert (new.json()["version"], new.json()["body"]) == (2, "New: Haircut")


@pytest.mark.django_db
def test_preview_of_a_missing_version_is_400(alice, alice_api):
    template = make_template(alice)
    response = alice_api.post(detail(template, "preview"), {"channel": "sms", "version": 5}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "message": "Invalid input: version: Template has no version 5.",
        "errors": {"version": ["Template has no version 5."]},
    }


@pytest.mark.django_db
def test_preview_with_a_blank_required_value_is_400_naming_it(alice, alice_api):
    template = make_template(alice)
    response = alice_api.post(
        detail(template, "preview"), {"channel": "sms", "context": {"event_name": " "}}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {"context": ["missing required placeholder(s): event_name"]}


@pytest.mark.django_db
def test_preview_of_a_channel_without_content_is_400(alice, alice_api):
    template = make_template(alice, contents=[{"channel": "sms", "body": "Hi"}])
    response = alice_api.post(detail(template, "preview"), {"channel": "email"}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"channel": ["Template 'reminder' has no email content."]}


@pytest.mark.django_db
def test_preview_of_an_unsafe_expression_is_400_and_leaks_nothing(alice, alice_api):
    # given a version saved before templates were rendered at save (the check now refuses
    # it), whose source is valid syntax but builds a huge string
    template = make_template(alice, contents=[{"channel": "sms", "body": "Hello"}])
    TemplateContent.objects.filter(version=template.current_version).update(
        body="{{ 'a' * 10**9 }}{{ x['__class__'] }}"
    )
    # when
    response = alice_api.post(detail(template, "preview"), {"channel": "sms"}, format="json")
    # then
    assert response.status_code == 400
    assert response.json()["errors"] == {"template": ["unsafe template expression refused: result of * too large"]}


@pytest.mark.django_db
def test_preview_of_an_inert_probe_returns_nothing_leaky(alice, alice_api):
    template = make_template(alice, contents=[{"channel": "sms", "body": "[{{ event_name['__class__'] }}]"}])
    response = alice_api.post(detail(template, "preview"), {"channel": "sms"}, format="json")
    assert response.status_code == 200
    assert response.json()["body"] == "[]"


# --- versions and restore -----------------------------------------------------------------


@pytest.mark.django_db
def test_versions_lists_every_version_newest_first(alice, alice_api):
    template = make_template(alice)
    template_update(template=template, contents=SMS_ONLY)
    response = alice_api.get(detail(template, "versions"))
    assert response.status_code == 200
    versions = response.json()
    assert [(v["number"], v["note"]) for v in versions] == [(2, "edited"), (1, "created")]
    assert versions[0]["contents"] == SMS_ONLY
    assert len(versions[1]["contents"]) == 3


@pytest.mark.django_db
def test_restore_makes_a_new_version_with_the_old_content(alice, alice_api):
    # given
    template = make_template(alice)
    v1_contents = alice_api.get(detail(template)).json()["contents"]
    template_update(template=template, contents=SMS_ONLY)
    # when
    response = alice_api.post(detail(template, "restore"), {"version": 1}, format="json")
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 3
    assert body["contents"] == v1_contents
    template.refresh_from_db()
    assert (template.current_version.note, template.current_version.created_by) == ("restored from v1", alice)
    assert TemplateVersion.objects.filter(template=template).count() == 3


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,errors",
    [
        ({"version": 9}, {"version": ["Template has no version 9."]}),
        ({"version": 0}, {"version": ["Ensure this value is greater than or equal to 1."]}),
        ({}, {"version": ["This field is required."]}),
    ],
)
def test_restore_of_a_missing_version_is_400_and_makes_no_version(alice, alice_api, body, errors):
    template = make_template(alice)
    response = alice_api.post(detail(template, "restore"), body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == errors
    template.refresh_from_db()
    assert template.current_version.number == 1
    assert TemplateVersion.objects.count() == 1
