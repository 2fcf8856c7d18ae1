import factory
from django.contrib.auth import get_user_model

from templates.services import template_create


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")


REMINDER_CONTENTS = [
    {
        "channel": "email",
        "locale": "",
        "subject": "Reminder: {{ event_name }}",
        "body": "Hi {{ invitee_name }}, {{ event_name }} is {{ start_time }}.",
        "html_body": "<p>Hi {{ invitee_name }}, <b>{{ event_name }}</b> is {{ start_time }}.</p>",
    },
    {"channel": "sms", "locale": "", "body": "Reminder: {{ event_name }} {{ start_time }}"},
    {"channel": "sms", "locale": "es", "body": "Recordatorio: {{ event_name }} {{ start_time }}"},
]


def make_template(account, key="reminder", **overrides):
    """A template through the service, as the API makes them: email + SMS content."""
    fields = {
        "name": key.replace("_", " ").title(),
        "template_type": "custom",
        "required_placeholders": ["event_name"],
        "defaults": {"start_time": "soon"},
        "sample_context": {"event_name": "Haircut", "invitee_name": "Ana"},
        "contents": REMINDER_CONTENTS,
    }
    fields.update(overrides)
    return template_create(account=account, key=key, **fields)
