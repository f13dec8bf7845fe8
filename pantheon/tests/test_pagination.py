"""List pagination: `limit`/`offset` and the message cursor are validated (400 naming the
parameter), never ignored."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from rest_framework.test import APIClient

from pantheon.api.pagination import MAX_OFFSET
from sessions.models import Message, MessageRole
from testing import factories

pytestmark = pytest.mark.django_db

KEYS = "/api/v1/auth/api-keys"


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "null"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "x"}, "offset"),
        ({"offset": str(MAX_OFFSET + 1)}, "offset"),
        ({"offset": "9" * 40}, "offset"),
    ],
)
def test_bad_limit_or_offset_is_400_naming_it(
    owner_client: tuple[APIClient, Any], params: dict[str, str], name: str
) -> None:
    client, _ = owner_client
    response = client.get(KEYS, params)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert name in error["details"]


def test_limit_and_offset_page_through_the_list(owner_client: tuple[APIClient, Any]) -> None:
    client, owner = owner_client
    for n in range(4):
        factories.make_api_key(owner, name=f"k{n}")
    everything = client.get(KEYS, {"limit": "200"}).json()
    assert everything["count"] == 5 and len(everything["results"]) == 5
    assert everything["next"] is None

    first = client.get(KEYS, {"limit": "2"}).json()
    assert [k["id"] for k in first["results"]] == [k["id"] for k in everything["results"][:2]]
    assert first["next"] is not None and first["previous"] is None
    last = client.get(KEYS, {"limit": "2", "offset": "4"}).json()
    assert [k["id"] for k in last["results"]] == [everything["results"][4]["id"]]
    assert last["previous"] is not None
    beyond = client.get(KEYS, {"offset": str(MAX_OFFSET)}).json()
    assert beyond["results"] == []


def test_schema_states_the_accepted_ranges(api_client: APIClient) -> None:
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    parameters = {p["name"]: p["schema"] for p in schema["paths"][KEYS]["get"]["parameters"]}
    assert parameters["limit"]["minimum"] == 1 and parameters["limit"]["maximum"] == 200
    assert parameters["offset"]["minimum"] == 0 and parameters["offset"]["maximum"] == MAX_OFFSET


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "",
        "é",
        base64.b64encode(b"o=-1").decode(),
        base64.b64encode(b"r=maybe").decode(),
        base64.b64encode(b"p=not-a-date").decode(),
        base64.b64encode(b"p=2020-13-45 00:00:00").decode(),
        base64.b64encode(b"p=2020-01-01\x00").decode(),
    ],
)
def test_bad_message_cursor_is_400_naming_it(
    owner_client: tuple[APIClient, Any], cursor: str
) -> None:
    client, owner = owner_client
    session = factories.make_session(factories.make_room(owner=owner))
    response = client.get(f"/api/v1/sessions/{session.id}/messages", {"cursor": cursor})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"] == {"cursor": ["Invalid cursor"]}


def test_message_cursor_pages_through_the_messages(owner_client: tuple[APIClient, Any]) -> None:
    client, owner = owner_client
    session = factories.make_session(factories.make_room(owner=owner))
    Message.objects.bulk_create(
        Message(session=session, role=MessageRole.USER, content=f"m{n}", sequence=n)
        for n in range(3)
    )
    url = f"/api/v1/sessions/{session.id}/messages"
    first = client.get(url, {"limit": 2}).json()
    assert [m["content"] for m in first["results"]] == ["m0", "m1"]
    rest = client.get(first["next"]).json()
    assert [m["content"] for m in rest["results"]] == ["m2"]
