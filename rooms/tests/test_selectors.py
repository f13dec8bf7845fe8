"""The ownership guard of every room-scoped API: one place decides what a user can reach, and
everything else is the same 404."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from pantheon.api.exceptions import http_status_of
from pantheon.errors import ApplicationError
from rooms.selectors import agent_get_for_user, agents_for_room, room_get_for_user, rooms_for_user
from sessions.selectors import session_get_for_user, sessions_for_room
from testing.factories import make_agent, make_room, make_session, make_user

pytestmark = pytest.mark.django_db


def _assert_not_found(exc_info: pytest.ExceptionInfo[ApplicationError]) -> None:
    exc = exc_info.value
    assert (http_status_of(exc.code), exc.code, exc.message, exc.details) == (
        404,
        "not_found",
        "Not found.",
        {},
    )


# --- rooms -------------------------------------------------------------------------------------


def test_rooms_for_user_lists_own_live_rooms_newest_first():
    owner, other = make_user(), make_user()
    older = make_room(owner=owner)
    newer = make_room(owner=owner)
    make_room(owner=owner, deleted_at=timezone.now())
    make_room(owner=other)

    assert list(rooms_for_user(user=owner)) == [newer, older]


def test_room_get_for_user_returns_own_room():
    room = make_room()
    assert room_get_for_user(user=room.owner, room_id=room.id) == room
    assert room_get_for_user(user=room.owner, room_id=str(room.id)) == room


@pytest.mark.parametrize("case", ["missing", "deleted", "not_yours", "not_a_uuid"])
def test_room_get_for_user_is_the_same_404_for_every_unreachable_room(case):
    owner = make_user()
    room = make_room(owner=owner)
    room_id = {
        "missing": uuid.uuid4(),
        "deleted": make_room(owner=owner, deleted_at=timezone.now()).id,
        "not_yours": make_room().id,
        "not_a_uuid": "nope",
    }[case]
    assert room.id != room_id

    with pytest.raises(ApplicationError) as exc_info:
        room_get_for_user(user=owner, room_id=room_id)
    _assert_not_found(exc_info)


# --- agents ------------------------------------------------------------------------------------


def test_agents_for_room_hides_deleted_agents_and_keeps_position_order():
    room = make_room()
    second = make_agent(room, position=5)
    first = make_agent(room, position=1)
    make_agent(room, position=0, deleted_at=timezone.now())
    assert list(agents_for_room(room=room)) == [first, second]


def test_agent_get_for_user_loads_agent_and_room_in_one_query(django_assert_num_queries):
    agent = make_agent()
    owner = agent.room.owner
    with django_assert_num_queries(1):
        found = agent_get_for_user(user=owner, room_id=agent.room_id, agent_id=agent.id)
        assert found.room.owner_id == owner.id
    assert found == agent


@pytest.mark.parametrize(
    "case", ["missing", "deleted_agent", "deleted_room", "not_yours", "other_room", "not_a_uuid"]
)
def test_agent_get_for_user_is_the_same_404_for_every_unreachable_agent(case):
    owner = make_user()
    room = make_room(owner=owner)
    agent = make_agent(room)
    room_id, agent_id = room.id, agent.id
    if case == "missing":
        agent_id = uuid.uuid4()
    elif case == "deleted_agent":
        agent.deleted_at = timezone.now()
        agent.save()
    elif case == "deleted_room":
        room.deleted_at = timezone.now()
        room.save()
    elif case == "not_yours":
        owner = make_user()
    elif case == "other_room":
        room_id = make_room(owner=owner).id
    elif case == "not_a_uuid":
        agent_id = "x"

    with pytest.raises(ApplicationError) as exc_info:
        agent_get_for_user(user=owner, room_id=room_id, agent_id=agent_id)
    _assert_not_found(exc_info)


# --- sessions (built on the same guard) --------------------------------------------------------


def test_session_get_for_user_loads_session_and_room_in_one_query(django_assert_num_queries):
    session = make_session()
    owner = session.room.owner
    with django_assert_num_queries(1):
        found = session_get_for_user(user=owner, session_id=session.id)
        assert found.room.name == session.room.name
    assert found == session
    assert session_get_for_user(user=owner, session_id=session.id, room_id=session.room_id) == (
        session
    )


@pytest.mark.parametrize(
    "case",
    ["missing", "deleted", "deleted_room", "not_yours", "other_room", "not_a_uuid", "bad_room"],
)
def test_session_get_for_user_is_the_same_404_for_every_unreachable_session(case):
    owner = make_user()
    room = make_room(owner=owner)
    session = make_session(room)
    session_id, room_id = session.id, room.id
    if case == "missing":
        session_id = uuid.uuid4()
    elif case == "deleted":
        session.deleted_at = timezone.now()
        session.save()
    elif case == "deleted_room":
        room.deleted_at = timezone.now()
        room.save()
    elif case == "not_yours":
        owner = make_user()
    elif case == "other_room":
        room_id = make_room(owner=owner).id
    elif case == "not_a_uuid":
        session_id = "12"
    elif case == "bad_room":
        room_id = "12"

    with pytest.raises(ApplicationError) as exc_info:
        session_get_for_user(user=owner, session_id=session_id, room_id=room_id)
    _assert_not_found(exc_info)


def test_sessions_for_room_lists_own_live_sessions_and_guards_the_room():
    owner = make_user()
    room = make_room(owner=owner)
    older = make_session(room)
    newer = make_session(room)
    make_session(room, deleted_at=timezone.now())
    make_session(make_room(owner=owner))

    assert list(sessions_for_room(user=owner, room_id=room.id)) == [newer, older]
    with pytest.raises(ApplicationError) as exc_info:
        sessions_for_room(user=make_user(), room_id=room.id)
    _assert_not_found(exc_info)
