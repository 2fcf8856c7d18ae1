"""The OpenAPI schema's error answers: every operation documents the 4xx statuses it
really gives, all in the one {"message", "errors"} shape (accounts.errors)."""

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "description": "What went wrong, for a person."},
        "errors": {
            "type": "object",
            "additionalProperties": True,
            "description": "Messages by field (a dotted path or an item index); empty when no field is at fault.",
        },
    },
    "required": ["message", "errors"],
}

DESCRIPTIONS = {
    "400": "Invalid input: the errors name each field.",
    "401": "Missing, invalid or revoked token.",
    "403": "Refused: a missing or wrong signature.",
    "404": "Not found, or another account's; or no such page of a list.",
    "409": "The object's state does not allow this.",
    "413": "The request body is larger than the server accepts.",
    "422": "The Idempotency-Key was used with a different request body.",
}


def add_error_responses(result, generator, request, public):
    """drf-spectacular post-processing hook: add the error answers each operation gives."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            statuses = _error_statuses(path, method, operation)
            responses = operation.setdefault("responses", {})
            for status in statuses:
                responses[status] = {
                    "description": DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
    return result


def _error_statuses(path: str, method: str, operation: dict) -> list[str]:
    statuses = []
    has_body = "requestBody" in operation
    parameters = operation.get("parameters", [])
    if has_body or any(p.get("in") == "query" for p in parameters):
        statuses.append("400")
    # Operations open to anyone declare an empty security list.
    if operation.get("security", [{}]) != [] and any(operation.get("security", [{"x": []}])):
        statuses.append("401")
    if "403" in operation.get("responses", {}):
        statuses.append("403")
    # Under an id, and on a paginated list asked for a page it does not have.
    if "{" in path or any(p.get("in") == "query" and p.get("name") == "page" for p in parameters):
        statuses.append("404")
    # Actions refused in the object's present state, and lifecycle events out of order.
    if path.endswith(("/resend/", "/cancel/", "/notifications/events/")):
        statuses.append("409")
    if has_body and method in ("post", "put", "patch"):
        statuses.append("413")
    if any(p.get("in") == "header" and p.get("name") == "Idempotency-Key" for p in parameters):
        statuses.append("422")
    return statuses
