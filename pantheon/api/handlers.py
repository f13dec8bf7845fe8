"""Django-level error handlers: JSON in the contract's shape for API paths, HTML elsewhere.

They answer what happens outside DRF views: a bad Host header or a suspicious request (400),
Django's PermissionDenied (403), an unresolved URL (404), a crash in middleware (500)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views import defaults

from pantheon.api.exceptions import json_error_response


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return json_error_response(400, "validation_error", "Bad request.")
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return json_error_response(403, "permission_denied", "Permission denied.")
    return defaults.permission_denied(request, exception)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return json_error_response(404, "not_found", "Not found.")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return json_error_response(500, "internal_error", "An unexpected error occurred.")
    return defaults.server_error(request)
