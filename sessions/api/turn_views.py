"""Turn endpoints: run a turn, list turns, one turn, cursor-paginated messages."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import HttpResponseBase
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pantheon.api.exceptions import error_body
from pantheon.api.pagination import LimitOffsetPagination, MessageCursorPagination
from pantheon.api.presence import presence_of
from pantheon.api.schema import ErrorSerializer
from pantheon.api.throttling import TurnCreateThrottle, UserThrottle
from pantheon.errors import ApplicationError
from sessions import turn_selectors
from sessions.api.streaming import (
    EVENT_STREAM,
    STREAM_DESCRIPTION,
    STREAM_EVENT_SCHEMA,
    EventStreamRenderer,
    TurnCreateSchema,
    served_over_asgi,
    turn_stream_response,
    wants_event_stream,
)
from sessions.api.turn_serializers import (
    MessageSerializer,
    SessionSummarySerializer,
    TurnCreateSerializer,
    TurnSerializer,
)
from sessions.models import Turn
from sessions.selectors import session_get_for_user
from sessions.services.turns import Replay, request_fingerprint, turn_admit, turn_execute

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


def render_turn_outcome(turn_id: UUID, status_code: int, turn: Turn | None = None) -> Response:
    """The 201 turn body, or the 502 `llm_unavailable` error carrying the turn id. `turn`, when
    given, already holds its details (a turn just run here); otherwise it is read."""
    if turn is None:
        turn = turn_selectors.turn_get_by_id(turn_id=turn_id)
    if status_code == 502:
        details = {"turn_id": str(turn.id), "turn_index": turn.turn_index}
        if turn.error_code == "internal_error":
            message = (
                "The turn broke off on an internal error and was stored as failed; "
                "the session accepts new turns."
            )
            return Response(error_body("internal_error", message, details), status=502)
        message = "The LLM provider failed; the turn was stored as failed."
        return Response(error_body("llm_unavailable", message, details), status=502)
    return Response(TurnSerializer(turn).data, status=status_code)


class TurnListCreateView(APIView):
    throttle_classes = [UserThrottle, TurnCreateThrottle]
    pagination_class = LimitOffsetPagination  # read by the schema generator
    schema = TurnCreateSchema()

    def get_renderers(self) -> list[BaseRenderer]:
        renderers = super().get_renderers()
        # Only running a turn can stream; listing turns stays JSON-only (406 otherwise).
        if getattr(getattr(self, "request", None), "method", None) == "POST":
            renderers.append(EventStreamRenderer())
        return renderers

    def finalize_response(
        self, request: Request, response: HttpResponseBase, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        if isinstance(response, Response) and wants_event_stream(request):
            # Whatever is not the stream itself — a rejection, a replay — is ordinary JSON.
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

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
            (200, EVENT_STREAM): OpenApiResponse(
                response=STREAM_EVENT_SCHEMA, description=STREAM_DESCRIPTION
            ),
            402: ErrorSerializer,
            409: ErrorSerializer,
            422: ErrorSerializer,
            502: ErrorSerializer,
        },
    )
    def post(self, request: Request, session_id: UUID) -> HttpResponseBase:
        body = TurnCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = _idempotency_key(request)
        session = session_get_for_user(user=request.user, session_id=session_id)
        data = body.validated_data
        admitted = turn_admit(
            user=request.user,
            session=session,
            user_input=data["input"],
            mode=data.get("mode"),
            agent_ids=data.get("agent_ids"),
            idempotency_key=key,
            fingerprint=request_fingerprint(session_id=session.id, body=dict(data)) if key else "",
        )
        if isinstance(admitted, Replay):
            return render_turn_outcome(admitted.turn_id, admitted.status_code)
        if wants_event_stream(request):
            return turn_stream_response(
                admitted, incremental=served_over_asgi(request), presence=presence_of(request)
            )
        outcome = turn_execute(admitted=admitted)
        return render_turn_outcome(outcome.turn_id, outcome.status_code, outcome.turn)

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

    # `cursor` and `limit` (with its bounds) come from the paginator.
    @extend_schema(operation_id="messages_list", responses={200: MessageSerializer(many=True)})
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
