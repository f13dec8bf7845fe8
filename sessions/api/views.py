"""REST endpoints of sessions: the sessions of a room, running and reading turns, messages and
summaries. Each view parses the request, calls the ownership guard and one service or selector,
and renders — mapping the service's result to its HTTP status; a session or room that is
missing, deleted or not the caller's is the same 404."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import HttpResponseBase
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pantheon.api.exceptions import error_body
from pantheon.api.pagination import MessageCursorPagination
from pantheon.api.presence import presence_of
from pantheon.api.schema import ErrorSerializer
from pantheon.api.throttling import TurnCreateThrottle, UserThrottle
from pantheon.api.views import PaginatedAPIView
from pantheon.errors import ApplicationError
from rooms.selectors import room_get_for_user
from sessions import selectors
from sessions.api.serializers import (
    MessageSerializer,
    SessionCreateSerializer,
    SessionSerializer,
    SessionSummarySerializer,
    SessionUpdateSerializer,
    TurnCreateSerializer,
    TurnSerializer,
    turn_body,
)
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
from sessions.models import Turn
from sessions.services.sessions import session_create, session_delete, session_update
from sessions.services.turns import Replay, request_fingerprint, turn_admit, turn_execute


class SessionListCreateView(PaginatedAPIView):
    @extend_schema(
        operation_id="sessions_list",
        tags=["sessions"],
        summary="List your sessions of a room, newest first",
        responses=SessionSerializer(many=True),
    )
    def get(self, request: Request, room_id: str) -> Response:
        sessions = selectors.sessions_for_room(user=request.user, room_id=room_id)
        return self.paginated(sessions, SessionSerializer)

    @extend_schema(
        operation_id="sessions_create",
        tags=["sessions"],
        summary="Open a session in a room",
        request=SessionCreateSerializer,
        responses={201: SessionSerializer},
    )
    def post(self, request: Request, room_id: str) -> Response:
        body = SessionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        room = room_get_for_user(user=request.user, room_id=room_id)
        session = session_create(room=room, user=request.user, **body.validated_data)
        return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)


class SessionDetailView(APIView):
    @extend_schema(
        operation_id="sessions_retrieve",
        tags=["sessions"],
        summary="Get a session",
        responses=SessionSerializer,
    )
    def get(self, request: Request, room_id: str, session_id: str) -> Response:
        session = selectors.session_get_for_user(
            user=request.user, session_id=session_id, room_id=room_id
        )
        return Response(SessionSerializer(session).data)

    @extend_schema(
        operation_id="sessions_update",
        tags=["sessions"],
        summary="Rename a session",
        request=SessionUpdateSerializer,
        responses=SessionSerializer,
    )
    def patch(self, request: Request, room_id: str, session_id: str) -> Response:
        body = SessionUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        session = selectors.session_get_for_user(
            user=request.user, session_id=session_id, room_id=room_id
        )
        session = session_update(session=session, **body.validated_data)
        return Response(SessionSerializer(session).data)

    @extend_schema(
        operation_id="sessions_delete",
        tags=["sessions"],
        summary="Delete a session (soft)",
        responses={204: None},
    )
    def delete(self, request: Request, room_id: str, session_id: str) -> Response:
        session = selectors.session_get_for_user(
            user=request.user, session_id=session_id, room_id=room_id
        )
        session_delete(session=session)
        return Response(status=status.HTTP_204_NO_CONTENT)


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


# Why a request failed as a whole (the turn is stored `failed`): its 502 error code and message.
_FAILURES = {
    "llm_unavailable": "The LLM provider failed; the turn was stored as failed.",
    "internal_error": (
        "The turn broke off on an internal error and was stored as failed; "
        "the session accepts new turns."
    ),
}


def render_turn(turn: Turn, *, error: str | None) -> Response:
    """The 201 turn body, or the 502 error (`llm_unavailable`, `internal_error`) carrying the
    turn's id when the request failed as a whole."""
    if error is None:
        return Response(turn_body(turn), status=201)
    code = error if error in _FAILURES else "llm_unavailable"
    details = {"turn_id": str(turn.id), "turn_index": turn.turn_index}
    return Response(error_body(code, _FAILURES[code], details), status=502)


def render_replay(replay: Replay) -> Response:
    """The stored answer of an Idempotency-Key's first request, again."""
    turn = selectors.turn_get_by_id(turn_id=replay.turn_id)
    failed = replay.status_code == 502
    return render_turn(turn, error=(turn.error_code or "llm_unavailable") if failed else None)


class TurnListCreateView(PaginatedAPIView):
    """Run a turn in a session, or list its turns (oldest first) with their messages."""

    throttle_classes = [UserThrottle, TurnCreateThrottle]
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
        session = selectors.session_get_for_user(user=request.user, session_id=session_id)
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
            return render_replay(admitted)
        if wants_event_stream(request):
            return turn_stream_response(
                admitted, incremental=served_over_asgi(request), presence=presence_of(request)
            )
        outcome = turn_execute(admitted=admitted)
        return render_turn(outcome.turn, error=outcome.error)

    @extend_schema(operation_id="turns_list", responses={200: TurnSerializer(many=True)})
    def get(self, request: Request, session_id: UUID) -> Response:
        session = selectors.session_get_for_user(user=request.user, session_id=session_id)
        page = self.paginate(selectors.turns_for_session(session_id=session.id))
        turns = selectors.turns_with_details(
            selectors.turns_for_session(session_id=session.id).filter(id__in=[t.id for t in page])
        )
        return self.page_response([turn_body(t) for t in turns])


class TurnDetailView(APIView):
    """One turn of a session, by its index."""

    @extend_schema(operation_id="turns_retrieve", responses={200: TurnSerializer})
    def get(self, request: Request, session_id: UUID, turn_index: int) -> Response:
        session = selectors.session_get_for_user(user=request.user, session_id=session_id)
        turn = selectors.turn_get(session_id=session.id, turn_index=turn_index)
        if turn is None:
            raise ApplicationError("Not found.", code="not_found")
        return Response(turn_body(turn))


class MessageListView(PaginatedAPIView):
    """The messages of a session, oldest first, cursor-paginated."""

    pagination_class = MessageCursorPagination

    # `cursor` and `limit` (with its bounds) come from the paginator.
    @extend_schema(operation_id="messages_list", responses={200: MessageSerializer(many=True)})
    def get(self, request: Request, session_id: UUID) -> Response:
        session = selectors.session_get_for_user(user=request.user, session_id=session_id)
        return self.paginated(
            selectors.messages_for_session(session_id=session.id), MessageSerializer
        )


class SessionSummaryView(APIView):
    """The latest summary of a session, whatever its status."""

    @extend_schema(operation_id="sessions_summary", responses={200: SessionSummarySerializer})
    def get(self, request: Request, session_id: UUID) -> Response:
        session = selectors.session_get_for_user(user=request.user, session_id=session_id)
        summary = selectors.summary_latest(session_id=session.id)
        if summary is None:
            raise ApplicationError("This session has no summary yet.", code="not_found")
        return Response(SessionSummarySerializer(summary).data)
