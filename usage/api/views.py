"""The usage API: the caller's usage summary, call events and ledger. Everything is scoped to
`request.user`; another user's rows never appear."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from usage import selectors
from usage.api.serializers import (
    LedgerEntrySerializer,
    LlmCallEventSerializer,
    UsageQuerySerializer,
    UsageSummarySerializer,
)
from usage.filtersets import LlmCallEventFilter
from usage.models import LedgerEntry, LlmCallEvent


class UsageSummaryView(APIView):
    """`GET usage`."""

    @extend_schema(
        operation_id="usage_summary",
        tags=["usage"],
        summary="Your credits and usage by day and by model",
        parameters=[UsageQuerySerializer],
        responses={200: UsageSummarySerializer},
    )
    def get(self, request: Request) -> Response:
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        summary = selectors.usage_summary(user=request.user, **query.validated_data)
        return Response(UsageSummarySerializer(summary).data)


class LlmCallEventListView(ListAPIView):
    """`GET usage/events`: the caller's LLM call events, newest first."""

    serializer_class = LlmCallEventSerializer
    filterset_class = LlmCallEventFilter

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return LlmCallEvent.objects.none()
        return selectors.events_for_user(self.request.user)

    @extend_schema(
        operation_id="usage_events_list",
        tags=["usage"],
        summary="Your LLM call events",
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class LedgerEntryListView(ListAPIView):
    """`GET usage/ledger`: the caller's credit ledger, newest first."""

    serializer_class = LedgerEntrySerializer
    filter_backends = ()

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return LedgerEntry.objects.none()
        return selectors.ledger_for_user(self.request.user)

    @extend_schema(
        operation_id="usage_ledger_list",
        tags=["usage"],
        summary="Your credit ledger",
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)
