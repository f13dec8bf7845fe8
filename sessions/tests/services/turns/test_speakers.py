"""Who answers a turn, through HTTP against the stub provider: manual @mentions and
agent_ids (in order, once each), and the 422s that write nothing."""

from __future__ import annotations

import pytest

from sessions.models import Message, Turn
from sessions.tests.builders import Room

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("write_path")]


@pytest.fixture
def room(db, llm_stub) -> Room:  # type: ignore[no-untyped-def]
    return Room()


def _system_prompts(stub) -> list[str]:  # type: ignore[no-untyped-def]
    """Which agent each recorded request was for, by its system prompt."""
    return [r.body["messages"][0]["content"] for r in stub.requests]


# --- manual --------------------------------------------------------------------------------------


def test_manual_mentions_answer_once_in_order(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    response = room.post("@Cy first, then @ada — and @CY again", mode="manual")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["mode"] == "manual"
    assert [m["agent"]["handle"] for m in body["messages"][1:]] == ["cy", "ada"]
    assert _system_prompts(llm_stub) == ["You are Cy.", "You are Ada."]
    assert body["assistant_output"].startswith("Cy: ")


def test_manual_agent_ids_decide_and_mentions_are_ignored(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    response = room.post("@ada please", mode="manual", agent_ids=[str(room.bo.id)])
    assert response.status_code == 201
    assert [m["agent"]["handle"] for m in response.json()["messages"][1:]] == ["bo"]


@pytest.mark.parametrize(
    ("text", "body", "code"),
    [
        ("@zed and @ada", {}, "unknown_agent"),
        ("hello everyone", {}, "no_agent_selected"),
        ("mail ada@example.com", {}, "no_agent_selected"),
        ("`@ada` in code", {}, "no_agent_selected"),
        ("hi", {"agent_ids": ["00000000-0000-0000-0000-000000000001"]}, "unknown_agent"),
    ],
)
def test_manual_rejections_write_nothing(room: Room, llm_stub, text, body, code) -> None:  # type: ignore[no-untyped-def]
    response = room.post(text, mode="manual", **body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == code
    assert error["details"]["available"] == ["ada", "bo", "cy"]
    if code == "unknown_agent":
        assert error["details"]["unknown"]
    assert not Turn.objects.exists() and not Message.objects.exists()
    assert llm_stub.requests == []
    room.session.refresh_from_db()
    assert room.session.turn_counter == 0


@pytest.mark.parametrize("mode", ["manual", "round_table", "orchestrator"])
def test_an_inactive_agent_is_unknown(room: Room, mode: str) -> None:
    room.bo.is_active = False
    room.bo.save(update_fields=["is_active"])
    response = room.post("@bo?", mode=mode)
    assert response.status_code == 422
    assert response.json()["error"]["details"] == {"unknown": ["@bo"], "available": ["ada", "cy"]}


# --- round table and orchestrator: mentions must name agents too ---------------------------------


@pytest.mark.parametrize("mode", ["round_table", "orchestrator"])
def test_a_mention_of_an_unknown_agent_is_refused_in_every_mode(room: Room, llm_stub, mode) -> None:  # type: ignore[no-untyped-def]
    response = room.post("@ada and @zed, what do you think?", mode=mode)
    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert error["code"] == "unknown_agent"
    assert error["details"] == {"unknown": ["@zed"], "available": ["ada", "bo", "cy"]}
    assert "@zed" in error["message"]
    assert not Turn.objects.exists() and llm_stub.requests == []


def test_manual_agent_ids_do_not_excuse_an_unknown_mention(room: Room) -> None:
    response = room.post("@zed please", mode="manual", agent_ids=[str(room.ada.id)])
    assert response.status_code == 422
    assert response.json()["error"]["details"]["unknown"] == ["@zed"]


def test_round_table_ignores_what_is_not_a_mention(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    response = room.post(
        "Write to zed@example.com about `@zed` and ```@nobody```", mode="round_table"
    )
    assert response.status_code == 201, response.content
    assert [m["agent"]["handle"] for m in response.json()["messages"][1:]] == ["ada", "bo", "cy"]
