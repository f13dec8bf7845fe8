"""Project-level API views: health, the JSON 404 for unknown API routes, and the OpenAPI
schema and docs views (whose errors are JSON in the contract's shape like every other view)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

logger = logging.getLogger(__name__)


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return True
    except Exception:  # any database failure means "down" for a health probe
        logger.warning("health: database unreachable", exc_info=True)
        return False


def _broker_ok() -> bool:
    from pantheon.celery import broker_reachable

    return broker_reachable(timeout=0.5)


class HealthView(APIView):
    """Liveness and dependencies. No authentication."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(
        operation_id="health",
        responses={
            200: inline_serializer(
                "Health",
                {
                    "status": serializers.CharField(),
                    "database": serializers.CharField(),
                    "broker": serializers.CharField(),
                },
            ),
            503: inline_serializer(
                "HealthDown",
                {
                    "status": serializers.CharField(),
                    "database": serializers.CharField(),
                    "broker": serializers.CharField(),
                },
            ),
        },
    )
    def get(self, request: Request) -> Response:
        database = _database_ok()
        broker = _broker_ok()
        body = {
            "status": "ok" if database else "unavailable",
            "database": "ok" if database else "unavailable",
            "broker": "ok" if broker else "unavailable",
        }
        return Response(body, status=200 if database else 503)


class _AlwaysJson(BaseContentNegotiation):
    """Ignores `Accept` and `Content-Type`: the answer is JSON whatever the client asked for."""

    def select_parser(self, request: Request, parsers: list) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: list, format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        return JSONRenderer(), JSONRenderer.media_type


class NotFoundView(APIView):
    """Any unknown path under /api/: 404 in the contract's shape, whatever the method (even one
    Django does not know) and whatever the `Accept` header (a 404 must not become a 406)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _AlwaysJson
    schema = None

    def _raise(self, request: Request, *args: object, **kwargs: object) -> Response:
        raise NotFound()

    get = post = put = patch = delete = head = options = trace = _raise
    http_method_not_allowed = _raise


class _JsonErrorsMixin:
    """For views whose success is not JSON (YAML schema, HTML docs): render their errors — 405,
    406, 429… — as JSON in the contract's shape instead of YAML or a bare HTML string."""

    def finalize_response(
        self, request: Request, response: Any, *args: object, **kwargs: object
    ) -> Any:
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


class SchemaView(_JsonErrorsMixin, SpectacularAPIView):
    """The OpenAPI 3 schema, no authentication: YAML by default, JSON with
    `Accept: application/json`."""


class DocsView(_JsonErrorsMixin, SpectacularSwaggerView):
    """Swagger UI over the schema, no authentication, assets served locally."""
