"""The usage API: the caller's usage summary, call events, ledger and spending limits.
Everything is scoped to `request.user`; another user's rows never appear (404)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.selectors import api_key_get_for_user
from pantheon.api.schema import ErrorSerializer
from pantheon.api.views import PaginatedAPIView
from pantheon.errors import ApplicationError
from usage import selectors
from usage.api.serializers import (
    LedgerEntrySerializer,
    LlmCallEventSerializer,
    SpendingLimitCreateSerializer,
    SpendingLimitSerializer,
    SpendingLimitUpdateSerializer,
    UsageQuerySerializer,
    UsageSummarySerializer,
)
from usage.filtersets import LlmCallEventFilter
from usage.services import (
    spending_limit_create,
    spending_limit_delete,
    spending_limit_update,
)


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
        "days. `spending_limits`: your limits with what is spent and remains in their current "
        "window (as in `auth/spending-limits`).",
        parameters=[UsageQuerySerializer],
        responses={200: UsageSummarySerializer},
    )
    def get(self, request: Request) -> Response:
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        summary = selectors.usage_summary(user=request.user, **query.validated_data)
        summary["spending_limits"] = selectors.limit_states_for_user(user=request.user)
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


# --- spending limits -------------------------------------------------------------------------

# Whether a room is the user's (and not deleted): the rooms app answers, through the project's
# URL conf (usage does not import rooms).
RoomOwned = Callable[[Any, UUID], bool]


class SpendingLimitListCreateView(PaginatedAPIView):
    """`GET auth/spending-limits` (yours, paginated) and `POST` (set one)."""

    room_owned: RoomOwned | None = None

    @extend_schema(
        operation_id="auth_spending_limits_list",
        tags=["auth"],
        summary="List your spending limits",
        description="Your limits on yourself, your rooms and your API keys, each with the "
        "credits `spent` in its current window (UTC day or month), `remaining` and "
        "`resets_at`. Limits staff set have `set_by_staff: true`.",
        responses={200: SpendingLimitSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        limits = self.paginate(selectors.limits_for_user(user=request.user))
        states = selectors.limit_states(limits, now=timezone.now(), with_reserved=False)
        return self.page_response(SpendingLimitSerializer(states, many=True).data)

    @extend_schema(
        operation_id="auth_spending_limits_create",
        tags=["auth"],
        summary="Set a spending limit",
        description="Caps what you spend per UTC `day` or `month`: on everything (`user`), in "
        "one of your rooms (`room`, with `room_id`) or through one of your keys (`api_key`, "
        "with `api_key_id`). From then on every LLM call — replies, routing, summaries — must "
        "fit its worst case under the limit with what the window already burned and holds "
        "reserved, or it is refused with 402 `spending_limit_reached`. Spending before the "
        "limit was set counts. One limit per target and window: 409 "
        "`spending_limit_exists` for a second (change the first). A room or key that is not "
        "yours is 404.",
        request=SpendingLimitCreateSerializer,
        responses={
            201: SpendingLimitSerializer,
            400: ErrorSerializer,
            404: ErrorSerializer,
            409: ErrorSerializer,
        },
    )
    def post(self, request: Request) -> Response:
        body = SpendingLimitCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        room_id, api_key_id = data.get("room_id"), data.get("api_key_id")
        if room_id is not None and not (
            self.room_owned is not None and self.room_owned(request.user, room_id)
        ):
            raise ApplicationError("No such room.", code="not_found")
        if api_key_id is not None and (
            api_key_get_for_user(user=request.user, api_key_id=api_key_id) is None
        ):
            raise ApplicationError("No such API key.", code="not_found")
        limit = spending_limit_create(
            user=request.user,
            scope=data["scope"],
            window=data["window"],
            limit_micro=data["limit"],
            room_id=room_id,
            api_key_id=api_key_id,
        )
        return Response(SpendingLimitSerializer(selectors.limit_state(limit)).data, status=201)


class SpendingLimitDetailView(APIView):
    """`GET`, `PATCH` and `DELETE auth/spending-limits/{limit_id}`."""

    def _limit(self, request: Request, limit_id: UUID) -> Any:
        limit = selectors.limit_get_for_user(user=request.user, limit_id=limit_id)
        if limit is None:
            raise NotFound()
        return limit

    @extend_schema(
        operation_id="auth_spending_limits_get",
        tags=["auth"],
        summary="One of your spending limits",
        description="The limit with `spent`, `remaining` and `resets_at` of its current "
        "window. Another user's limit is 404.",
        responses={200: SpendingLimitSerializer, 404: ErrorSerializer},
    )
    def get(self, request: Request, limit_id: UUID) -> Response:
        limit = self._limit(request, limit_id)
        return Response(SpendingLimitSerializer(selectors.limit_state(limit)).data)

    @extend_schema(
        operation_id="auth_spending_limits_update",
        tags=["auth"],
        summary="Change a spending limit",
        description="Sets the limit's amount; it applies to the next call. A limit staff set "
        "can be lowered, not raised (403 `permission_denied`).",
        request=SpendingLimitUpdateSerializer,
        responses={
            200: SpendingLimitSerializer,
            400: ErrorSerializer,
            403: ErrorSerializer,
            404: ErrorSerializer,
        },
    )
    def patch(self, request: Request, limit_id: UUID) -> Response:
        limit = self._limit(request, limit_id)
        body = SpendingLimitUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        limit = spending_limit_update(limit=limit, limit_micro=body.validated_data["limit"])
        return Response(SpendingLimitSerializer(selectors.limit_state(limit)).data)

    @extend_schema(
        operation_id="auth_spending_limits_delete",
        tags=["auth"],
        summary="Remove a spending limit",
        description="Removes one of your limits. A limit staff set cannot be removed (403 "
        "`permission_denied`).",
        request=None,
        responses={204: None, 403: ErrorSerializer, 404: ErrorSerializer},
    )
    def delete(self, request: Request, limit_id: UUID) -> Response:
        spending_limit_delete(limit=self._limit(request, limit_id))
        return Response(status=204)
