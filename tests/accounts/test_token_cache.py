"""A process remembers a valid token for BEACON_TOKEN_CACHE_SECONDS, and forgets it at once
when it is revoked or its account changes."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import services
from accounts.models import ApiToken
from accounts.services import api_token_authenticate, api_token_issue, api_token_revoke

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(services.time, "monotonic", clock.monotonic)
    return clock


def lookups(raw: str) -> tuple[object, int]:
    with CaptureQueriesContext(connection) as ctx:
        account = api_token_authenticate(raw_token=raw)
    return account, sum(q["sql"].startswith("SELECT") and "accounts_apitoken" in q["sql"] for q in ctx.captured_queries)


def test_a_remembered_token_is_not_looked_up_again(alice):
    _, raw = api_token_issue(username="alice")
    assert lookups(raw)[0] == alice
    assert lookups(raw) == (alice, 0)


def test_a_remembered_token_is_looked_up_again_after_the_cache_time(alice, settings, clock):
    settings.BEACON_TOKEN_CACHE_SECONDS = 10
    _, raw = api_token_issue(username="alice")
    assert lookups(raw)[0] == alice
    clock.now += 9
    assert lookups(raw) == (alice, 0)
    clock.now += 2
    assert lookups(raw) == (alice, 1)


def test_revoking_forgets_the_token_at_once(alice):
    token, raw = api_token_issue(username="alice")
    assert lookups(raw)[0] == alice
    api_token_revoke(token=token)
    assert api_token_authenticate(raw_token=raw) is None


def test_deactivating_the_account_forgets_its_tokens_at_once(alice):
    _, raw = api_token_issue(username="alice")
    assert lookups(raw)[0] == alice
    alice.is_active = False
    alice.save()
    assert api_token_authenticate(raw_token=raw) is None


def test_a_cache_time_of_zero_looks_up_every_time(alice, settings):
    settings.BEACON_TOKEN_CACHE_SECONDS = 0
    _, raw = api_token_issue(username="alice")
    assert lookups(raw) == (alice, 1)
    assert lookups(raw) == (alice, 1)


def test_a_token_revoked_elsewhere_is_refused_once_the_cache_time_has_passed(alice, settings, clock):
    # given: revoked behind this process's back (by another process)
    settings.BEACON_TOKEN_CACHE_SECONDS = 5
    _, raw = api_token_issue(username="alice")
    assert lookups(raw)[0] == alice
    ApiToken.objects.update(revoked_at="2026-01-01T00:00:00Z")
    assert lookups(raw) == (alice, 0)
    clock.now += 6
    assert api_token_authenticate(raw_token=raw) is None
