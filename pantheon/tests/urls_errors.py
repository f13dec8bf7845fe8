"""Test-only URLconf: the project's URLs plus views that crash, to see how errors render."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pantheon.urls import handler400, handler403, handler404, handler500
from pantheon.urls import urlpatterns as project

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]


class CrashingApiView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    def get(self, request: Request) -> Response:
        raise RuntimeError("secret internals: /etc/passwd")


class NoSerializerClassView(GenericAPIView):
    """Picks its serializers per method, like many real views: no `serializer_class`."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    def post(self, request: Request) -> Response:
        return Response({}, status=201)


def crashing_django_view(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("secret internals: /etc/passwd")


urlpatterns = [
    path("api/v1/test/crash", CrashingApiView.as_view()),
    path("api/v1/test/django-crash", crashing_django_view),
    path("api/v1/test/no-serializer-class", NoSerializerClassView.as_view()),
    *project,
]
