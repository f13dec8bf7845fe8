"""Running the speakers of a turn, through HTTP against the stub provider: a round table where
each agent sees the earlier replies and one failing agent does not stop the others, the
single-speaker 502, a later speaker out of credits, and the 201 body equal to the stored turn."""

from __future__ import annotations

from typing import Any

import pytest

from sessions.models import Turn, TurnContextAudit
from sessions.tests.builders import FAILING, MINI, Room, ledger_ok, script_routing
from testing.stub_llm import StubReply
from usage.models import LlmCallEvent

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("write_path")]


@pytest.fixture
def room(db, llm_stub) -> Room:  # type: ignore[no-untyped-def]
    return Room()


def _system_prompts(stub) -> list[str]:  # type: ignore[no-untyped-def]
    """Which agent each recorded request was for, by its system prompt."""
    return [r.body["messages"][0]["content"] for r in stub.requests]


# --- round table ---------------------------------------------------------------------------------


def test_round_table_each_agent_sees_the_earlier_replies(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    llm_stub.enqueue(StubReply(text="Ada thinks yes."), model=MINI)
    llm_stub.enqueue(StubReply(text="Bo builds it."), model=FAILING)
    llm_stub.enqueue(StubReply(text="Cy doubts it."), model=MINI)
    response = room.post("Should we ship?")
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "completed"
    assert [m["agent"]["handle"] for m in body["messages"][1:]] == ["ada", "bo", "cy"]
    assert (
        body["assistant_output"] == "Ada: Ada thinks yes.\n\nBo: Bo builds it.\n\nCy: Cy doubts it."
    )
    prompts = [[m["content"] for m in r.body["messages"]] for r in llm_stub.requests]
    assert prompts[0] == ["You are Ada.", "Should we ship?"]
    assert prompts[1] == ["You are Bo.", "[Ada]: Ada thinks yes.", "Should we ship?"]
    assert prompts[2] == [
        "You are Cy.",
        "[Ada]: Ada thinks yes.",
        "[Bo]: Bo builds it.",
        "Should we ship?",
    ]
    # One context audit and one call event per provider call.
    assert TurnContextAudit.objects.filter(turn_id=body["id"]).count() == 3
    assert LlmCallEvent.objects.filter(turn_id=body["id"], purpose="agent_reply").count() == 3
    assert [c["agent"] for c in body["context"]] == ["ada", "bo", "cy"]
    ledger_ok()


def test_round_table_second_agent_fails_the_others_go_on(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    llm_stub.enqueue(StubReply(text="Ada's answer."), model=MINI)
    llm_stub.enqueue(StubReply(status=500), model=FAILING, times=3)  # and its retries
    llm_stub.enqueue(StubReply(text="Cy's answer."), model=MINI)
    response = room.post("Plan the launch.")
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "partial"
    ada, bo, cy = body["messages"][1:]
    assert (ada["status"], cy["status"]) == ("ok", "ok")
    assert bo["status"] == "error" and bo["error"]["code"] == "llm_provider_error"
    assert bo["content"] == ""
    assert body["assistant_output"] == "Ada: Ada's answer.\n\nCy: Cy's answer."
    cy_prompt = [m["content"] for m in llm_stub.requests[-1].body["messages"]]
    assert cy_prompt == ["You are Cy.", "[Ada]: Ada's answer.", "Plan the launch."]
    events = LlmCallEvent.objects.filter(turn_id=body["id"]).order_by("created_at")
    assert [e.status for e in events] == ["ok", "error", "ok"]
    assert events[1].credits_burned == 0
    ledger_ok()


def test_round_table_all_failing_is_failed_and_answered_201(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    llm_stub.enqueue(StubReply(status=500), times=9)
    response = room.post("Anyone?")
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "failed" and body["assistant_output"] == ""
    assert [m["status"] for m in body["messages"][1:]] == ["error", "error", "error"]
    ledger_ok()


def test_single_speaker_failure_is_502(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    llm_stub.enqueue(StubReply(status=500), times=3)
    response = room.post("@ada?", mode="manual")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "llm_unavailable"


def test_a_later_speaker_out_of_credits_gets_its_own_error(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    # 0.2 credits cover a GPT-4o mini reply's worst case (2,048 output tokens at $0.60/1M is
    # 0.12 credits) but not GPT-4o's (2,048 at $10/1M is 2.05 credits): Bo cannot be covered.
    r = Room(credits_micro=200_000)
    response = r.post("Go!")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "partial"
    ada, bo, cy = body["messages"][1:]
    assert (ada["status"], cy["status"]) == ("ok", "ok")
    assert bo["status"] == "error" and bo["error"]["code"] == "insufficient_credits"
    assert [r.model for r in llm_stub.requests] == [MINI, MINI]  # Bo was never called
    ledger_ok()


def test_first_call_not_covered_is_402_and_writes_nothing(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    r = Room(credits_micro=1_000)
    response = r.post("Go!")
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert not Turn.objects.exists() and llm_stub.requests == []


# --- the 201 body is rendered from what the turn wrote: it must equal the stored turn ------------


def _scripted_round_table_with_a_failure(room: Room, stub) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    stub.enqueue(StubReply(text="Ada's answer."), model=MINI)
    stub.enqueue(StubReply(status=500), model=FAILING, times=3)
    stub.enqueue(StubReply(text="Cy's answer.", usage={"cached_tokens": 3}), model=MINI)
    return {"input": "Plan the launch."}


def _scripted_orchestrator_with_a_reprompt(room: Room, stub) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    script_routing(stub, {"agents": ["zed"], "reason": "Zed knows."})
    script_routing(stub, {"agents": ["cy", "ada"], "reason": "Cy, then Ada."})
    return {"input": "Review this.", "mode": "orchestrator"}


def _scripted_manual_two_mentions(room: Room, stub) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {"input": "@cy and @ada, thoughts?", "mode": "manual"}


@pytest.mark.parametrize(
    "script",
    [
        _scripted_round_table_with_a_failure,
        _scripted_orchestrator_with_a_reprompt,
        _scripted_manual_two_mentions,
    ],
)
def test_the_201_body_is_the_stored_turn(room: Room, llm_stub, script) -> None:  # type: ignore[no-untyped-def]
    room.post("A first turn, so the second has history.")
    body = script(room, llm_stub)
    response = room.client.post(
        f"/api/v1/sessions/{room.session.id}/turns",
        body,
        format="json",
        headers={"Idempotency-Key": f"same-{script.__name__}"},
    )
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["usage"]["credits_burned"] != "0"
    stored = room.client.get(
        f"/api/v1/sessions/{room.session.id}/turns/{created['turn_index']}"
    ).json()
    assert created == stored
    replay = room.client.post(
        f"/api/v1/sessions/{room.session.id}/turns",
        body,
        format="json",
        headers={"Idempotency-Key": f"same-{script.__name__}"},
    )
    assert replay.json() == stored
    ledger_ok()
