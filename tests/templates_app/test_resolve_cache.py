"""A process remembers what a template name resolved to for BEACON_TEMPLATE_CACHE_SECONDS;
a change through the template services is seen at once."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from templates import selectors
from templates.models import Template
from templates.selectors import template_resolve
from templates.services import template_archive, template_update
from tests.factories import make_template

pytestmark = pytest.mark.django_db


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(selectors.time, "monotonic", lambda: now[0])
    return now


def resolve(account, reference="reminder"):
    with CaptureQueriesContext(connection) as ctx:
        template = template_resolve(account=account, reference=reference)
    return template, len(ctx.captured_queries)


def test_a_resolved_name_is_remembered(alice):
    template = make_template(alice)
    assert resolve(alice) == (template, 1)
    assert resolve(alice) == (template, 0)
    assert resolve(alice, str(template.pk)) == (template, 1)


def test_a_new_version_is_used_by_the_next_send_at_once(alice):
    template = make_template(alice)
    first_version = resolve(alice)[0].current_version_id
    template_update(template=template, defaults={"start_time": "later"})
    resolved, queries = resolve(alice)
    assert queries == 1
    assert resolved.current_version_id != first_version


def test_an_archived_template_is_refused_at_once(alice):
    template = make_template(alice)
    assert resolve(alice)[0] == template
    template_archive(template=template)
    assert resolve(alice) == (None, 1)


def test_a_change_made_elsewhere_is_seen_after_the_cache_time(alice, settings, clock):
    settings.BEACON_TEMPLATE_CACHE_SECONDS = 5
    template = make_template(alice)
    assert resolve(alice)[0] == template
    Template.objects.filter(pk=template.pk).update(is_active=False)  # another process
    clock[0] += 4
    assert resolve(alice) == (template, 0)
    clock[0] += 2
    assert resolve(alice) == (None, 1)


def test_accounts_do_not_share_what_they_resolved(alice, bob):
    own = make_template(alice)
    assert resolve(alice)[0] == own
    assert resolve(bob) == (None, 1)
