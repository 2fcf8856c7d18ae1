"""Every API error leaves as JSON: {"message": ..., "errors": {...}}."""

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object is not in a state that allows this."


class Unprocessable(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "The request cannot be processed."


def _message(detail) -> str:
    if isinstance(detail, dict):
        for value in detail.values():
            return _message(value)
    if isinstance(detail, list) and detail:
        return _message(detail[0])
    return str(detail)


def too_big() -> dict:
    return {
        "message": f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
        "errors": {},
    }


def exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):
        return Response(too_big(), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    if isinstance(exc, exceptions.ValidationError):
        errors = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        field = next(iter(errors), None)
        message = "Invalid input."
        if field and field != "non_field_errors":
            message = f"Invalid input: {field}: {_message(errors[field])}"
        elif field:
            message = f"Invalid input: {_message(errors[field])}"
        body = {"message": message, "errors": errors}
    else:
        body = {"message": _message(detail), "errors": {}}
    return Response(body, status=response.status_code, headers=_headers(response))


def _headers(response):
    return {k: v for k, v in response.items() if k in ("WWW-Authenticate", "Retry-After", "Allow")}


def bad_request(request, exception=None):
    """JSON under /api/ (a body over DATA_UPLOAD_MAX_MEMORY_SIZE is a 413), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        if isinstance(exception, RequestDataTooBig):
            return JsonResponse(too_big(), status=413)
        return JsonResponse({"message": "Bad request.", "errors": {}}, status=400)
    return defaults.bad_request(request, exception)


def not_found(request, exception=None):
    """JSON 404 under /api/, Django's page elsewhere (the admin)."""
    if request.path.startswith("/api/"):
        return JsonResponse({"message": "Not found.", "errors": {}}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return JsonResponse({"message": "Internal server error.", "errors": {}}, status=500)
    return defaults.server_error(request)
