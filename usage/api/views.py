"""The usage API: the caller's usage summary, call events and ledger. Everything is scoped to
`request.user`; another user's rows never appear."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pantheon.api.views import PaginatedAPIView
from usage import selectors
from usage.api.serializers import (
    LedgerEntrySerializer,
    LlmCallEventSerializer,
    UsageQuerySerializer,
    UsageSummarySerializer,
)
from usage.filtersets import LlmCallEventFilter


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


class LlmCallEventListView(PaginatedAPIView):
    """`GET usage/events`: the caller's LLM call events, newest first."""

    filterset_class = LlmCallEventFilter

    @extend_schema(
        operation_id="usage_events_list",
        tags=["usage"],
        summary="Your LLM call events",
        responses=LlmCallEventSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return self.paginated(selectors.events_for_user(request.user), LlmCallEventSerializer)


class LedgerEntryListView(PaginatedAPIView):
    """`GET usage/ledger`: the caller's credit ledger, newest first."""

    @extend_schema(
        operation_id="usage_ledger_list",
        tags=["usage"],
        summary="Your credit ledger",
        responses=LedgerEntrySerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return self.paginated(selectors.ledger_for_user(request.user), LedgerEntrySerializer)
