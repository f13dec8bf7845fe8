"""REST API for sessions (`rooms/{room_id}/sessions…`), through HTTP: the published API contract
(statuses, bodies, error codes)."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from sessions.models import Session
from testing.factories import make_room, make_session

pytestmark = pytest.mark.django_db

SESSION_FIELDS = {"id", "room_id", "title", "turn_count", "created_at", "updated_at"}
NOT_FOUND = {"error": {"code": "not_found", "message": "Not found.", "details": {}}}


def assert_invalid(response, *fields: str) -> None:
    """400 `validation_error` whose details name exactly `fields`."""
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"]["code"] == "validation_error"
    assert set(body["error"]["details"]) == set(fields), body


def sessions_url(room_id, session_id=None) -> str:
    return f"/api/v1/rooms/{room_id}/sessions" + (f"/{session_id}" if session_id else "")


@pytest.fixture
def client(owner_client):
    return owner_client[0]


@pytest.fixture
def owner(owner_client):
    return owner_client[1]


@pytest.fixture
def room(owner):
    return make_room(owner=owner)


# --- happy paths -------------------------------------------------------------------------------


def test_create_session(client, owner, room):
    response = client.post(sessions_url(room.id), {"title": "Kick-off"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == SESSION_FIELDS
    assert (body["room_id"], body["title"], body["turn_count"]) == (str(room.id), "Kick-off", 0)
    session = Session.objects.get(pk=body["id"])
    assert (session.room, session.created_by, session.deleted_at) == (room, owner, None)


def test_create_session_without_a_body(client, room):
    response = client.post(sessions_url(room.id))
    assert response.status_code == 201, response.content
    assert response.json()["title"] == ""


def test_unknown_and_read_only_fields_are_400_naming_them(client, room):
    response = client.post(
        sessions_url(room.id), {"title": "T", "turn_count": 99, "room_id": "x"}, format="json"
    )
    assert_invalid(response, "turn_count", "room_id")
    assert response.json()["error"]["details"]["room_id"] == ["Unknown field."]
    assert not Session.objects.exists()


def test_patch_cannot_move_or_delete_a_session_through_read_only_fields(client, owner, room):
    session = make_session(room, title="Kept")
    other_room = make_room(owner=owner)
    payload = {"title": "New", "deleted_at": "2020-01-01T00:00:00Z", "room_id": str(other_room.id)}
    response = client.patch(sessions_url(room.id, session.id), payload, format="json")
    assert_invalid(response, "deleted_at", "room_id")
    session.refresh_from_db()
    assert (session.title, session.room_id, session.deleted_at) == ("Kept", room.id, None)


def test_list_sessions_own_live_newest_first_paginated(client, owner, room, other_client):
    sessions = [make_session(room) for _ in range(3)]
    make_session(room, deleted_at=timezone.now())
    make_session(make_room(owner=owner))  # another room of the same user

    response = client.get(sessions_url(room.id))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 3
    assert [s["id"] for s in body["results"]] == [str(s.id) for s in reversed(sessions)]
    assert set(body["results"][0]) == SESSION_FIELDS

    page = client.get(sessions_url(room.id), {"limit": 1, "offset": 1}).json()
    assert [s["id"] for s in page["results"]] == [str(sessions[1].id)]
    assert page["next"] is not None and page["previous"] is not None


def test_turn_count_is_the_sessions_counter(client, room):
    session = make_session(room, turn_counter=3)
    assert client.get(sessions_url(room.id, session.id)).json()["turn_count"] == 3


def test_get_patch_delete_session(client, room):
    session = make_session(room, title="Old")
    url = sessions_url(room.id, session.id)

    response = client.get(url)
    assert response.status_code == 200
    assert response.json()["id"] == str(session.id)

    response = client.patch(url, {"title": "New"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["title"] == "New"
    assert client.patch(url, {}, format="json").json()["title"] == "New"

    assert client.delete(url).status_code == 204
    session.refresh_from_db()
    assert session.deleted_at is not None  # soft delete: the row stays
    for response in (
        client.get(url),
        client.patch(url, {"title": "x"}, format="json"),
        client.delete(url),
    ):
        assert response.status_code == 404
        assert response.json() == NOT_FOUND
    assert client.get(sessions_url(room.id)).json()["count"] == 0


# --- unreachable sessions ----------------------------------------------------------------------


def test_sessions_of_a_deleted_room_are_404(client, room):
    session = make_session(room)
    assert client.delete(f"/api/v1/rooms/{room.id}").status_code == 204

    for response in (
        client.get(sessions_url(room.id)),
        client.post(sessions_url(room.id), {"title": "T"}, format="json"),
        client.get(sessions_url(room.id, session.id)),
        client.patch(sessions_url(room.id, session.id), {"title": "x"}, format="json"),
        client.delete(sessions_url(room.id, session.id)),
    ):
        assert response.status_code == 404
        assert response.json() == NOT_FOUND
    session.refresh_from_db()
    assert session.title != "x" and session.deleted_at is None
    assert Session.objects.count() == 1


def test_another_users_sessions_are_404_like_missing_ones(client, other_client):
    foreign_room = make_room(owner=other_client[1])
    foreign = make_session(foreign_room, title="theirs")
    missing = uuid.uuid4()

    for response in (
        client.get(sessions_url(foreign_room.id)),
        client.post(sessions_url(foreign_room.id), {"title": "spy"}, format="json"),
        client.get(sessions_url(foreign_room.id, foreign.id)),
        client.get(sessions_url(foreign_room.id, missing)),
        client.get(sessions_url(missing, missing)),
        client.patch(sessions_url(foreign_room.id, foreign.id), {"title": "x"}, format="json"),
        client.delete(sessions_url(foreign_room.id, foreign.id)),
    ):
        assert response.status_code == 404
        assert response.json() == NOT_FOUND
    foreign.refresh_from_db()
    assert (foreign.title, foreign.deleted_at) == ("theirs", None)
    assert not Session.objects.filter(title="spy").exists()


def test_a_session_is_404_under_another_of_the_users_rooms(client, owner, room):
    session = make_session(make_room(owner=owner))
    assert client.get(sessions_url(room.id, session.id)).json() == NOT_FOUND
    assert client.delete(sessions_url(room.id, session.id)).status_code == 404
    session.refresh_from_db()
    assert session.deleted_at is None


def test_requests_without_a_bearer_are_401(api_client, room):
    response = api_client.get(sessions_url(room.id))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [{"title": 5}, {"title": None}, {"title": ["a"]}, {"title": "x" * 201}, {"title": "a\x00"}],
)
def test_create_and_patch_reject_an_invalid_title(client, room, payload):
    session = make_session(room, title="Kept")
    assert_invalid(client.post(sessions_url(room.id), payload, format="json"), "title")
    assert_invalid(client.patch(sessions_url(room.id, session.id), payload, format="json"), "title")
    assert list(Session.objects.values_list("title", flat=True)) == ["Kept"]


def test_malformed_json_non_object_and_wrong_content_type(client, room):
    session = make_session(room)
    for method, url in (
        ("post", sessions_url(room.id)),
        ("patch", sessions_url(room.id, session.id)),
    ):
        call = getattr(client, method)
        response = call(url, '{"title": ', content_type="application/json")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "validation_error"

        response = call(url, [1, 2], format="json")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "validation_error"

        response = call(url, "title=x", content_type="application/x-www-form-urlencoded")
        assert response.status_code == 415
        assert response.json()["error"]["code"] == "unsupported_media_type"
    assert Session.objects.count() == 1


def test_sessions_list_has_a_fixed_query_count(client, room, django_assert_num_queries):
    make_session(room)
    # The first request writes the API key's last-used stamp and caches the key's lookup.
    client.get(sessions_url(room.id))
    with django_assert_num_queries(3):  # room guard, count, page
        response = client.get(sessions_url(room.id))
    assert len(response.json()["results"]) == 1
    for _ in range(29):
        make_session(room)
    with django_assert_num_queries(3):
        response = client.get(sessions_url(room.id))
    assert len(response.json()["results"]) == 30
