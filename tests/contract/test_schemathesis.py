"""The API against its own OpenAPI schema, with schemathesis: generated requests to every
operation, as an account with a token, must get no server error and answers that the
schema describes (status codes, content types, headers, bodies)."""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application

# A few examples per operation in the suite; `make fuzz` asks for many more.
EXAMPLES = int(os.environ.get("BEACON_FUZZ_EXAMPLES", "5"))
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
# Not checked, on purpose: that every schema-valid body is accepted (cross-field rules the
# schema cannot state, a template or a message and not both, refuse some with a 400), and
# that every schema-violating query is refused (list filters treat an empty value,
# ?notification=, as no filter, as django-filter does).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """Called in-process, the WSGI app would close the test's database connection at the
    end of each request (Django's test client stops that the same way)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def _names_do_not_resolve(monkeypatch):
    """Fuzzed webhook URLs name random hosts: the URL guard's DNS lookups answer "no such
    name" at once instead of waiting on a resolver (the run stays offline and quick)."""
    monkeypatch.setattr("providers.urlguard._resolve", lambda host, port: [])


@pytest.fixture
def token(db):
    from accounts.services import api_token_issue
    from tests.factories import make_template

    account_token, raw = api_token_issue(username="contract", create=True)
    make_template(account_token.account)
    return raw


@pytest.fixture
def running_service(db, monkeypatch):
    """A worker that answers and a fresh sweep, as a running service has: /health/ is 200."""
    from django.utils import timezone

    from config.celery import app
    from notifications.models import Heartbeat

    monkeypatch.setattr(app.control, "ping", lambda timeout: [{"celery@contract": {"ok": "pong"}}])
    Heartbeat.objects.update_or_create(name="sweep", defaults={"at": timezone.now()})


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.django_db
def test_the_api_keeps_to_its_schema(case, token, running_service):
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
