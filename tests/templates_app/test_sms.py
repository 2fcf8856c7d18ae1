"""SMS channel rules: GSM-7 / UCS-2, segment counts, the 1,600-character limit."""

import pytest
from django.core.exceptions import ValidationError

from templates.models import Template, TemplateVersion
from templates.rendering import SMS_MAX_CHARS, RenderError, sms_info
from templates.services import template_create, template_render, template_update
from tests.factories import make_template

# --- encoding and segments ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text,units,segments",
    [
        ("a", 1, 1),
        ("a" * 160, 160, 1),
        ("a" * 161, 161, 2),
        ("a" * 306, 306, 2),
        ("a" * 307, 307, 3),
        ("a" * 459, 459, 3),
        ("a" * 460, 460, 4),
    ],
)
def test_gsm7_segment_boundaries(text, units, segments):
    info = sms_info(text)
    assert (info.encoding, info.characters, info.units, info.segments) == ("GSM-7", len(text), units, segments)


@pytest.mark.parametrize("extension_char", ["€", "{", "}", "[", "]", "~", "^", "\\", "|"])
def test_gsm7_extension_characters_count_double(extension_char):
    # 80 extension characters fill exactly one 160-septet segment; one more septet makes two.
    one = sms_info(extension_char * 80)
    two = sms_info(extension_char * 80 + "a")
    assert (one.encoding, one.characters, one.units, one.segments) == ("GSM-7", 80, 160, 1)
    assert (two.encoding, two.characters, two.units, two.segments) == ("GSM-7", 81, 161, 2)


def test_gsm7_extension_character_pushes_a_message_over_a_boundary():
    assert sms_info("a" * 159 + "€").segments == 2
    assert sms_info("a" * 158 + "€").segments == 1
    assert sms_info("a" * 304 + "€").segments == 2
    assert sms_info("a" * 305 + "€").segments == 3


def test_gsm7_basic_set_includes_accents_greek_and_newlines():
    info = sms_info("Café à Ñandú? ¿Sí? ΔΦΓ @£$¥ èéùìò\r\n")
    assert info.encoding == "UCS-2"  # the "í" is not in GSM 03.38
    info = sms_info("Café à Ñoño ¿Qué? ΔΦΓ @£$¥ èéùìò\r\n")
    assert (info.encoding, info.characters, info.units, info.segments) == ("GSM-7", 34, 34, 1)


@pytest.mark.parametrize("char", ["á", "ł", "ç", "Я", "中", "’"])
def test_characters_outside_gsm7_switch_to_ucs2(char):
    info = sms_info("Hello " + char)
    assert (info.encoding, info.characters, info.units, info.segments) == ("UCS-2", 7, 7, 1)


@pytest.mark.parametrize(
    "text,units,segments",
    [
        ("á" * 70, 70, 1),
        ("á" * 71, 71, 2),
        ("á" * 134, 134, 2),
        ("á" * 135, 135, 3),
        ("a" * 69 + "á", 70, 1),
        ("a" * 70 + "á", 71, 2),
    ],
)
def test_ucs2_segment_boundaries(text, units, segments):
    info = sms_info(text)
    assert (info.encoding, info.characters, info.units, info.segments) == ("UCS-2", len(text), units, segments)


@pytest.mark.parametrize(
    "text,characters,units,segments",
    [
        ("😀", 1, 2, 1),
        ("😀" * 35, 35, 70, 1),
        ("😀" * 36, 36, 72, 2),
        ("a" * 68 + "😀", 69, 70, 1),
        ("a" * 69 + "😀", 70, 71, 2),
    ],
)
def test_emoji_count_two_utf16_units(text, characters, units, segments):
    info = sms_info(text)
    assert (info.encoding, info.characters, info.units, info.segments) == ("UCS-2", characters, units, segments)


# --- rendered messages --------------------------------------------------------------------


@pytest.mark.django_db
def test_rendered_sms_carries_encoding_and_segments(alice):
    template = make_template(alice)
    rendered = template_render(
        version=template.current_version, channel="sms", locale="", context={"event_name": "Haircut"}
    )
    assert (rendered.body, rendered.encoding, rendered.segments) == ("Reminder: Haircut soon", "GSM-7", 1)


@pytest.mark.django_db
def test_context_outside_gsm7_makes_the_rendered_sms_ucs2(alice):
    template = make_template(alice)
    rendered = template_render(
        version=template.current_version, channel="sms", locale="", context={"event_name": "Café ☕" + "x" * 60}
    )
    assert len(rendered.body) == 81
    assert (rendered.encoding, rendered.segments) == ("UCS-2", 2)


@pytest.mark.django_db
def test_rendered_email_has_no_sms_fields(alice):
    template = make_template(alice)
    rendered = template_render(
        version=template.current_version, channel="email", locale="", context={"event_name": "Haircut"}
    )
    assert (rendered.encoding, rendered.segments) == ("", 0)


# --- the 1,600-character limit -------------------------------------------------------------


@pytest.mark.django_db
def test_raw_sms_body_at_the_limit_is_accepted(alice):
    template = template_create(
        account=alice, key="long", name="Long", contents=[{"channel": "sms", "body": "a" * SMS_MAX_CHARS}]
    )
    rendered = template_render(version=template.current_version, channel="sms", locale="", context={})
    assert (len(rendered.body), rendered.encoding, rendered.segments) == (1600, "GSM-7", 11)


@pytest.mark.django_db
def test_raw_sms_body_over_the_limit_is_refused_at_save(alice):
    # when
    with pytest.raises(ValidationError) as caught:
        template_create(account=alice, key="long", name="Long", contents=[{"channel": "sms", "body": "a" * 1601}])
    # then
    assert caught.value.message_dict == {"contents[0]": ["body: an SMS body may not exceed 1600 characters"]}
    assert Template.objects.count() == 0
    assert TemplateVersion.objects.count() == 0


@pytest.mark.django_db
def test_raw_sms_body_over_the_limit_is_refused_on_edit_and_nothing_changes(alice):
    # given
    template = make_template(alice)
    version = template.current_version
    # when
    with pytest.raises(ValidationError):
        template_update(template=template, contents=[{"channel": "sms", "body": "a" * 1601}])
    # then
    template.refresh_from_db()
    assert template.current_version == version
    assert template.versions.count() == 1


@pytest.mark.django_db
def test_rendered_sms_over_the_limit_is_refused_at_render(alice):
    # given a short template that expands past the limit
    template = template_create(
        account=alice, key="echo", name="Echo", contents=[{"channel": "sms", "body": "{{ text }}"}]
    )
    version = template.current_version
    # when
    with pytest.raises(RenderError) as caught:
        template_render(version=version, channel="sms", locale="", context={"text": "a" * 1601})
    # then
    assert caught.value.errors == {"message": ["The SMS body is 1601 characters; the limit is 1600."]}
    rendered = template_render(version=version, channel="sms", locale="", context={"text": "😀" * 1600})
    assert (len(rendered.body), rendered.encoding, rendered.segments) == (1600, "UCS-2", 48)


@pytest.mark.django_db
def test_sms_that_renders_empty_is_refused(alice):
    template = template_create(
        account=alice,
        key="maybe",
        name="Maybe",
        contents=[{"channel": "sms", "body": "{% if show %}Hi{% endif %}  "}],
    )
    with pytest.raises(RenderError) as caught:
        template_render(version=template.current_version, channel="sms", locale="", context={"show": False})
    assert caught.value.errors == {"message": ["The SMS body is empty."]}
