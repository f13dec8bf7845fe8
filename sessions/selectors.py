"""Reads for sessions, built on the rooms ownership guard (F35): a session is reachable when it
is not deleted, the caller created it, and its room is the caller's and not deleted. Anything
else is the same 404 `not_found` as a missing session."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from accounts.models import User
from rooms.selectors import not_found, parse_id, room_get_for_user, room_owned_filter
from sessions.models import Session


def sessions_for_user(*, user: User) -> QuerySet[Session]:
    """Every session the user may reach (alive, theirs, in an alive room of theirs)."""
    return Session.objects.filter(
        room_owned_filter(user=user, through="room__"),
        deleted_at__isnull=True,
        created_by=user,
    )


def sessions_for_room(*, user: User, room_id: Any) -> QuerySet[Session]:
    """The user's sessions of one of their rooms, newest first; 404 when the room is not
    reachable."""
    room = room_get_for_user(user=user, room_id=room_id)
    return Session.objects.filter(room=room, deleted_at__isnull=True, created_by=user).order_by(
        "-created_at", "-id"
    )


def session_get_for_user(*, user: User, session_id: Any, room_id: Any = None) -> Session:
    """One reachable session with its room, in one query; or 404 `not_found` (missing, deleted,
    in a deleted room, or not the user's — indistinguishable). With `room_id`, the session must
    also belong to that room (the nested `rooms/{room_id}/sessions/{session_id}` paths)."""
    pk = parse_id(session_id)
    if pk is None:
        raise not_found()
    sessions = sessions_for_user(user=user).select_related("room").filter(pk=pk)
    if room_id is not None:
        room_pk = parse_id(room_id)
        if room_pk is None:
            raise not_found()
        sessions = sessions.filter(room_id=room_pk)
    session = sessions.first()
    if session is None:
        raise not_found()
    return session
