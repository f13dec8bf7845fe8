"""API views shared by the whole project: `PaginatedAPIView`, the base of every list endpoint;
and the project-level views — health, the JSON 404 for unknown API routes, and the OpenAPI
schema and docs views (whose errors are JSON in the contract's shape like every other view)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import connection
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from django.urls import Resolver404, resolve
from django.views.generic import RedirectView
from django_filters import FilterSet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import BasePagination
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.views import APIView

from pantheon.api.pagination import LimitOffsetPagination
from pantheon.errors import ApplicationError

logger = logging.getLogger(__name__)


class PaginatedAPIView(APIView):
    """A view that renders a selector's queryset as one `limit`/`offset` page:
    `{"count", "next", "previous", "results"}`."""

    # The docstring above is also the OpenAPI description of every subclass without a docstring
    # of its own: it speaks to API clients. For the code: this is the one way a list endpoint
    # renders a page. `paginated(queryset, SerializerClass)` covers the usual case; a view that
    # needs the page's rows before rendering them (to load their details or prices in one query)
    # calls `paginate`, then `page_response`. `pagination_class` may be another paginator (a
    # cursor for messages). A list that takes query filters names its django-filter `FilterSet`
    # in `filterset_class`: the queryset is narrowed by it first, and an invalid value is a 400
    # `validation_error` naming the parameter.

    pagination_class: type[BasePagination] = LimitOffsetPagination
    filterset_class: type[FilterSet] | None = None
    _paginator: BasePagination  # set by `paginate`, read by `page_response`

    # Both read by the schema generator, which documents the filterset's query parameters (its
    # django-filter extension needs the filtered model, found through `queryset`).
    @property
    def filter_backends(self) -> tuple[type[DjangoFilterBackend], ...]:
        return () if self.filterset_class is None else (DjangoFilterBackend,)

    @property
    def queryset(self) -> QuerySet[Any] | None:
        if self.filterset_class is None:
            return None
        return self.filterset_class._meta.model._default_manager.none()

    def paginated(
        self, queryset: QuerySet[Any], serializer_class: type[BaseSerializer]
    ) -> Response:
        """One page of `queryset`, each row rendered by `serializer_class`."""
        return self.page_response(serializer_class(self.paginate(queryset), many=True).data)

    def paginate(self, queryset: QuerySet[Any]) -> list[Any]:
        """The rows of the requested page (after the view's filters); render them with
        `page_response`."""
        if self.filterset_class is not None:
            queryset = DjangoFilterBackend().filter_queryset(self.request, queryset, self)
        self._paginator = self.pagination_class()
        return self._paginator.paginate_queryset(queryset, self.request, view=self) or []

    def page_response(self, data: Any) -> Response:
        """The page envelope around `data`, the serialized rows of the last `paginate`."""
        return self._paginator.get_paginated_response(data)


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
        summary="Service health",
        description="Whether the API and its dependencies answer: `database` and `broker` are "
        '`"ok"` or `"unavailable"`. 200 while the database answers, 503 otherwise. No '
        "authentication.",
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
    Django does not know) and whatever the `Accept` header (a 404 must not become a 406). When
    the path only differs from a real one by its trailing slash, the message names the real one
    (API paths have none; the schema and docs pages have one); nothing is ever redirected here,
    so a POST never loses its body."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _AlwaysJson
    schema = None

    def _raise(self, request: Request, *args: object, **kwargs: object) -> Response:
        meant = _path_meant(request.path)
        if meant is None:
            raise NotFound()
        if meant.endswith("/"):
            message = f"Not found. The page is at {meant}"
        else:
            message = f"Not found. API paths have no trailing slash; the path is {meant}"
        raise ApplicationError(message, code="not_found", details={"path": meant})

    get = post = put = patch = delete = head = options = trace = _raise
    http_method_not_allowed = _raise


def _path_meant(path: str) -> str | None:
    """The routed path that `path` misses only by a trailing slash, if there is one."""
    candidate = path[:-1] if path.endswith("/") else f"{path}/"
    try:
        match = resolve(candidate)
    except Resolver404:
        return None
    view_class = getattr(match.func, "view_class", None) or getattr(match.func, "cls", None)
    return None if view_class is NotFoundView else candidate


class SlashRedirectView(RedirectView):
    """A page's path without its trailing slash (`/admin`, `/api/docs`): GET and HEAD are
    redirected to the page; any other method is a 404 (a redirected POST would lose its body)."""

    permanent = True
    http_method_names = ["get", "head"]

    def get_redirect_url(self, *args: Any, **kwargs: Any) -> str:
        query = self.request.META.get("QUERY_STRING", "")
        return f"{self.request.path}/?{query}" if query else f"{self.request.path}/"

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if request.path.startswith("/api/"):
            return NotFoundView.as_view()(request)  # JSON, naming the page's path
        raise Http404()


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
