"""REST endpoints of a room's sessions. Each view parses the request, calls the ownership guard
and one service or selector, and renders; a session or room that is missing, deleted or not the
caller's is the same 404."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pantheon.api.views import PaginatedAPIView
from rooms.selectors import room_get_for_user
from sessions import selectors
from sessions.api.serializers import (
    SessionCreateSerializer,
    SessionSerializer,
    SessionUpdateSerializer,
)
from sessions.services.sessions import session_create, session_delete, session_update


class SessionListCreateView(PaginatedAPIView):
    @extend_schema(
        operation_id="sessions_list",
        tags=["sessions"],
        summary="List your sessions of a room, newest first",
        description="The room's sessions that you opened and have not deleted, newest first, "
        "`limit`/`offset` paginated. A room that is missing, deleted or not yours is a 404.",
        responses=SessionSerializer(many=True),
    )
    def get(self, request: Request, room_id: str) -> Response:
        sessions = selectors.sessions_for_room(user=request.user, room_id=room_id)
        return self.paginated(sessions, SessionSerializer)

    @extend_schema(
        operation_id="sessions_create",
        tags=["sessions"],
        summary="Open a session in a room",
        description="A new, empty conversation in one of your rooms (an optional `title`, at "
        "most 200 characters). Run turns in it with `POST /api/v1/sessions/{session_id}/turns`.",
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
        description="One of your sessions of this room; `turn_count` is the number of turns "
        "started in it so far.",
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
        description="Changes the session's `title` (blank clears it).",
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
        description="The session disappears from your lists and its turns can no longer be "
        "read or run (404); its usage stays on your account.",
        responses={204: None},
    )
    def delete(self, request: Request, room_id: str, session_id: str) -> Response:
        session = selectors.session_get_for_user(
            user=request.user, session_id=session_id, room_id=room_id
        )
        session_delete(session=session)
        return Response(status=status.HTTP_204_NO_CONTENT)
