"""REST endpoints for rooms and their agents. Each view parses the body, calls the ownership
guard and one service or selector, and renders; a room or agent that is missing, deleted or not
the caller's is the same 404."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pantheon.api.views import PaginatedAPIView
from rooms import selectors, services
from rooms.api.serializers import (
    AgentCreateSerializer,
    AgentSerializer,
    AgentUpdateSerializer,
    RoomCreateSerializer,
    RoomSerializer,
    RoomUpdateSerializer,
)


class RoomListCreateView(PaginatedAPIView):
    @extend_schema(
        operation_id="rooms_list",
        tags=["rooms"],
        summary="List your rooms",
        responses=RoomSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return self.paginated(selectors.rooms_for_user(user=request.user), RoomSerializer)

    @extend_schema(
        operation_id="rooms_create",
        tags=["rooms"],
        summary="Create a room",
        request=RoomCreateSerializer,
        responses={201: RoomSerializer},
    )
    def post(self, request: Request) -> Response:
        body = RoomCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        room = services.room_create(owner=request.user, **body.validated_data)
        return Response(RoomSerializer(room).data, status=status.HTTP_201_CREATED)


class RoomDetailView(APIView):
    @extend_schema(
        operation_id="rooms_retrieve",
        tags=["rooms"],
        summary="Get a room",
        responses=RoomSerializer,
    )
    def get(self, request: Request, room_id: str) -> Response:
        room = selectors.room_get_for_user(user=request.user, room_id=room_id)
        return Response(RoomSerializer(room).data)

    @extend_schema(
        operation_id="rooms_update",
        tags=["rooms"],
        summary="Change a room",
        request=RoomUpdateSerializer,
        responses=RoomSerializer,
    )
    def patch(self, request: Request, room_id: str) -> Response:
        body = RoomUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        room = selectors.room_get_for_user(user=request.user, room_id=room_id)
        room = services.room_update(room=room, **body.validated_data)
        return Response(RoomSerializer(room).data)

    @extend_schema(
        operation_id="rooms_delete",
        tags=["rooms"],
        summary="Delete a room (soft)",
        responses={204: None},
    )
    def delete(self, request: Request, room_id: str) -> Response:
        room = selectors.room_get_for_user(user=request.user, room_id=room_id)
        services.room_delete(room=room)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AgentListCreateView(PaginatedAPIView):
    @extend_schema(
        operation_id="agents_list",
        tags=["agents"],
        summary="List a room's agents, in position order",
        responses=AgentSerializer(many=True),
    )
    def get(self, request: Request, room_id: str) -> Response:
        room = selectors.room_get_for_user(user=request.user, room_id=room_id)
        return self.paginated(selectors.agents_for_room(room=room), AgentSerializer)

    @extend_schema(
        operation_id="agents_create",
        tags=["agents"],
        summary="Add an agent to a room",
        description="Without `position` the agent goes last. The handle is stored lower-case; "
        "one already used in the room is a 400 `validation_error` naming `handle`. "
        "`max_output_tokens` may not exceed the model's own `max_output_tokens` "
        "(see `GET /models`).",
        request=AgentCreateSerializer,
        responses={201: AgentSerializer},
    )
    def post(self, request: Request, room_id: str) -> Response:
        body = AgentCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        room = selectors.room_get_for_user(user=request.user, room_id=room_id)
        agent = services.agent_create(room=room, **body.validated_data)
        return Response(AgentSerializer(agent).data, status=status.HTTP_201_CREATED)


class AgentDetailView(APIView):
    @extend_schema(
        operation_id="agents_retrieve",
        tags=["agents"],
        summary="Get an agent",
        responses=AgentSerializer,
    )
    def get(self, request: Request, room_id: str, agent_id: str) -> Response:
        agent = selectors.agent_get_for_user(user=request.user, room_id=room_id, agent_id=agent_id)
        return Response(AgentSerializer(agent).data)

    @extend_schema(
        operation_id="agents_update",
        tags=["agents"],
        summary="Change an agent",
        description="Only the fields given change, under the rules of agent creation "
        "(a changed model re-checks the agent's `max_output_tokens` against its limit).",
        request=AgentUpdateSerializer,
        responses=AgentSerializer,
    )
    def patch(self, request: Request, room_id: str, agent_id: str) -> Response:
        body = AgentUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        agent = selectors.agent_get_for_user(user=request.user, room_id=room_id, agent_id=agent_id)
        agent = services.agent_update(agent=agent, **body.validated_data)
        return Response(AgentSerializer(agent).data)

    @extend_schema(
        operation_id="agents_delete",
        tags=["agents"],
        summary="Remove an agent from its room",
        description="The agent disappears from the room and never speaks again; its past "
        "messages keep their attribution.",
        responses={204: None},
    )
    def delete(self, request: Request, room_id: str, agent_id: str) -> Response:
        agent = selectors.agent_get_for_user(user=request.user, room_id=room_id, agent_id=agent_id)
        services.agent_delete(agent=agent)
        return Response(status=status.HTTP_204_NO_CONTENT)
