"""Every API error leaves as JSON {"message", "errors"}."""

import json

import pytest
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions

from accounts.errors import Conflict, Unprocessable, exception_handler


@pytest.mark.parametrize(
    ("exc", "status", "body"),
    [
        (
            exceptions.ValidationError({"email": ["Enter a valid email address."]}),
            400,
            {
                "message": "Invalid input: email: Enter a valid email address.",
                "errors": {"email": ["Enter a valid email address."]},
            },
        ),
        (
            exceptions.ValidationError({"recipient": {"phone": ["Bad number."]}}),
            400,
            {"message": "Invalid input: recipient: Bad number.", "errors": {"recipient": {"phone": ["Bad number."]}}},
        ),
        (
            exceptions.ValidationError(["Something is off."]),
            400,
            {"message": "Invalid input: Something is off.", "errors": {"non_field_errors": ["Something is off."]}},
        ),
        (
            DjangoValidationError({"context": ["missing required placeholder(s): name"]}),
            400,
            {
                "message": "Invalid input: context: missing required placeholder(s): name",
                "errors": {"context": ["missing required placeholder(s): name"]},
            },
        ),
        (
            DjangoValidationError("Plain message."),
            400,
            {"message": "Invalid input: Plain message.", "errors": {"non_field_errors": ["Plain message."]}},
        ),
        (Http404("gone"), 404, {"message": "Not found.", "errors": {}}),
        (
            PermissionDenied(),
            403,
            {"message": "You do not have permission to perform this action.", "errors": {}},
        ),
        (Conflict("Already sent."), 409, {"message": "Already sent.", "errors": {}}),
        (Unprocessable("Key reused."), 422, {"message": "Key reused.", "errors": {}}),
    ],
)
def test_errors_become_json(exc, status, body):
    response = exception_handler(exc, {})
    assert response.status_code == status
    assert response.data == body


def test_retry_after_survives(db):
    response = exception_handler(exceptions.Throttled(wait=30), {})
    assert response.status_code == 429
    assert response["Retry-After"] == "30"
    assert response.data["errors"] == {}


def test_other_exceptions_are_left_to_django():
    assert exception_handler(RuntimeError("bug"), {}) is None


def test_method_not_allowed_is_json(alice_api):
    response = alice_api.get("/api/v1/notifications/send/")
    assert response.status_code == 405
    assert response.json() == {"message": 'Method "GET" not allowed.', "errors": {}}
    assert response.headers["Allow"] == "POST, OPTIONS"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/notifications/nowhere/",
        "/api/v1/notifications/logs/------------------------------------/",
        "/api/v1/notifications/templates/not-a-uuid/",
    ],
)
def test_unknown_api_paths_are_json_404(alice_api, path):
    response = alice_api.get(path)
    assert response.status_code == 404
    assert response.json() == {"message": "Not found.", "errors": {}}


def test_an_api_server_error_is_json(rf):
    from accounts.errors import server_error

    response = server_error(rf.get("/api/v1/notifications/logs/"))
    assert response.status_code == 500
    assert json.loads(response.content) == {"message": "Internal server error.", "errors": {}}
