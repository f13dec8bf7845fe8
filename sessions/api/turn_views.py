"""Turn endpoints: run a turn, list turns, one turn, cursor-paginated messages."""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pantheon.api.exceptions import error_body
from pantheon.api.pagination import LimitOffsetPagination, MessageCursorPagination
from pantheon.api.schema import ErrorSerializer
from pantheon.api.throttling import TurnCreateThrottle, UserThrottle
from pantheon.errors import ApplicationError
from sessions import turn_selectors
from sessions.api.turn_serializers import (
    MessageSerializer,
    SessionSummarySerializer,
    TurnCreateSerializer,
    TurnSerializer,
)
from sessions.selectors import session_get_for_user
from sessions.services.turns import request_fingerprint, turn_run

IDEMPOTENCY_KEY_MAX = 255


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key.strip() or len(key) > IDEMPOTENCY_KEY_MAX:
        raise serializers.ValidationError(
            {"Idempotency-Key": [f"Must be 1 to {IDEMPOTENCY_KEY_MAX} characters."]}
        )
    return key


def render_turn_outcome(turn_id: UUID, status_code: int) -> Response:
    """The 201 turn body, or the 502 `llm_unavailable` error carrying the turn id."""
    turn = turn_selectors.turn_get_by_id(turn_id=turn_id)
    if status_code == 502:
        return Response(
            error_body(
                "llm_unavailable",
                "The LLM provider failed; the turn was stored as failed.",
                {"turn_id": str(turn.id), "turn_index": turn.turn_index},
            ),
            status=502,
        )
    return Response(TurnSerializer(turn).data, status=status_code)


class TurnListCreateView(APIView):
    throttle_classes = [UserThrottle, TurnCreateThrottle]
    pagination_class = LimitOffsetPagination  # read by the schema generator

    @extend_schema(
        operation_id="turns_create",
        request=TurnCreateSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                required=False,
                description="Replays return the stored answer; at most 255 characters.",
            )
        ],
        responses={
            201: TurnSerializer,
            402: ErrorSerializer,
            409: ErrorSerializer,
            422: ErrorSerializer,
            502: ErrorSerializer,
        },
    )
    def post(self, request: Request, session_id: UUID) -> Response:
        body = TurnCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = _idempotency_key(request)
        session = session_get_for_user(user=request.user, session_id=session_id)
        data = body.validated_data
        outcome = turn_run(
            user=request.user,
            session=session,
            user_input=data["input"],
            mode=data.get("mode"),
            agent_ids=data.get("agent_ids"),
            idempotency_key=key,
            fingerprint=request_fingerprint(session_id=session.id, body=dict(data)) if key else "",
        )
        return render_turn_outcome(outcome.turn_id, outcome.status_code)

    @extend_schema(operation_id="turns_list", responses={200: TurnSerializer(many=True)})
    def get(self, request: Request, session_id: UUID) -> Response:
        session = session_get_for_user(user=request.user, session_id=session_id)
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(
            turn_selectors.turns_for_session(session_id=session.id), request, view=self
        )
        ids = [t.id for t in page]
        turns = turn_selectors.turns_with_details(
            turn_selectors.turns_for_session(session_id=session.id).filter(id__in=ids)
        )
        return paginator.get_paginated_response(TurnSerializer(turns, many=True).data)


class TurnDetailView(APIView):
    @extend_schema(operation_id="turns_retrieve", responses={200: TurnSerializer})
    def get(self, request: Request, session_id: UUID, turn_index: int) -> Response:
        session = session_get_for_user(user=request.user, session_id=session_id)
        turn = turn_selectors.turn_get(session_id=session.id, turn_index=turn_index)
        if turn is None:
            raise ApplicationError("Not found.", code="not_found", status_code=404)
        return Response(TurnSerializer(turn).data)


class MessageListView(APIView):
    pagination_class = MessageCursorPagination  # read by the schema generator

    @extend_schema(
        operation_id="messages_list",
        parameters=[
            OpenApiParameter("cursor", str, OpenApiParameter.QUERY, required=False),
            OpenApiParameter("limit", int, OpenApiParameter.QUERY, required=False),
        ],
        responses={200: MessageSerializer(many=True)},
    )
    def get(self, request: Request, session_id: UUID) -> Response:
        session = session_get_for_user(user=request.user, session_id=session_id)
        paginator = MessageCursorPagination()
        page = paginator.paginate_queryset(
            turn_selectors.messages_for_session(session_id=session.id), request, view=self
        )
        return paginator.get_paginated_response(MessageSerializer(page, many=True).data)


class SessionSummaryView(APIView):
    @extend_schema(operation_id="sessions_summary", responses={200: SessionSummarySerializer})
    def get(self, request: Request, session_id: UUID) -> Response:
        session = session_get_for_user(user=request.user, session_id=session_id)
        summary = turn_selectors.summary_latest(session_id=session.id)
        if summary is None:
            raise ApplicationError(
                "This session has no summary yet.", code="not_found", status_code=404
            )
        return Response(SessionSummarySerializer(summary).data)
