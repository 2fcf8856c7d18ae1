"""API tokens: Bearer and Token schemes, JSON 401s, only a digest stored, issue_api_token."""

import hashlib
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import api_token_authenticate, api_token_issue, api_token_revoke

pytestmark = pytest.mark.django_db

LOGS_URL = "/api/v1/notifications/logs/"


def client_with(header: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


@pytest.mark.parametrize("scheme", ["Bearer", "Token", "bearer", "TOKEN"])
def test_both_schemes_authenticate(alice, scheme):
    _, raw = api_token_issue(username="alice")
    response = client_with(f"{scheme} {raw}").get(LOGS_URL)
    assert response.status_code == 200
    assert response.json()["count"] == 0


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer bcn_not-a-real-token", "Invalid or revoked token."),
        ("Token bcn_not-a-real-token", "Invalid or revoked token."),
        ("Bearer", "Invalid Authorization header: expected '<scheme> <token>'."),
        ("Bearer two parts", "Invalid Authorization header: expected '<scheme> <token>'."),
    ],
)
def test_a_bad_token_is_a_json_401(alice, header, message):
    response = client_with(header).get(LOGS_URL)
    assert response.status_code == 401
    assert response.json() == {"message": message, "errors": {}}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_no_credentials_is_a_json_401(anon_api):
    response = anon_api.get(LOGS_URL)
    assert response.status_code == 401
    assert response.json() == {"message": "Authentication credentials were not provided.", "errors": {}}


def test_another_scheme_is_not_ours(alice):
    response = client_with("Basic YWxpY2U6c2VjcmV0").get(LOGS_URL)
    assert response.status_code == 401
    assert response.json()["message"] == "Authentication credentials were not provided."


def test_a_revoked_token_is_401(alice):
    token, raw = api_token_issue(username="alice")
    client = client_with(f"Bearer {raw}")
    assert client.get(LOGS_URL).status_code == 200
    api_token_revoke(token=token)
    response = client.get(LOGS_URL)
    assert response.status_code == 401
    assert response.json() == {"message": "Invalid or revoked token.", "errors": {}}


def test_revoking_one_token_leaves_the_others(alice):
    first, first_raw = api_token_issue(username="alice")
    _, second_raw = api_token_issue(username="alice")
    api_token_revoke(token=first)
    assert client_with(f"Bearer {first_raw}").get(LOGS_URL).status_code == 401
    assert client_with(f"Bearer {second_raw}").get(LOGS_URL).status_code == 200


def test_an_inactive_accounts_token_is_401(alice):
    _, raw = api_token_issue(username="alice")
    alice.is_active = False
    alice.save()
    assert client_with(f"Bearer {raw}").get(LOGS_URL).status_code == 401


def test_a_token_acts_as_its_own_account_only(alice, bob):
    _, raw = api_token_issue(username="bob")
    assert api_token_authenticate(raw_token=raw) == bob
    assert api_token_authenticate(raw_token=raw + "x") is None


def test_only_the_sha256_digest_is_stored(alice):
    # when
    token, raw = api_token_issue(username="alice", name="frontend")
    # then
    row = ApiToken.objects.get()
    assert row.digest == hashlib.sha256(raw.encode()).hexdigest()
    assert row.prefix == raw[:12]
    assert raw.startswith("bcn_")
    assert len(raw) > 40
    stored = [str(value) for value in ApiToken.objects.values().get().values()]
    assert raw not in stored
    assert (row.account, row.name, row.revoked_at, row.last_used_at) == (alice, "frontend", None, None)
    assert raw not in str(row)


def test_each_token_is_unique(alice):
    raws = {api_token_issue(username="alice")[1] for _ in range(5)}
    assert len(raws) == 5
    assert ApiToken.objects.filter(account=alice).count() == 5


def test_use_records_last_used_at(alice):
    token, raw = api_token_issue(username="alice")
    client_with(f"Bearer {raw}").get(LOGS_URL)
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_issue_api_token_with_create_prints_a_working_token(db):
    # when
    out = StringIO()
    call_command("issue_api_token", "dave", "--create", "--name", "ci", stdout=out)
    # then
    lines = out.getvalue().splitlines()
    raw = lines[-1]
    dave = get_user_model().objects.get(username="dave")
    token = ApiToken.objects.get(account=dave)
    assert lines[0] == f"Issued token {token.prefix}… for dave:"
    assert token.digest == hashlib.sha256(raw.encode()).hexdigest()
    assert token.name == "ci"
    response = client_with(f"Bearer {raw}").get(LOGS_URL)
    assert response.status_code == 200


def test_issue_api_token_for_an_existing_account(alice):
    out = StringIO()
    call_command("issue_api_token", "alice", stdout=out)
    raw = out.getvalue().splitlines()[-1]
    assert api_token_authenticate(raw_token=raw) == alice
    assert get_user_model().objects.filter(username="alice").count() == 1


def test_issue_api_token_without_create_refuses_an_unknown_account(db):
    with pytest.raises(CommandError, match="No account named 'dave'; pass --create to create it."):
        call_command("issue_api_token", "dave", stdout=StringIO())
    assert not get_user_model().objects.filter(username="dave").exists()
    assert ApiToken.objects.count() == 0


def test_the_api_token_admin_cannot_add(admin_client):
    assert admin_client.get("/admin/accounts/apitoken/add/").status_code == 403
