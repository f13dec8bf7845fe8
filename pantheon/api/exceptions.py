"""One exception handler for the whole API: every error is `{"error": {code, message, details}}`."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from pantheon.api.parsers import RequestTooLarge
from pantheon.db import connection_is_broken, connection_lost
from pantheon.errors import ApplicationError

logger = logging.getLogger("pantheon.api")

# Seconds a client is told to wait when the database is unreachable (a restart, a failover).
DATABASE_RETRY_AFTER_SECONDS = 5


# DRF exception class -> contract code. Anything not listed keeps DRF's own default code.
_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.ValidationError: "validation_error",
    exceptions.ParseError: "validation_error",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    RequestTooLarge: "request_too_large",
}


# The HTTP status of each domain error code (services raise ApplicationError with a code; only
# the API layer knows what HTTP makes of it). A code not listed is a client error (400).
HTTP_STATUS_OF_CODE: dict[str, int] = {
    "validation_error": 400,
    "not_authenticated": 401,
    "insufficient_credits": 402,
    "spending_limit_reached": 402,
    "spending_limit_exists": 409,
    "permission_denied": 403,
    "not_found": 404,
    "conflict": 409,
    "pricing_refused": 409,
    "turn_in_progress": 409,
    "turn_not_running": 409,
    "idempotency_key_in_use": 409,
    "idempotency_key_reused": 422,
    "context_budget_exceeded": 422,
    "model_not_priced": 422,
    "unknown_agent": 422,
    "no_agent_selected": 422,
    "turn_not_latest": 422,
    "throttled": 429,
    "llm_unavailable": 502,
    "internal_error": 502,
    "service_unavailable": 503,
}


def http_status_of(code: str) -> int:
    return HTTP_STATUS_OF_CODE.get(code, 400)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract's error shape."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _retry_after(exc: exceptions.Throttled) -> int:
    # DRF rounds `wait` up already; never advertise 0 seconds, clients would spin.
    return max(1, int(exc.wait or 1))


def _details_of(exc: exceptions.APIException, view: Any) -> tuple[str, dict[str, Any]]:
    detail = exc.detail
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return _unsupported_media_type(exc, view)
    if isinstance(exc, exceptions.ValidationError):
        if isinstance(detail, dict):
            return "Invalid input.", _plain(detail)
        return "Invalid input.", {"non_field_errors": _plain(detail)}
    if isinstance(exc, exceptions.Throttled):
        return str(detail), {"retry_after": _retry_after(exc)}
    if isinstance(exc, exceptions.ParseError):
        return "Malformed request body.", {"body": [str(detail)]}
    return str(detail), {}


def _unsupported_media_type(
    exc: exceptions.UnsupportedMediaType, view: Any
) -> tuple[str, dict[str, Any]]:
    """415: what was sent, and what the endpoint takes instead (the media types of its parsers,
    `application/json` everywhere today)."""
    parsers = view.get_parsers() if view is not None else []
    expected = [parser.media_type for parser in parsers] or ["application/json"]
    return f"{exc.detail} Send the body as {' or '.join(expected)}.", {"expected": expected}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _as_api_exception(exc: Exception) -> Exception:
    """Django's own exceptions, raised inside a DRF view, as the matching DRF exception."""
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, PermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            return exceptions.ValidationError(exc.message_dict)
        return exceptions.ValidationError({"non_field_errors": exc.messages})
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLarge()
    if isinstance(exc, SuspiciousOperation):
        # Too many fields, a malformed multipart body…: the client's fault, never a 500.
        return exceptions.ValidationError({"non_field_errors": ["Malformed request."]})
    return exc


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """Render any exception raised inside a DRF view in the contract's shape; never a 500 page."""
    if isinstance(exc, ApplicationError):
        set_rollback()
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return Response(
            error_body(exc.code, exc.message, exc.details),
            status=http_status_of(exc.code),
            headers=headers,
        )
    exc = _as_api_exception(exc)

    if isinstance(exc, exceptions.APIException):
        set_rollback()
        headers: dict[str, str] = {}
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            # Always 401 with a Bearer challenge (never DRF's 403 fallback).
            headers["WWW-Authenticate"] = "Bearer"
            exc.status_code = status.HTTP_401_UNAUTHORIZED
        if isinstance(exc, exceptions.Throttled):
            headers["Retry-After"] = str(_retry_after(exc))
        code = _CODES.get(type(exc)) or next(
            (c for cls, c in _CODES.items() if isinstance(exc, cls)), str(exc.default_code)
        )
        message, details = _details_of(exc, context.get("view"))
        return Response(error_body(code, message, details), status=exc.status_code, headers=headers)

    set_rollback()
    view = context.get("view")
    if isinstance(exc, OperationalError | InterfaceError):
        if connection_is_broken(exc):
            connection_lost()
        return _database_unavailable(exc, view)
    logger.exception("unhandled error in %s", type(view).__name__ if view else "API view")
    return Response(
        error_body("internal_error", "An unexpected error occurred."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def _database_unavailable(exc: Exception, view: Any) -> Response:
    """The database is unreachable (connection lost or refused, pool exhausted): a transient
    outage, not a bug, so 503 with Retry-After and a warning without a stack trace. Other
    database errors (IntegrityError, ProgrammingError…) stay 500s: retrying will not fix them."""
    logger.warning(
        "database unavailable in %s: %s",
        type(view).__name__ if view else "API view",
        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
    )
    return Response(
        error_body("service_unavailable", "The database is unavailable; retry shortly."),
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


def json_error_response(status_code: int, code: str, message: str) -> JsonResponse:
    """For errors raised outside DRF views (Django's 400/403/404/500 handlers)."""
    return JsonResponse(error_body(code, message), status=status_code)
