"""One exception handler for the whole API: every error is `{"error": {code, message, details}}`."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from pantheon.errors import ApplicationError

logger = logging.getLogger("pantheon.api")

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
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract's error shape."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _details_of(exc: exceptions.APIException) -> tuple[str, dict[str, Any]]:
    detail = exc.detail
    if isinstance(exc, exceptions.ValidationError):
        if isinstance(detail, dict):
            return "Invalid input.", _plain(detail)
        return "Invalid input.", {"non_field_errors": _plain(detail)}
    if isinstance(exc, exceptions.Throttled):
        return str(detail), {"retry_after": exc.wait and int(exc.wait + 0.999)}
    if isinstance(exc, exceptions.ParseError):
        return "Malformed request body.", {"body": [str(detail)]}
    return str(detail), {}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """Render any exception raised inside a DRF view in the contract's shape; never a 500 page."""
    if isinstance(exc, ApplicationError):
        set_rollback()
        return Response(
            error_body(exc.code, exc.message, exc.details),
            status=exc.status_code,
            headers=exc.headers or None,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, exceptions.APIException):
        set_rollback()
        headers: dict[str, str] = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait + 0.999))
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            headers["WWW-Authenticate"] = "Bearer"
            exc.status_code = status.HTTP_401_UNAUTHORIZED
        code = _CODES.get(type(exc)) or next(
            (c for cls, c in _CODES.items() if isinstance(exc, cls)), str(exc.default_code)
        )
        message, details = _details_of(exc)
        return Response(error_body(code, message, details), status=exc.status_code, headers=headers)

    set_rollback()
    logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
    return Response(
        error_body("internal_error", "An unexpected error occurred."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def json_error_response(status_code: int, code: str, message: str) -> JsonResponse:
    """For errors raised outside DRF views (Django's 404/500 handlers)."""
    return JsonResponse(error_body(code, message), status=status_code)
