"""Template writes and reads: versions, restore, validation, keys, locales, resolution."""

import pytest
from django.core.exceptions import ValidationError

from templates.models import Template, TemplateContent, TemplateVersion
from templates.selectors import template_get, template_list, template_resolve, template_versions
from templates.services import (
    content_as_dict,
    content_select,
    locale_candidates,
    normalize_locale,
    template_archive,
    template_create,
    template_render,
    template_restore,
    template_update,
)
from tests.factories import make_template


def contents_of(version: TemplateVersion) -> list[dict]:
    return sorted((content_as_dict(c) for c in version.contents.all()), key=lambda c: (c["channel"], c["locale"]))


NEW_CONTENTS = [
    {
        "channel": "sms",
        "locale": "",
        "subject": "",
        "body": "Changed: {{ event_name }}",
        "html_body": "",
        "options": {},
    },
]

# --- locales ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "locale,expected",
    [
        ("es-MX", ["es-mx", "es", ""]),
        ("es_MX", ["es-mx", "es", ""]),
        (" ES_mx ", ["es-mx", "es", ""]),
        ("es", ["es", ""]),
        ("zh-Hant-TW", ["zh-hant-tw", "zh-hant", "zh", ""]),
        ("", [""]),
        (None, [""]),
    ],
)
def test_locale_candidates(locale, expected):
    assert locale_candidates(locale) == expected


def test_normalize_locale():
    assert normalize_locale("pt_BR") == "pt-br"
    assert normalize_locale(None) == ""


@pytest.fixture
def localized(alice):
    return template_create(
        account=alice,
        key="localized",
        name="Localized",
        contents=[
            {"channel": "sms", "locale": "", "body": "Hello {{ name }}"},
            {"channel": "sms", "locale": "es", "body": "Hola {{ name }}"},
            {"channel": "sms", "locale": "es_MX", "body": "Qué onda {{ name }}"},
            {"channel": "email", "locale": "es", "subject": "Asunto", "body": "Cuerpo"},
        ],
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "locale,content_locale,body",
    [
        ("es-MX", "es-mx", "Qué onda Ana"),
        ("es_MX", "es-mx", "Qué onda Ana"),
        ("ES-mx", "es-mx", "Qué onda Ana"),
        ("es-AR", "es", "Hola Ana"),
        ("es", "es", "Hola Ana"),
        ("ES", "es", "Hola Ana"),
        ("fr-FR", "", "Hello Ana"),
        ("", "", "Hello Ana"),
        (None, "", "Hello Ana"),
    ],
)
def test_locale_fallback_es_mx_then_es_then_default(localized, locale, content_locale, body):
    rendered = template_render(version=localized.current_version, channel="sms", locale=locale, context={"name": "Ana"})
    assert (rendered.locale, rendered.body) == (content_locale, body)


@pytest.mark.django_db
def test_locale_is_stored_normalized(localized):
    locales = set(localized.current_version.contents.filter(channel="sms").values_list("locale", flat=True))
    assert locales == {"", "es", "es-mx"}


@pytest.mark.django_db
def test_channel_without_a_default_locale_has_no_content_for_other_locales(localized):
    version = localized.current_version
    assert content_select(version=version, channel="email", locale="es-MX").locale == "es"
    assert content_select(version=version, channel="email", locale="en") is None


@pytest.mark.django_db
def test_same_channel_and_locale_twice_is_refused(alice):
    with pytest.raises(ValidationError) as caught:
        template_create(
            account=alice,
            key="dup",
            name="Dup",
            contents=[
                {"channel": "sms", "locale": "es-MX", "body": "a"},
                {"channel": "sms", "locale": "es_mx", "body": "b"},
            ],
        )
    assert caught.value.message_dict == {"contents[1]": ["duplicate content for sms/es-mx"]}
    assert Template.objects.count() == 0


# --- create validation --------------------------------------------------------------------


@pytest.mark.django_db
def test_create_makes_version_one(alice):
    # when
    template = make_template(alice, created_by=alice)
    # then
    version = template.current_version
    assert (version.number, version.note, version.created_by) == (1, "created", alice)
    assert template.versions.count() == 1
    assert TemplateContent.objects.filter(version=version).count() == 3
    assert version.required_placeholders == ["event_name"]
    assert version.defaults == {"start_time": "soon"}
    assert version.sample_context == {"event_name": "Haircut", "invitee_name": "Ana"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "contents,errors",
    [
        ([], {"contents": ["At least one channel's content is required."]}),
        ([{"channel": "fax", "body": "x"}], {"contents[0]": ["unknown channel 'fax'"]}),
        ([{"channel": "sms", "body": "   "}], {"contents[0]": ["body: may not be blank"]}),
        ([{"channel": "email", "body": "x"}], {"contents[0]": ["subject: an email needs a subject"]}),
        (
            [{"channel": "email", "subject": "Hi {{ name", "body": "x"}],
            {
                "contents[0]": [
                    "subject: template syntax error at line 1: unexpected end of template, expected 'end of print statement'."
                ]
            },
        ),
        (
            [{"channel": "email", "subject": "S", "body": "x", "html_body": "<p>\n{% if x %}\n</p>"}],
            {
                "contents[0]": [
                    "html_body: template syntax error at line 2: Unexpected end of template. Jinja was looking for the "
                    "following tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'."
                ]
            },
        ),
    ],
)
def test_invalid_contents_are_refused_with_nothing_written(alice, contents, errors):
    with pytest.raises(ValidationError) as caught:
        template_create(account=alice, key="bad", name="Bad", contents=contents)
    assert caught.value.message_dict == errors
    assert Template.objects.count() == 0
    assert TemplateVersion.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields,errors",
    [
        ({"required_placeholders": ["not valid"]}, {"required_placeholders": ["Must be a list of placeholder names."]}),
        ({"required_placeholders": "event_name"}, {"required_placeholders": ["Must be a list of placeholder names."]}),
        ({"defaults": ["x"]}, {"defaults": ["Must be an object of placeholder -> fallback value."]}),
        ({"sample_context": ["x"]}, {"sample_context": ["Must be an object."]}),
    ],
)
def test_invalid_placeholders_are_refused(alice, fields, errors):
    with pytest.raises(ValidationError) as caught:
        make_template(alice, **fields)
    assert caught.value.message_dict == errors
    assert Template.objects.count() == 0


# --- keys ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_duplicate_key_in_one_account_is_refused(alice):
    make_template(alice, key="reminder")
    with pytest.raises(ValidationError) as caught:
        make_template(alice, key="reminder")
    assert caught.value.message_dict == {"key": ["A template with key 'reminder' already exists."]}
    assert Template.objects.count() == 1
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_same_key_is_allowed_in_two_accounts_and_as_a_system_template(alice, bob):
    make_template(alice, key="reminder")
    make_template(bob, key="reminder")
    make_template(None, key="reminder")
    assert Template.objects.filter(key="reminder").count() == 3


@pytest.mark.django_db
def test_duplicate_system_key_is_refused():
    make_template(None, key="reminder")
    with pytest.raises(ValidationError):
        make_template(None, key="reminder")
    assert Template.objects.count() == 1


@pytest.mark.django_db
def test_renaming_a_key_onto_another_is_refused_and_nothing_changes(alice):
    make_template(alice, key="reminder")
    other = make_template(alice, key="follow_up")
    with pytest.raises(ValidationError) as caught:
        template_update(template=other, key="reminder", name="Renamed")
    assert caught.value.message_dict == {"key": ["A template with key 'reminder' already exists."]}
    other.refresh_from_db()
    assert (other.key, other.name) == ("follow_up", "Follow Up")


# --- versions -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_content_edit_makes_a_new_version_and_keeps_the_old_one_unchanged(alice, bob):
    # given
    template = make_template(alice)
    v1 = template.current_version
    v1_contents = contents_of(v1)
    # when
    template_update(template=template, updated_by=bob, contents=NEW_CONTENTS)
    # then
    template.refresh_from_db()
    v2 = template.current_version
    assert (v2.number, v2.note, v2.created_by) == (2, "edited", bob)
    assert contents_of(v2) == NEW_CONTENTS
    # the unchanged parts are carried over
    assert (v2.required_placeholders, v2.defaults, v2.sample_context) == (
        v1.required_placeholders,
        v1.defaults,
        v1.sample_context,
    )
    # the old version is untouched
    assert contents_of(TemplateVersion.objects.get(pk=v1.pk)) == v1_contents
    assert list(template.versions.values_list("number", flat=True)) == [2, 1]


@pytest.mark.django_db
def test_each_content_edit_increments_the_number(alice):
    template = make_template(alice)
    for n in range(2, 6):
        template_update(template=template, contents=[{"channel": "sms", "body": f"Body {n}"}])
        template.refresh_from_db()
        assert template.current_version.number == n
    assert template.versions.count() == 5


@pytest.mark.django_db
def test_placeholder_edit_makes_a_version_with_the_contents_carried_over(alice):
    template = make_template(alice)
    v1_contents = contents_of(template.current_version)
    template_update(template=template, defaults={"start_time": "later"})
    template.refresh_from_db()
    v2 = template.current_version
    assert (v2.number, v2.defaults) == (2, {"start_time": "later"})
    assert contents_of(v2) == v1_contents


@pytest.mark.django_db
def test_meta_only_edit_makes_no_version(alice):
    # given
    template = make_template(alice)
    v1 = template.current_version
    # when
    template_update(template=template, name="Renamed", description="Now described", category="marketing")
    # then
    template.refresh_from_db()
    assert (template.name, template.description, template.category) == ("Renamed", "Now described", "marketing")
    assert template.current_version == v1
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_edit_with_the_same_content_makes_no_version(alice):
    # given a full replacement (as a PUT sends) that only renames
    template = make_template(alice)
    v1 = template.current_version
    same = {
        "required_placeholders": v1.required_placeholders,
        "defaults": v1.defaults,
        "sample_context": v1.sample_context,
        "contents": contents_of(v1)[::-1],
    }
    # when
    template_update(template=template, name="Renamed", **same)
    # then
    template.refresh_from_db()
    assert template.name == "Renamed"
    assert template.current_version == v1
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_unknown_field_is_refused(alice):
    template = make_template(alice)
    with pytest.raises(ValidationError) as caught:
        template_update(template=template, account=None, body="x")
    assert caught.value.message_dict == {"account": ["Unknown field."], "body": ["Unknown field."]}
    template.refresh_from_db()
    assert template.account == alice


@pytest.mark.django_db
def test_syntax_error_on_edit_is_refused_with_the_line_and_nothing_changes(alice):
    # given
    template = make_template(alice)
    v1 = template.current_version
    # when
    with pytest.raises(ValidationError) as caught:
        template_update(
            template=template,
            name="Should not stick",
            contents=[{"channel": "sms", "body": "line one\nline two\n{{ event_name }"}],
        )
    # then
    assert caught.value.message_dict == {"contents[0]": ["body: template syntax error at line 3: unexpected '}'"]}
    template.refresh_from_db()
    assert template.name == "Reminder"
    assert template.current_version == v1
    assert TemplateVersion.objects.count() == 1


# --- restore ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_restore_makes_a_new_version_equal_to_the_old_one(alice):
    # given
    template = make_template(alice)
    v1 = template.current_version
    template_update(template=template, contents=NEW_CONTENTS, defaults={"start_time": "later"})
    # when
    v3 = template_restore(template=template, number=1, restored_by=alice)
    # then
    template.refresh_from_db()
    assert template.current_version == v3
    assert (v3.number, v3.note, v3.created_by) == (3, "restored from v1", alice)
    assert contents_of(v3) == contents_of(v1)
    assert (v3.required_placeholders, v3.defaults, v3.sample_context) == (
        v1.required_placeholders,
        v1.defaults,
        v1.sample_context,
    )
    assert list(template.versions.values_list("number", flat=True)) == [3, 2, 1]
    rendered = template_render(version=v3, channel="sms", locale="es", context={"event_name": "Yoga"})
    assert rendered.body == "Recordatorio: Yoga soon"


@pytest.mark.django_db
def test_restore_of_a_missing_version_is_refused_and_nothing_changes(alice):
    template = make_template(alice)
    v1 = template.current_version
    with pytest.raises(ValidationError) as caught:
        template_restore(template=template, number=7)
    assert caught.value.message_dict == {"version": ["Template has no version 7."]}
    template.refresh_from_db()
    assert template.current_version == v1
    assert TemplateVersion.objects.count() == 1


@pytest.mark.django_db
def test_restore_cannot_reach_another_templates_version(alice):
    template = make_template(alice)
    other = make_template(alice, key="other")
    template_update(template=other, contents=NEW_CONTENTS)
    with pytest.raises(ValidationError):
        template_restore(template=template, number=2)
    assert template.versions.count() == 1


# --- archive and reads --------------------------------------------------------------------


@pytest.mark.django_db
def test_archive_keeps_the_template_and_its_versions(alice):
    template = make_template(alice)
    template_update(template=template, contents=NEW_CONTENTS)
    template_archive(template=template)
    template.refresh_from_db()
    assert template.is_active is False
    assert template.versions.count() == 2


@pytest.mark.django_db
def test_template_list_has_own_and_system_templates_only(alice, bob):
    own = make_template(alice, key="own")
    system = make_template(None, key="system")
    make_template(bob, key="bobs")
    assert set(template_list(account=alice)) == {own, system}
    assert template_get(account=alice, template_id=system.pk) == system
    assert template_get(account=bob, template_id=own.pk) is None


@pytest.mark.django_db
def test_resolve_prefers_the_accounts_own_key_over_the_system_default(alice, bob):
    own = make_template(alice, key="reminder")
    system = make_template(None, key="reminder")
    assert template_resolve(account=alice, reference="reminder") == own
    assert template_resolve(account=bob, reference="reminder") == system
    assert template_resolve(account=alice, reference=str(system.pk)) == system
    assert template_resolve(account=bob, reference=str(own.pk)) is None
    assert template_resolve(account=alice, reference="missing") is None


@pytest.mark.django_db
def test_resolve_skips_archived_templates(alice):
    own = make_template(alice, key="reminder")
    system = make_template(None, key="reminder")
    template_archive(template=own)
    assert template_resolve(account=alice, reference="reminder") == system
    assert template_resolve(account=alice, reference=str(own.pk)) is None


@pytest.mark.django_db
def test_template_versions_are_newest_first(alice):
    template = make_template(alice)
    template_update(template=template, contents=NEW_CONTENTS)
    template_restore(template=template, number=1)
    assert [v.number for v in template_versions(template=template)] == [3, 2, 1]
