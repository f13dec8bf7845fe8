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
    """`GET usage`: the caller's credits, and their calls by day and by model."""

    @extend_schema(
        operation_id="usage_summary",
        tags=["usage"],
        summary="Your credits and usage by day and by model",
        description="`credits`: your balance, reserved and available credits now. `by_day`: "
        "every UTC day from `from` to `to` (both inclusive; by default the last 30 days up to "
        "today), days without calls included, with the credits burned, OE tokens, input and "
        "output tokens and calls of your LLM calls; `by_model`: the same figures per model "
        "that had calls in the range, most credits first. A range may cover at most 366 "
        "days.",
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
        description="Every LLM call made for you (agent replies, routing, summaries), newest "
        "first, with its tokens, cost and credits burned; `input_tokens` and `output_tokens` "
        "are the provider's totals, the cached, cache-write and reasoning figures are parts of "
        "them. Filter by `session`, `purpose`, `status`, `model` and UTC days `from`/`to`.",
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
        description="Every movement of your credits, newest first: grants and refunds add "
        "(positive `amount`), burns subtract (negative), adjustments go either way; each with "
        "the balance after it and, for a burn, the call event it pays for.",
        responses=LedgerEntrySerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return self.paginated(selectors.ledger_for_user(request.user), LedgerEntrySerializer)
