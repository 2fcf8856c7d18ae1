"""The OpenAPI schema tells the truth: nullable fields are nullable, a bare list is not
declared paginated, and every operation documents the 4xx answers it gives, in the
{"message", "errors"} shape."""

import pytest

pytestmark = pytest.mark.django_db

ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


@pytest.fixture
def schema(anon_api):
    response = anon_api.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def responses(schema, path, method):
    return schema["paths"][f"/api/v1/notifications/{path}"][method]["responses"]


def test_every_error_answer_has_the_error_shape(schema):
    assert schema["components"]["schemas"]["Error"]["required"] == ["message", "errors"]
    for operations in schema["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    assert response["content"] == ERROR, (status, operation["operationId"])


@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        ("send/", "post", ["202", "400", "401", "413", "422"]),
        ("send/batch/", "post", ["202", "400", "401", "413", "422"]),
        ("logs/", "get", ["200", "400", "401", "404"]),
        ("logs/{id}/", "get", ["200", "401", "404"]),
        ("{id}/resend/", "post", ["202", "401", "404", "409"]),
        ("templates/", "post", ["201", "400", "401", "413"]),
        ("health/", "get", ["200", "503"]),
        ("sms-status-callback/", "post", ["204", "403"]),
        ("whatsapp-status-callback/", "post", ["204", "403"]),
        ("voice-status-callback/", "post", ["204", "403"]),
    ],
)
def test_each_operation_documents_what_it_answers(schema, path, method, statuses):
    assert sorted(responses(schema, path, method)) == statuses


def test_a_message_only_delivery_has_no_template_and_the_schema_says_so(schema):
    properties = schema["components"]["schemas"]["DeliveryLog"]["properties"]
    assert properties["template"]["nullable"] is True
    assert properties["template_version"]["nullable"] is True


def test_template_versions_are_a_bare_list(schema, alice, alice_api):
    from tests.factories import make_template

    declared = responses(schema, "templates/{id}/versions/", "get")["200"]["content"]["application/json"]["schema"]
    assert declared == {"type": "array", "items": {"$ref": "#/components/schemas/TemplateVersion"}}
    template = make_template(alice)
    answered = alice_api.get(f"/api/v1/notifications/templates/{template.pk}/versions/").json()
    assert isinstance(answered, list) and len(answered) == 1
