"""Reads for rooms and agents, and the ownership guard: the one place that decides which rooms
(and so which agents, sessions and turns) a user can reach, used by every room-scoped API.

Every room-scoped read in the project goes through `room_owned_filter`: a room is reachable
when the caller owns it and it is not deleted. Anything else — missing, deleted, someone else's —
is the same 404 `not_found`, so a caller cannot tell them apart.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Q, QuerySet

from accounts.models import User
from pantheon.errors import ApplicationError
from rooms.models import Agent, Room


def not_found() -> ApplicationError:
    """The single 404 of every guarded lookup: identical for missing, deleted and not yours."""
    return ApplicationError("Not found.", code="not_found")


def parse_id(value: Any) -> uuid.UUID | None:
    """`value` as a UUID, or None when it cannot be one (then nothing can match it)."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


def room_owned_filter(*, user: User, through: str = "") -> Q:
    """The ownership guard as a filter: the room is `user`'s and is not deleted.

    `through` is the lookup path from the queried model to its room (`"room__"` for agents and
    sessions), so every guarded query is a single query with a join, never a second round trip.
    """
    return Q(**{f"{through}owner": user, f"{through}deleted_at__isnull": True})


def rooms_for_user(*, user: User) -> QuerySet[Room]:
    """The user's rooms that are not deleted, newest first."""
    return Room.objects.filter(room_owned_filter(user=user)).order_by("-created_at", "-id")


def room_is_owned(user: User, room_id: Any) -> bool:
    """Whether `room_id` is one of the user's rooms (not deleted)."""
    pk = parse_id(room_id)
    return pk is not None and rooms_for_user(user=user).filter(pk=pk).exists()


def room_get_for_user(*, user: User, room_id: Any) -> Room:
    """One of the user's rooms, or 404 `not_found` (missing, deleted or not the user's)."""
    pk = parse_id(room_id)
    room = rooms_for_user(user=user).filter(pk=pk).first() if pk else None
    if room is None:
        raise not_found()
    return room


def agents_for_room(*, room: Room) -> QuerySet[Agent]:
    """The room's agents that are not deleted, in room order (`position`, then creation).

    `room` must come from the guard (`room_get_for_user`)."""
    return Agent.objects.alive().filter(room=room).order_by("position", "created_at", "id")


def agent_get_for_user(*, user: User, room_id: Any, agent_id: Any) -> Agent:
    """One agent (not deleted) of one of the user's rooms, with its room, in one query; or 404
    `not_found` exactly as for a missing room."""
    room_pk, agent_pk = parse_id(room_id), parse_id(agent_id)
    agent = (
        Agent.objects.alive()
        .select_related("room")
        .filter(room_owned_filter(user=user, through="room__"), pk=agent_pk, room_id=room_pk)
        .first()
        if room_pk and agent_pk
        else None
    )
    if agent is None:
        raise not_found()
    return agent
