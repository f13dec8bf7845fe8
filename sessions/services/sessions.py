"""Writes for sessions. Callers pass a room or session obtained through the ownership guard
(`rooms.selectors.room_get_for_user`, `sessions.selectors.session_get_for_user`)."""

from __future__ import annotations

from django.utils import timezone

from accounts.models import User
from rooms.models import Room
from sessions.models import Session


def session_create(*, room: Room, user: User, title: str = "") -> Session:
    """Open a new conversation in `room`, created by `user` (its turns start at 1)."""
    return Session.objects.create(room=room, created_by=user, title=title)


def session_update(*, session: Session, title: str | None = None) -> Session:
    """Change the session's title (None leaves it as it is)."""
    if title is not None:
        session.title = title
        session.save(update_fields=["title", "updated_at"])
    return session


def session_delete(*, session: Session) -> None:
    """Soft-delete `session`: it disappears from the API (its turns and messages with it); the
    rows stay for usage and audit history."""
    session.deleted_at = timezone.now()
    session.save(update_fields=["deleted_at", "updated_at"])
