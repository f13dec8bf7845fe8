"""REST API for rooms and agents, through HTTP: the published API contract (statuses, bodies,
error codes)."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from llm.models import ModelConfig
from rooms.models import Agent, Room
from rooms.services import AGENT_POSITION_MAX
from testing.factories import DEFAULT_MODEL, make_agent, make_room

pytestmark = pytest.mark.django_db

ROOM_FIELDS = {
    "id",
    "name",
    "description",
    "default_mode",
    "manager_model",
    "manager_instructions",
    "created_at",
    "updated_at",
}
AGENT_FIELDS = {
    "id",
    "room_id",
    "name",
    "handle",
    "system_prompt",
    "model",
    "temperature",
    "max_output_tokens",
    "tools",
    "position",
    "is_active",
    "created_at",
    "updated_at",
}
NOT_FOUND = {"error": {"code": "not_found", "message": "Not found.", "details": {}}}


def assert_invalid(response, *fields: str) -> None:
    """400 `validation_error` whose details name exactly `fields`."""
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"]["code"] == "validation_error"
    assert set(body["error"]["details"]) == set(fields), body


def agent_body(**fields):
    return {
        "name": "Ada",
        "handle": "ada",
        "system_prompt": "You are Ada.",
        "model": DEFAULT_MODEL,
        **fields,
    }


@pytest.fixture
def client(owner_client):
    return owner_client[0]


@pytest.fixture
def owner(owner_client):
    return owner_client[1]


@pytest.fixture
def room(owner):
    return make_room(owner=owner)


def rooms_url(room_id=None) -> str:
    return "/api/v1/rooms" + (f"/{room_id}" if room_id else "")


def agents_url(room_id, agent_id=None) -> str:
    return f"/api/v1/rooms/{room_id}/agents" + (f"/{agent_id}" if agent_id else "")


# --- rooms: happy paths ------------------------------------------------------------------------


def test_requests_without_a_bearer_are_401(api_client, room):
    for response in (api_client.get(rooms_url()), api_client.get(agents_url(room.id))):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"


def test_create_room_with_defaults(client, owner):
    response = client.post(rooms_url(), {"name": "  Council  "}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == ROOM_FIELDS
    assert body["name"] == "Council"
    assert body["description"] == ""
    assert body["default_mode"] == "round_table"
    assert body["manager_model"] is None
    assert body["manager_instructions"] == ""
    assert body["created_at"].endswith("Z")
    room = Room.objects.get(pk=body["id"])
    assert room.owner == owner


def test_create_room_with_every_field(client):
    payload = {
        "name": "Council",
        "description": "Decides things.",
        "default_mode": "orchestrator",
        "manager_model": "openai/gpt-4o",
        "manager_instructions": "Pick the best two.",
    }
    response = client.post(rooms_url(), payload, format="json")
    assert response.status_code == 201, response.content
    assert {k: response.json()[k] for k in payload} == payload


def test_unknown_and_read_only_fields_are_400_naming_them(client, other_client):
    _, other = other_client
    response = client.post(
        rooms_url(),
        {"name": "R", "owner": str(other.id), "id": str(uuid.uuid4()), "deleted_at": "2020-01-01"},
        format="json",
    )
    assert_invalid(response, "owner", "id", "deleted_at")
    assert response.json()["error"]["details"]["owner"] == ["Unknown field."]
    assert not Room.objects.exists()


def test_list_rooms_shows_own_live_rooms_newest_first_paginated(client, owner, other_client):
    rooms = [make_room(owner=owner) for _ in range(3)]
    make_room(owner=owner, deleted_at=timezone.now())
    make_room(owner=other_client[1])

    response = client.get(rooms_url())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 3
    assert [r["id"] for r in body["results"]] == [str(r.id) for r in reversed(rooms)]
    assert set(body["results"][0]) == ROOM_FIELDS

    page = client.get(rooms_url(), {"limit": 2, "offset": 1}).json()
    assert [r["id"] for r in page["results"]] == [str(rooms[1].id), str(rooms[0].id)]
    assert page["count"] == 3 and page["next"] is None and page["previous"] is not None
    first = client.get(rooms_url(), {"limit": 2}).json()
    assert first["next"] is not None and first["previous"] is None


def test_get_patch_delete_room(client, room):
    response = client.get(rooms_url(room.id))
    assert response.status_code == 200
    assert response.json()["id"] == str(room.id)

    response = client.patch(
        rooms_url(room.id),
        {"name": "Renamed", "default_mode": "manual", "manager_model": DEFAULT_MODEL},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["name"], body["default_mode"], body["manager_model"]) == (
        "Renamed",
        "manual",
        DEFAULT_MODEL,
    )
    assert body["description"] == room.description  # untouched by a partial update

    response = client.patch(rooms_url(room.id), {"manager_model": None}, format="json")
    assert response.status_code == 200
    assert response.json()["manager_model"] is None

    response = client.delete(rooms_url(room.id))
    assert response.status_code == 204
    assert response.content == b""
    room.refresh_from_db()
    assert room.deleted_at is not None  # soft delete: the row stays


def test_empty_patch_changes_nothing(client, room):
    response = client.patch(rooms_url(room.id), {}, format="json")
    assert response.status_code == 200
    assert response.json()["name"] == room.name


def test_deleted_room_is_gone_everywhere(client, room):
    agent = make_agent(room)
    assert client.delete(rooms_url(room.id)).status_code == 204

    assert client.get(rooms_url()).json()["count"] == 0
    for response in (
        client.get(rooms_url(room.id)),
        client.patch(rooms_url(room.id), {"name": "x"}, format="json"),
        client.delete(rooms_url(room.id)),
        client.get(agents_url(room.id)),
        client.post(agents_url(room.id), agent_body(handle="new"), format="json"),
        client.get(agents_url(room.id, agent.id)),
        client.patch(agents_url(room.id, agent.id), {"name": "x"}, format="json"),
        client.delete(agents_url(room.id, agent.id)),
    ):
        assert response.status_code == 404
        assert response.json() == NOT_FOUND
    agent.refresh_from_db()
    assert agent.name != "x" and agent.deleted_at is None


def test_another_users_room_and_agents_are_404_like_missing_ones(client, other_client):
    foreign = make_room(owner=other_client[1])
    agent = make_agent(foreign)
    missing = uuid.uuid4()

    for response in (
        client.get(rooms_url(foreign.id)),
        client.get(rooms_url(missing)),
        client.patch(rooms_url(foreign.id), {"name": "mine"}, format="json"),
        client.delete(rooms_url(foreign.id)),
        client.get(agents_url(foreign.id)),
        client.post(agents_url(foreign.id), agent_body(handle="spy"), format="json"),
        client.get(agents_url(foreign.id, agent.id)),
        client.get(agents_url(foreign.id, missing)),
        client.patch(agents_url(foreign.id, agent.id), {"name": "mine"}, format="json"),
        client.delete(agents_url(foreign.id, agent.id)),
    ):
        assert response.status_code == 404
        assert response.json() == NOT_FOUND
    foreign.refresh_from_db()
    agent.refresh_from_db()
    assert foreign.name != "mine" and foreign.deleted_at is None
    assert agent.name != "mine" and agent.deleted_at is None
    assert not Agent.objects.filter(handle="spy").exists()


def test_non_uuid_ids_are_404(client):
    assert client.get("/api/v1/rooms/not-a-uuid").json() == NOT_FOUND
    assert client.get("/api/v1/rooms/not-a-uuid/agents").status_code == 404


def test_trailing_slash_is_not_required_and_post_is_never_redirected(client):
    response = client.post(rooms_url(), {"name": "R"}, format="json")
    assert response.status_code == 201


# --- rooms: bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({}, ["name"]),
        ({"name": None}, ["name"]),
        ({"name": ""}, ["name"]),
        ({"name": "   "}, ["name"]),
        ({"name": 123}, ["name"]),
        ({"name": ["a"]}, ["name"]),
        ({"name": "x" * 201}, ["name"]),
        ({"name": "a\x00b"}, ["name"]),
        ({"name": "R", "description": 5}, ["description"]),
        ({"name": "R", "description": "x" * 10_001}, ["description"]),
        ({"name": "R", "default_mode": "democracy"}, ["default_mode"]),
        ({"name": "R", "default_mode": 1}, ["default_mode"]),
        ({"name": "R", "manager_model": "nobody/none"}, ["manager_model"]),
        ({"name": "R", "manager_model": 7}, ["manager_model"]),
        ({"name": "R", "manager_model": ""}, ["manager_model"]),
        ({"name": "R", "manager_instructions": {"a": 1}}, ["manager_instructions"]),
        (
            {"name": 1, "default_mode": "x", "description": False},
            ["name", "default_mode", "description"],
        ),
    ],
)
def test_create_room_rejects_invalid_fields(client, payload, fields):
    assert_invalid(client.post(rooms_url(), payload, format="json"), *fields)
    assert not Room.objects.exists()


def test_inactive_manager_model_is_rejected(client, room):
    ModelConfig.objects.filter(pk="openai/gpt-4o").update(is_active=False)
    assert_invalid(
        client.post(rooms_url(), {"name": "R", "manager_model": "openai/gpt-4o"}, format="json"),
        "manager_model",
    )
    assert_invalid(
        client.patch(rooms_url(room.id), {"manager_model": "openai/gpt-4o"}, format="json"),
        "manager_model",
    )


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"name": None}, ["name"]),
        ({"name": ""}, ["name"]),
        ({"name": 5}, ["name"]),
        ({"description": None}, ["description"]),
        ({"default_mode": "chaos"}, ["default_mode"]),
        ({"manager_model": "nobody/none"}, ["manager_model"]),
        ({"manager_instructions": 3.5}, ["manager_instructions"]),
        ({"deleted_at": "2020-01-01T00:00:00Z", "owner_id": 1}, ["deleted_at", "owner_id"]),
        ({"name": "Typo", "nmae": "x"}, ["nmae"]),
        ({"id": str(uuid.uuid4()), "created_at": "2020-01-01"}, ["id", "created_at"]),
    ],
)
def test_patch_room_rejects_invalid_fields(client, room, payload, fields):
    assert_invalid(client.patch(rooms_url(room.id), payload, format="json"), *fields)
    room.refresh_from_db()
    assert room.name.startswith("Room ") and room.default_mode == "round_table"


@pytest.fixture
def write_urls(room):
    agent = make_agent(room)
    return [
        ("post", rooms_url()),
        ("patch", rooms_url(room.id)),
        ("post", agents_url(room.id)),
        ("patch", agents_url(room.id, agent.id)),
    ]


def test_malformed_json_is_400_on_every_write(client, write_urls):
    for method, url in write_urls:
        response = getattr(client, method)(url, '{"name": ', content_type="application/json")
        assert response.status_code == 400, (method, url)
        assert response.json()["error"]["code"] == "validation_error"


def test_a_json_body_that_is_not_an_object_is_400_on_every_write(client, write_urls):
    for method, url in write_urls:
        response = getattr(client, method)(url, ["name"], format="json")
        assert response.status_code == 400, (method, url)
        assert response.json()["error"]["code"] == "validation_error"


def test_wrong_content_type_is_415_on_every_write(client, write_urls):
    for method, url in write_urls:
        response = getattr(client, method)(url, "name=x", content_type="text/plain")
        assert response.status_code == 415, (method, url)
        assert response.json()["error"]["code"] == "unsupported_media_type"


def test_method_not_allowed_is_405_in_the_error_shape(client, room):
    response = client.put(rooms_url(room.id), {"name": "x"}, format="json")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


# --- agents: happy paths -----------------------------------------------------------------------


def test_create_agent_with_defaults(client, room):
    response = client.post(agents_url(room.id), agent_body(), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == AGENT_FIELDS
    assert body["room_id"] == str(room.id)
    assert (body["handle"], body["model"], body["temperature"]) == ("ada", DEFAULT_MODEL, 0.7)
    assert (body["max_output_tokens"], body["position"], body["is_active"]) == (None, 0, True)


def test_create_agent_with_every_field(client, room):
    payload = agent_body(temperature=1.25, max_output_tokens=16_384, position=4, is_active=False)
    response = client.post(agents_url(room.id), payload, format="json")
    assert response.status_code == 201, response.content
    assert {k: response.json()[k] for k in payload} == payload


def test_handle_is_stored_lower_case_and_unique_whatever_the_case(client, room):
    response = client.post(agents_url(room.id), agent_body(handle="AdA_9-x"), format="json")
    assert response.status_code == 201
    assert response.json()["handle"] == "ada_9-x"
    assert Agent.objects.get().handle == "ada_9-x"

    duplicate = client.post(agents_url(room.id), agent_body(handle="ADA_9-X"), format="json")
    assert_invalid(duplicate, "handle")
    assert Agent.objects.count() == 1


def test_the_same_handle_is_fine_in_another_room(client, owner, room):
    other_room = make_room(owner=owner)
    make_agent(other_room, handle="ada")
    response = client.post(agents_url(room.id), agent_body(handle="ada"), format="json")
    assert response.status_code == 201


def test_temperature_is_rounded_to_two_places(client, room):
    response = client.post(agents_url(room.id), agent_body(temperature=0.125), format="json")
    assert response.status_code == 201
    assert response.json()["temperature"] == 0.13
    assert str(Agent.objects.get().temperature) == "0.13"


def test_new_agents_go_last(client, room):
    make_agent(room, position=3)
    make_agent(room, position=10, deleted_at=timezone.now())  # deleted agents do not count
    first = client.post(agents_url(room.id), agent_body(handle="b"), format="json").json()
    second = client.post(agents_url(room.id), agent_body(handle="c"), format="json").json()
    assert (first["position"], second["position"]) == (4, 5)


def test_new_agents_go_last_at_the_highest_position(client, room):
    top = client.post(
        agents_url(room.id), agent_body(handle="top", position=AGENT_POSITION_MAX), format="json"
    )
    assert top.status_code == 201, top.content
    for handle in ("b", "c"):
        response = client.post(agents_url(room.id), agent_body(handle=handle), format="json")
        assert response.status_code == 201, response.content
        assert response.json()["position"] == AGENT_POSITION_MAX
    listed = client.get(agents_url(room.id)).json()["results"]
    assert [a["handle"] for a in listed] == ["top", "b", "c"]


def test_new_agents_go_last_after_a_stored_position_beyond_the_bound(client, room):
    # A position stored before the bound existed: "after it" must not overflow the column.
    make_agent(room, handle="old", position=2_147_483_647)
    response = client.post(agents_url(room.id), agent_body(handle="new"), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["position"] == 2_147_483_647
    listed = client.get(agents_url(room.id)).json()["results"]
    assert [a["handle"] for a in listed] == ["old", "new"]


def test_list_agents_in_position_order_without_deleted_ones(client, room):
    c = make_agent(room, position=2)
    a = make_agent(room, position=0)
    b = make_agent(room, position=1)
    make_agent(room, position=1, deleted_at=timezone.now())

    response = client.get(agents_url(room.id))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 3
    assert [r["id"] for r in body["results"]] == [str(a.id), str(b.id), str(c.id)]
    assert set(body["results"][0]) == AGENT_FIELDS
    assert [
        r["id"]
        for r in client.get(agents_url(room.id), {"limit": 1, "offset": 2}).json()["results"]
    ] == [str(c.id)]


def test_get_patch_delete_agent(client, room):
    agent = make_agent(room, handle="ada")
    url = agents_url(room.id, agent.id)

    assert client.get(url).json()["handle"] == "ada"

    response = client.patch(
        url,
        {"handle": "Bo", "temperature": 0, "max_output_tokens": 100, "is_active": False},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["handle"], body["temperature"], body["max_output_tokens"], body["is_active"]) == (
        "bo",
        0.0,
        100,
        False,
    )
    assert body["name"] == agent.name

    response = client.patch(url, {"max_output_tokens": None, "position": 9}, format="json")
    assert (response.json()["max_output_tokens"], response.json()["position"]) == (None, 9)

    assert client.delete(url).status_code == 204
    for response in (
        client.get(url),
        client.patch(url, {"name": "x"}, format="json"),
        client.delete(url),
    ):
        assert response.json() == NOT_FOUND
    assert client.get(agents_url(room.id)).json()["count"] == 0
    agent.refresh_from_db()
    assert agent.deleted_at is not None  # kept for the messages that reference it

    # Its handle is free again.
    assert (
        client.post(agents_url(room.id), agent_body(handle="bo"), format="json").status_code == 201
    )


def test_agent_of_another_room_is_404_under_the_wrong_room(client, owner, room):
    agent = make_agent(make_room(owner=owner))
    assert client.get(agents_url(room.id, agent.id)).json() == NOT_FOUND


# --- agents: bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "invalid"),
    [
        ({"name": None}, ["name"]),
        ({"name": ""}, ["name"]),
        ({"name": 1}, ["name"]),
        ({"name": "x" * 101}, ["name"]),
        ({"handle": None}, ["handle"]),
        ({"handle": ""}, ["handle"]),
        ({"handle": "9lives"}, ["handle"]),
        ({"handle": "_ada"}, ["handle"]),
        ({"handle": "a b"}, ["handle"]),
        ({"handle": "ada!"}, ["handle"]),
        ({"handle": "é"}, ["handle"]),
        ({"handle": "a" * 33}, ["handle"]),
        ({"handle": 7}, ["handle"]),
        ({"system_prompt": None}, ["system_prompt"]),
        ({"system_prompt": 12}, ["system_prompt"]),
        ({"model": None}, ["model"]),
        ({"model": "nobody/none"}, ["model"]),
        ({"model": ["openai/gpt-4o-mini"]}, ["model"]),
        ({"temperature": 2.01}, ["temperature"]),
        ({"temperature": -0.5}, ["temperature"]),
        ({"temperature": "0.5"}, ["temperature"]),
        ({"temperature": True}, ["temperature"]),
        ({"temperature": None}, ["temperature"]),
        ({"max_output_tokens": 0}, ["max_output_tokens"]),
        ({"max_output_tokens": 16_385}, ["max_output_tokens"]),  # gpt-4o-mini allows 16,384
        ({"max_output_tokens": 2**40}, ["max_output_tokens"]),
        ({"max_output_tokens": "100"}, ["max_output_tokens"]),
        ({"max_output_tokens": 10.5}, ["max_output_tokens"]),
        ({"max_output_tokens": True}, ["max_output_tokens"]),
        ({"position": -1}, ["position"]),
        ({"position": "1"}, ["position"]),
        ({"position": None}, ["position"]),
        ({"position": AGENT_POSITION_MAX + 1}, ["position"]),
        ({"position": 2_147_483_647}, ["position"]),
        ({"room_id": "x", "functions": []}, ["room_id", "functions"]),
        ({"is_active": "yes"}, ["is_active"]),
        ({"is_active": 1}, ["is_active"]),
        ({"is_active": None}, ["is_active"]),
        ({"handle": "1", "model": 5, "temperature": 9}, ["handle", "model", "temperature"]),
    ],
)
def test_create_agent_rejects_invalid_fields(client, room, fields, invalid):
    assert_invalid(client.post(agents_url(room.id), agent_body(**fields), format="json"), *invalid)
    assert not Agent.objects.exists()


@pytest.mark.parametrize("field", ["temperature", "max_output_tokens", "position"])
@pytest.mark.parametrize("number", ["1e400", "-1e400", "1e308"])
def test_out_of_range_json_numbers_are_400(client, room, field, number):
    # Python's json reads 1e400 as infinity; it must be refused, never reach the database.
    body = (
        f'{{"name": "A", "handle": "a", "system_prompt": "", "model": "{DEFAULT_MODEL}", '
        f'"{field}": {number}}}'
    )
    response = client.post(agents_url(room.id), body, content_type="application/json")
    assert_invalid(response, field)


@pytest.mark.parametrize("missing", ["name", "handle", "system_prompt", "model"])
def test_create_agent_requires_its_fields(client, room, missing):
    payload = agent_body()
    del payload[missing]
    assert_invalid(client.post(agents_url(room.id), payload, format="json"), missing)


def test_inactive_model_is_rejected(client, room):
    agent = make_agent(room)
    ModelConfig.objects.filter(pk="openai/gpt-4o").update(is_active=False)
    assert_invalid(
        client.post(agents_url(room.id), agent_body(model="openai/gpt-4o"), format="json"),
        "model",
    )
    assert_invalid(
        client.patch(agents_url(room.id, agent.id), {"model": "openai/gpt-4o"}, format="json"),
        "model",
    )


@pytest.mark.parametrize(
    ("path", "field"),
    [("agents", "model"), ("rooms", "manager_model")],
)
@pytest.mark.parametrize("model_id", ["openai/gpt-4o", "nobody/none"])
def test_a_model_the_catalog_does_not_offer_points_at_the_catalog(
    client, room, path, field, model_id
):
    ModelConfig.objects.filter(pk="openai/gpt-4o").update(is_active=False)
    if path == "agents":
        response = client.post(agents_url(room.id), agent_body(model=model_id), format="json")
    else:
        response = client.post(rooms_url(), {"name": "R", field: model_id}, format="json")
    assert_invalid(response, field)
    error = response.json()["error"]
    assert "GET /api/v1/models" in error["message"]
    assert error["details"][field] == [error["message"]]
    assert model_id in error["message"]


@pytest.mark.parametrize(
    ("payload", "invalid"),
    [
        ({"name": None}, ["name"]),
        ({"handle": "Not Valid"}, ["handle"]),
        ({"handle": "taken"}, ["handle"]),
        ({"handle": "TAKEN"}, ["handle"]),
        ({"model": "nobody/none"}, ["model"]),
        ({"temperature": 3}, ["temperature"]),
        ({"max_output_tokens": 0}, ["max_output_tokens"]),
        ({"max_output_tokens": 5000, "model": "openai/gpt-3.5-turbo"}, ["max_output_tokens"]),
        ({"model": "openai/gpt-3.5-turbo"}, ["max_output_tokens"]),  # keeps 10,000: too many
        ({"position": 1.5}, ["position"]),
        ({"position": 2_147_483_647}, ["position"]),
        ({"room_id": str(uuid.uuid4())}, ["room_id"]),
        ({"is_active": "false"}, ["is_active"]),
    ],
)
def test_patch_agent_rejects_invalid_fields(client, room, payload, invalid):
    make_agent(room, handle="taken")
    agent = make_agent(room, handle="mine", max_output_tokens=10_000)
    response = client.patch(agents_url(room.id, agent.id), payload, format="json")
    assert_invalid(response, *invalid)
    agent.refresh_from_db()
    assert (agent.handle, agent.model_id, agent.max_output_tokens) == (
        "mine",
        DEFAULT_MODEL,
        10_000,
    )


# --- query counts ------------------------------------------------------------------------------


def _queries_for(client, url: str) -> tuple[int, int]:
    """(queries, results) for one GET of `url`."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries), len(response.json()["results"])


def test_rooms_list_has_a_fixed_query_count(client, owner, django_assert_num_queries):
    make_room(owner=owner)
    client.get(rooms_url())  # the API key's last-used stamp is written on first use only
    one, shown = _queries_for(client, rooms_url())
    assert shown == 1
    assert one <= 3  # authentication, count, page

    for _ in range(29):
        make_room(owner=owner, manager_model_id=DEFAULT_MODEL)
    with django_assert_num_queries(one):
        response = client.get(rooms_url())
    assert len(response.json()["results"]) == 30


def test_agents_list_has_a_fixed_query_count(client, room, django_assert_num_queries):
    make_agent(room)
    client.get(agents_url(room.id))
    one, shown = _queries_for(client, agents_url(room.id))
    assert shown == 1
    assert one <= 4  # authentication, room guard, count, page

    for _ in range(29):
        make_agent(room)
    with django_assert_num_queries(one):
        response = client.get(agents_url(room.id))
    assert len(response.json()["results"]) == 30
