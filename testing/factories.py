"""Test factories: the smallest valid objects, built through the real services and models."""

from __future__ import annotations

import itertools
from typing import Any

from django.db.models import Max

from accounts.models import User
from accounts.services import api_key_create
from rooms.models import Agent, Room
from sessions.models import Session

_seq = itertools.count(1)

DEFAULT_MODEL = "openai/gpt-4o-mini"


def make_user(**fields: Any) -> User:
    fields.setdefault("email", f"user{next(_seq)}@example.com")
    return User.objects.create_user(**fields)


def make_api_key(user: User | None = None, **fields: Any) -> tuple[User, str]:
    """A user and a working bearer token for them."""
    user = user or make_user()
    issued = api_key_create(user=user, name=fields.pop("name", "test"), **fields)
    return user, issued.key


def make_room(owner: User | None = None, **fields: Any) -> Room:
    fields.setdefault("name", f"Room {next(_seq)}")
    return Room.objects.create(owner=owner or make_user(), **fields)


def make_agent(room: Room | None = None, **fields: Any) -> Agent:
    room = room or make_room()
    n = next(_seq)
    fields.setdefault("name", f"Agent {n}")
    fields.setdefault("handle", f"agent{n}")
    fields.setdefault("system_prompt", f"You are agent {n}.")
    fields.setdefault("model_id", DEFAULT_MODEL)
    if "position" not in fields:
        # Last in the room, like the service does (deleted agents keep their old positions).
        last = room.agents.filter(deleted_at__isnull=True).aggregate(last=Max("position"))["last"]
        fields["position"] = 0 if last is None else last + 1
    return Agent.objects.create(room=room, **fields)


def make_session(room: Room | None = None, **fields: Any) -> Session:
    room = room or make_room()
    fields.setdefault("created_by", room.owner)
    return Session.objects.create(room=room, **fields)
