"""Every request body of the API, through HTTP: strict input (a field the endpoint does not
define is a 400 naming it) and hostile input (huge or malformed values are refused at once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from accounts.models import ApiKey
from pantheon.api.serializers import MAX_UNKNOWN_FIELDS_REPORTED
from rooms.models import Agent, Room
from sessions.models import Session, Turn
from testing import factories
from testing.factories import DEFAULT_MODEL

pytestmark = pytest.mark.django_db

TWO_MB = 2_000_000
# Seconds: the old quadratic check took minutes on these bodies; the answer now takes milliseconds.
HANG_GUARD = 5


@dataclass(frozen=True)
class Endpoint:
    """A body-taking operation: a valid body and the text fields it takes."""

    method: str
    path: str  # with {room}, {agent} and {session} placeholders
    body: dict[str, Any]
    text_fields: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


AGENT_BODY = {"name": "Ada", "handle": "ada2", "system_prompt": "Hi.", "model": DEFAULT_MODEL}
ENDPOINTS = [
    Endpoint(
        "post",
        "/api/v1/rooms",
        {"name": "R"},
        ("name", "description", "default_mode", "manager_model", "manager_instructions"),
    ),
    Endpoint(
        "patch",
        "/api/v1/rooms/{room}",
        {"name": "R"},
        ("name", "description", "default_mode", "manager_model", "manager_instructions"),
    ),
    Endpoint(
        "post",
        "/api/v1/rooms/{room}/agents",
        AGENT_BODY,
        ("name", "handle", "system_prompt", "model"),
    ),
    Endpoint(
        "patch",
        "/api/v1/rooms/{room}/agents/{agent}",
        {"name": "Ada"},
        ("name", "handle", "system_prompt", "model"),
    ),
    Endpoint("post", "/api/v1/rooms/{room}/sessions", {"title": "T"}, ("title",)),
    Endpoint("patch", "/api/v1/rooms/{room}/sessions/{session}", {"title": "T"}, ("title",)),
    Endpoint("post", "/api/v1/sessions/{session}/turns", {"input": "hi"}, ("input", "mode")),
    Endpoint("post", "/api/v1/auth/api-keys", {"name": "k"}, ("name", "expires_at")),
]
TEXT_FIELDS = [(e, name) for e in ENDPOINTS for name in e.text_fields]


@dataclass
class Owner:
    client: APIClient
    ids: dict[str, str]

    def send(self, endpoint: Endpoint, body: Any, **kwargs: Any) -> Any:
        path = endpoint.path.format(**self.ids)
        call = getattr(self.client, endpoint.method)
        if isinstance(body, bytes | str):
            return call(path, body, content_type="application/json", **kwargs)
        return call(path, body, format="json", **kwargs)


@pytest.fixture
def owner(owner_client: tuple[APIClient, Any]) -> Owner:
    client, user = owner_client
    room = factories.make_room(owner=user, name="Kept")
    agent = factories.make_agent(room, handle="ada", name="Kept")
    session = factories.make_session(room, title="Kept")
    ids = {"room": str(room.id), "agent": str(agent.id), "session": str(session.id)}
    return Owner(client=client, ids=ids)


def written() -> tuple[int, ...]:
    """What a refused request must not have changed."""
    names = (
        Room.objects.filter(name="Kept").count(),
        Agent.objects.filter(name="Kept").count(),
        Session.objects.filter(title="Kept").count(),
    )
    counts = (Room, Agent, Session, ApiKey, Turn)
    return (*(model.objects.count() for model in counts), *names)


def assert_invalid(response: Any, *fields: str) -> dict[str, Any]:
    """400 `validation_error` in the contract's shape whose details name exactly `fields`."""
    assert response.status_code == 400, response.content[:500]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == "validation_error"
    assert set(body["error"]["details"]) == set(fields), str(body)[:500]
    return body["error"]["details"]


# --- strict input ------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_a_misspelt_field_is_400_naming_it(owner: Owner, endpoint: Endpoint) -> None:
    before = written()
    response = owner.send(endpoint, {**endpoint.body, "mdoe": "round_table"})
    assert assert_invalid(response, "mdoe") == {"mdoe": ["Unknown field."]}
    assert written() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_read_only_fields_in_a_body_are_unknown(owner: Owner, endpoint: Endpoint) -> None:
    read_only = {
        "id": "00000000-0000-0000-0000-000000000000",
        "created_at": "2020-01-01T00:00:00Z",
        "deleted_at": "2020-01-01T00:00:00Z",
        "owner": "someone",
        "owner_id": 1,
    }
    before = written()
    assert_invalid(owner.send(endpoint, {**endpoint.body, **read_only}), *read_only)
    assert written() == before


def test_unknown_fields_are_named_next_to_the_other_errors(owner: Owner) -> None:
    details = assert_invalid(
        owner.send(ENDPOINTS[0], {"name": 5, "colour": "red"}), "name", "colour"
    )
    assert details["colour"] == ["Unknown field."]


def test_a_misspelt_turn_mode_is_not_mistaken_for_the_default(owner: Owner) -> None:
    turns = next(e for e in ENDPOINTS if e.path.endswith("/turns"))
    assert_invalid(owner.send(turns, {"input": "hi", "mdoe": "round_table"}), "mdoe")


def test_thousands_of_unknown_fields_are_named_up_to_a_bound(owner: Owner) -> None:
    body = {"name": "R", **{f"f{n}": n for n in range(10_000)}}
    response = owner.send(ENDPOINTS[0], body)
    assert response.status_code == 400
    assert len(response.json()["error"]["details"]) == MAX_UNKNOWN_FIELDS_REPORTED


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@pytest.mark.parametrize("body", ["[1, 2]", '"name"', "5", "null", "true", "[]"])
def test_a_body_that_is_not_an_object_is_400(owner: Owner, endpoint: Endpoint, body: str) -> None:
    before = written()
    response = owner.send(endpoint, body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "validation_error"
    assert written() == before


# --- hostile input -----------------------------------------------------------------------------


@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize(("endpoint", "name"), TEXT_FIELDS, ids=lambda v: str(v))
@pytest.mark.parametrize("tail", ["", "\x00"], ids=["plain", "nul"])
def test_a_2_mb_value_is_refused_at_once(
    owner: Owner, endpoint: Endpoint, name: str, tail: str
) -> None:
    before = written()
    value = "x" * TWO_MB + tail
    assert_invalid(owner.send(endpoint, {**endpoint.body, name: value}), name)
    assert written() == before


@pytest.mark.timeout(HANG_GUARD)
def test_a_200_kb_room_name_with_a_nul_is_refused_at_once(owner: Owner) -> None:
    assert_invalid(owner.send(ENDPOINTS[0], {"name": "x" * 200_000 + "\x00"}), "name")


@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("tail", ["\x00", " \x00 "])
def test_the_longest_allowed_input_with_a_nul_is_refused_at_once(owner: Owner, tail: str) -> None:
    # Within the length limit, so the character checks do run: they must be linear.
    turns = next(e for e in ENDPOINTS if e.path.endswith("/turns"))
    value = "x" * (settings.TURN_INPUT_MAX_CHARS - len(tail)) + tail
    assert_invalid(owner.send(turns, {"input": value}), "input")
    assert not Turn.objects.exists()


@pytest.mark.timeout(HANG_GUARD)
def test_a_huge_agent_list_is_refused_before_its_items_are_read(owner: Owner) -> None:
    turns = next(e for e in ENDPOINTS if e.path.endswith("/turns"))
    response = owner.send(turns, {"input": "hi", "agent_ids": ["not-a-uuid"] * 150_000})
    details = assert_invalid(response, "agent_ids")
    assert len(details["agent_ids"]) == 1  # one length error, not one error per item
