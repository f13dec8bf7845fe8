"""Project-level API views: health, and the JSON 404 for unknown API routes."""

from __future__ import annotations

import logging

from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny
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


class NotFoundView(APIView):
    """Any unknown path under /api/: 404 in the contract's shape, whatever the method."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []
    schema = None

    def _raise(self, request: Request, *args: object, **kwargs: object) -> Response:
        raise NotFound()

    get = post = put = patch = delete = head = options = _raise
