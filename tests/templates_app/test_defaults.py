"""The shared booking-lifecycle templates and `load_default_templates`."""

import copy
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from templates.models import Template, TemplateVersion
from templates.services import system_templates_load, template_render
from tests.factories import make_template

DEFAULTS_FILE = Path(__file__).resolve().parents[2] / "templates" / "defaults" / "booking.json"
DEFINITIONS = json.loads(DEFAULTS_FILE.read_text())
KEYS = [
    "booking_cancellation",
    "booking_confirmation",
    "booking_reminder",
    "booking_rescheduled",
    "daily_agenda",
    "follow_up",
]


def load() -> str:
    out = StringIO()
    call_command("load_default_templates", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_load_creates_six_system_templates():
    # when
    output = load()
    # then
    assert output == "Default templates: 6 created, 0 updated, 0 unchanged.\n"
    templates = list(Template.objects.order_by("key"))
    assert [t.key for t in templates] == KEYS
    assert all(t.account_id is None and t.is_active for t in templates)
    assert [t.current_version.number for t in templates] == [1] * 6
    assert TemplateVersion.objects.count() == 6


@pytest.mark.django_db
def test_loading_again_reports_unchanged_and_makes_no_versions():
    # given
    load()
    versions = set(TemplateVersion.objects.values_list("pk", flat=True))
    # when
    output = load()
    # then
    assert output == "Default templates: 0 created, 0 updated, 6 unchanged.\n"
    assert Template.objects.count() == 6
    assert set(TemplateVersion.objects.values_list("pk", flat=True)) == versions


@pytest.mark.django_db
def test_a_changed_definition_makes_one_new_version():
    # given
    load()
    definitions = copy.deepcopy(DEFINITIONS)
    definitions[1]["contents"][2]["body"] = "Reminder: {{ event_name }} at {{ start_time }}."
    # when
    counts = system_templates_load(definitions=definitions)
    # then
    assert counts == {"created": 0, "updated": 1, "unchanged": 5}
    reminder = Template.objects.get(key="booking_reminder")
    assert reminder.current_version.number == 2
    assert TemplateVersion.objects.count() == 7
    rendered = template_render(
        version=reminder.current_version,
        channel="sms",
        locale="",
        context={"event_name": "Yoga", "start_time": "9:00"},
    )
    assert rendered.body == "Reminder: Yoga at 9:00."


@pytest.mark.django_db
def test_a_renamed_definition_is_updated_without_a_new_version():
    # given
    load()
    definitions = copy.deepcopy(DEFINITIONS)
    definitions[0]["name"] = "Booking confirmed"
    # when
    counts = system_templates_load(definitions=definitions)
    # then
    assert counts == {"created": 0, "updated": 1, "unchanged": 5}
    confirmation = Template.objects.get(key="booking_confirmation")
    assert (confirmation.name, confirmation.current_version.number) == ("Booking confirmed", 1)
    assert TemplateVersion.objects.count() == 6


@pytest.mark.django_db
def test_loading_leaves_an_accounts_override_with_the_same_key_alone(alice):
    # given
    load()
    own = make_template(alice, key="booking_reminder")
    # when
    output = load()
    # then
    assert output == "Default templates: 0 created, 0 updated, 6 unchanged.\n"
    own.refresh_from_db()
    assert (own.account, own.name, own.current_version.number) == (alice, "Booking Reminder", 1)
    assert Template.objects.filter(key="booking_reminder").count() == 2


def _cases():
    for definition in DEFINITIONS:
        for content in definition["contents"]:
            yield pytest.param(
                definition["key"],
                content["channel"],
                content["locale"],
                id=f"{definition['key']}-{content['channel']}-{content['locale'] or 'default'}",
            )


@pytest.mark.django_db
@pytest.mark.parametrize("key,channel,locale", list(_cases()))
def test_every_default_renders_on_each_channel_and_locale_with_its_sample_context(key, channel, locale):
    # given
    load()
    version = Template.objects.get(key=key).current_version
    # when
    rendered = template_render(version=version, channel=channel, locale=locale, context=version.sample_context)
    # then
    assert (rendered.channel, rendered.locale) == (channel, locale)
    assert rendered.body.strip()
    assert rendered.filled_defaults == []
    for marker in ("TBD", "Guest", "{{", "{%", "None", "Undefined"):
        assert marker not in rendered.body + rendered.subject + rendered.html_body
    if channel == "sms":
        assert (rendered.encoding, rendered.segments) == ("GSM-7", 1)
    else:
        assert rendered.subject
        assert (rendered.encoding, rendered.segments) == ("", 0)


@pytest.mark.django_db
def test_confirmation_renders_exactly():
    load()
    version = Template.objects.get(key="booking_confirmation").current_version
    email = template_render(version=version, channel="email", locale="es-MX", context=version.sample_context)
    assert email.locale == "es"
    assert email.subject == "Confirmada: Haircut el Tue 3 Mar, 10:00"
    assert email.html_body == (
        "<p>Hola Ana García:</p><p>Tu reserva de <strong>Haircut</strong> con Studio 6 el Tue 3 Mar, 10:00 "
        "está confirmada.</p>"
    )
    sms = template_render(
        version=version, channel="sms", locale="en-US", context={"event_name": "Yoga", "start_time": "Mon 9:00"}
    )
    assert sms.body == "Confirmed: Yoga with your host on Mon 9:00."
    assert sms.filled_defaults == ["organizer_name"]


@pytest.mark.django_db
def test_daily_agenda_lists_bookings_and_handles_none():
    load()
    version = Template.objects.get(key="daily_agenda").current_version
    full = template_render(version=version, channel="email", locale="", context=version.sample_context)
    assert full.body == "Hi Studio 6,\n\n10:00  Haircut with Ana García\n"
    sms = template_render(version=version, channel="sms", locale="", context=version.sample_context)
    assert sms.body == "Tue 3 Mar: 1 booking(s). First at 10:00."
    empty = template_render(version=version, channel="sms", locale="", context={"date": "Wed 4 Mar", "bookings": []})
    assert empty.body == "Wed 4 Mar: 0 booking(s). First at none."


@pytest.mark.django_db
def test_fallbacks_speak_the_language_of_the_content():
    # given: the shipped confirmation, rendered without the optional organizer_name
    load()
    version = Template.objects.get(key="booking_confirmation").current_version
    context = {"event_name": "Haircut", "start_time": "Tue 3 Mar, 10:00"}
    # when
    spanish = template_render(version=version, channel="sms", locale="es-MX", context=context)
    english = template_render(version=version, channel="sms", locale="en", context=context)
    # then
    assert spanish.body == "Confirmada: Haircut con tu anfitrión el Tue 3 Mar, 10:00."
    assert english.body == "Confirmed: Haircut with your host on Tue 3 Mar, 10:00."


@pytest.mark.django_db
def test_built_in_fallbacks_follow_the_content_locale_too(alice):
    from templates.services import template_create

    template = template_create(
        account=alice,
        key="hola",
        name="Hola",
        required_placeholders=[],
        defaults={},
        sample_context={},
        contents=[
            {"channel": "sms", "locale": "", "body": "Hi {{ invitee_name }}, {{ start_time }}"},
            {"channel": "sms", "locale": "es", "body": "Hola {{ invitee_name }}, {{ start_time }}"},
        ],
    )
    spanish = template_render(version=template.current_version, channel="sms", locale="es-AR", context={})
    english = template_render(version=template.current_version, channel="sms", locale="", context={})
    assert (spanish.body, english.body) == ("Hola Invitado, por confirmar", "Hi Guest, TBD")


@pytest.mark.django_db
def test_defaults_by_locale_are_accepted_through_the_api(alice_api):
    body = {
        "key": "localized",
        "name": "Localized",
        "defaults": {"organizer_name": {"": "your host", "es": "tu anfitrión"}},
        "contents": [{"channel": "sms", "locale": "es", "body": "Con {{ organizer_name }}"}],
    }
    created = alice_api.post("/api/v1/notifications/templates/", body, format="json")
    assert created.status_code == 201, created.json()
    preview = alice_api.post(
        f"/api/v1/notifications/templates/{created.json()['id']}/preview/",
        {"channel": "sms", "locale": "es"},
        format="json",
    )
    assert preview.json()["body"] == "Con tu anfitrión"
