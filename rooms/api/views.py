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
        description="Your rooms that are not deleted, newest first, `limit`/`offset` paginated.",
        responses=RoomSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return self.paginated(selectors.rooms_for_user(user=request.user), RoomSerializer)

    @extend_schema(
        operation_id="rooms_create",
        tags=["rooms"],
        summary="Create a room",
        description="A room holds agents and the sessions you run with them. `default_mode` "
        "(`round_table` when absent) is the mode of turns that name none; `manager_model` "
        "(an active model of `GET /api/v1/models`, or null for the default) and "
        "`manager_instructions` steer who answers orchestrator turns. An unknown or inactive "
        "`manager_model` is a 400 `validation_error` naming it.",
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
        description="One of your rooms; a room that is missing, deleted or not yours is a 404.",
        responses=RoomSerializer,
    )
    def get(self, request: Request, room_id: str) -> Response:
        room = selectors.room_get_for_user(user=request.user, room_id=room_id)
        return Response(RoomSerializer(room).data)

    @extend_schema(
        operation_id="rooms_update",
        tags=["rooms"],
        summary="Change a room",
        description="Only the fields given change, under the rules of room creation; "
        "`manager_model: null` goes back to the default manager model.",
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
        description="The room, its agents and its sessions disappear from the API at once "
        "(404 from then on); your usage history keeps them.",
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
        description="The room's agents, active or not, in `position` order (ties in creation "
        "order) — the order in which the active ones answer round-table turns. `limit`/`offset` "
        "paginated.",
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
        "one already used in the room is a 400 `validation_error` naming `handle`. `model` "
        "must be an active model of `GET /api/v1/models` (otherwise a 400 naming `model`), and "
        "`max_output_tokens` may not exceed that model's own `max_output_tokens`.",
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
        description="One agent of one of your rooms; a missing or deleted agent, or a room "
        "that is not yours, is a 404.",
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
