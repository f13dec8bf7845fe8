"""The three turn modes through HTTP against the stub provider: manual @mentions, round table,
orchestrator with structured routing."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from sessions.models import Message, Turn, TurnContextAudit
from testing import factories
from testing.stub_llm import StubReply
from usage.models import LlmCallEvent
from usage.services import credits_grant

pytestmark = pytest.mark.postgres

MINI = "openai/gpt-4o-mini"
FAILING = "openai/gpt-4o"  # Bo's model: scripted failures are keyed to it
MANAGER = "anthropic/claude-3.5-haiku"


class Room:
    def __init__(self, mode: str = "round_table", credits_micro: int = 10_000_000_000) -> None:
        self.user, key = factories.make_api_key()
        credits_grant(
            user=self.user, amount_micro=credits_micro, idempotency_key=f"modes-{self.user.id}"
        )
        self.room = factories.make_room(
            owner=self.user,
            default_mode=mode,
            manager_model_id=MANAGER,
            manager_instructions="Prefer the builder for how-to questions.",
        )
        self.ada = factories.make_agent(
            self.room, name="Ada", handle="ada", system_prompt="You are Ada.", model_id=MINI
        )
        self.bo = factories.make_agent(
            self.room, name="Bo", handle="bo", system_prompt="You are Bo.", model_id=FAILING
        )
        self.cy = factories.make_agent(
            self.room, name="Cy", handle="cy", system_prompt="You are Cy.", model_id=MINI
        )
        self.session = factories.make_session(self.room)
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    def post(self, text: str, **body: Any) -> Any:
        return self.client.post(
            f"/api/v1/sessions/{self.session.id}/turns", {"input": text, **body}, format="json"
        )


@pytest.fixture
def room(db, llm_stub) -> Room:  # type: ignore[no-untyped-def]
    return Room()


def _system_prompts(stub) -> list[str]:  # type: ignore[no-untyped-def]
    """Which agent each recorded request was for, by its system prompt."""
    return [r.body["messages"][0]["content"] for r in stub.requests]


def _ledger_ok() -> None:
    out = io.StringIO()
    call_command("verify_ledger", stdout=out)
    assert out.getvalue().strip().splitlines()[-1] == "ledger ok"


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


def test_manual_inactive_agent_is_unknown(room: Room) -> None:
    room.bo.is_active = False
    room.bo.save(update_fields=["is_active"])
    response = room.post("@bo?", mode="manual")
    assert response.status_code == 422
    assert response.json()["error"]["details"] == {"unknown": ["@bo"], "available": ["ada", "cy"]}


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
    _ledger_ok()


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
    _ledger_ok()


def test_round_table_all_failing_is_failed_and_answered_201(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    llm_stub.enqueue(StubReply(status=500), times=9)
    response = room.post("Anyone?")
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "failed" and body["assistant_output"] == ""
    assert [m["status"] for m in body["messages"][1:]] == ["error", "error", "error"]
    _ledger_ok()


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
    _ledger_ok()


def test_first_call_not_covered_is_402_and_writes_nothing(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    r = Room(credits_micro=1_000)
    response = r.post("Go!")
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert not Turn.objects.exists() and llm_stub.requests == []


# --- orchestrator --------------------------------------------------------------------------------


def _route(stub, answer: dict[str, Any] | None = None, times: int = 1, **reply: Any) -> None:  # type: ignore[no-untyped-def]
    stub.enqueue(StubReply(json=answer, **reply), model=MANAGER, times=times)


def test_orchestrator_routes_with_structured_output(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    _route(llm_stub, {"agents": ["bo", "ada"], "reason": "Bo builds, Ada checks."})
    response = room.post("How do we build the landing page?", mode="orchestrator")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["routing"] == {
        "selected": ["bo", "ada"],
        "reason": "Bo builds, Ada checks.",
        "fallback_used": False,
        "fallback_reason": None,
    }
    assert [m["agent"]["handle"] for m in body["messages"][1:]] == ["bo", "ada"]
    routing_request = llm_stub.requests[0]
    assert routing_request.model == MANAGER
    schema = routing_request.body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["agents"]["items"]["enum"] == ["ada", "bo", "cy"]
    assert "Prefer the builder" in routing_request.body["messages"][0]["content"]
    event = LlmCallEvent.objects.get(turn_id=body["id"], purpose="routing")
    assert event.model == MANAGER and event.status == "ok"
    audits = TurnContextAudit.objects.filter(turn_id=body["id"])
    assert sorted(a.purpose for a in audits) == ["agent_reply", "agent_reply", "routing"]
    _ledger_ok()


def test_orchestrator_invalid_answer_is_fixed_by_the_reprompt(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    _route(llm_stub, {"agents": ["zed"], "reason": "Zed knows."})  # outside the room
    _route(llm_stub, {"agents": ["cy"], "reason": "Cy reviews."})
    response = room.post("Review this.", mode="orchestrator")
    body = response.json()
    assert body["routing"]["selected"] == ["cy"] and not body["routing"]["fallback_used"]
    reprompt = llm_stub.requests[1]
    assert reprompt.model == MANAGER
    assert "invalid" in reprompt.body["messages"][-1]["content"]
    assert "zed" in reprompt.body["messages"][-1]["content"]
    assert LlmCallEvent.objects.filter(turn_id=body["id"], purpose="routing").count() == 2
    assert [m["agent"]["handle"] for m in body["messages"][1:]] == ["cy"]


def test_orchestrator_invalid_twice_falls_back_with_reason(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    _route(llm_stub, {"agents": ["ada", "ada"], "reason": "twice"})
    _route(llm_stub, {"agents": [], "reason": "nobody"})
    response = room.post("Who answers?", mode="orchestrator")
    body = response.json()
    assert body["status"] == "completed"
    routing = body["routing"]
    assert routing["fallback_used"] is True
    assert routing["selected"] == ["ada"]
    assert routing["fallback_reason"].startswith("invalid routing answer")
    assert [m["agent"]["handle"] for m in body["messages"][1:]] == ["ada"]


def test_orchestrator_routing_call_failure_falls_back(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    _route(llm_stub, status=500, times=3)
    response = room.post("Anyone?", mode="orchestrator")
    body = response.json()
    assert response.status_code == 201
    assert body["routing"]["fallback_used"] is True
    assert "routing call failed" in body["routing"]["fallback_reason"]
    assert body["messages"][1]["agent"]["handle"] == "ada"
    _ledger_ok()


def test_orchestrator_default_mode_and_offline_routing(db, settings) -> None:  # type: ignore[no-untyped-def]
    settings.OPENROUTER_API_KEY = ""  # the offline provider
    r = Room(mode="orchestrator")
    response = r.post("@cy what could go wrong?")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["mode"] == "orchestrator"
    assert body["routing"]["selected"] == ["cy"]
    assert body["messages"][1]["content"].startswith("[offline model]")


# --- the 201 body is rendered from what the turn wrote: it must equal the stored turn ------------


def _scripted_round_table_with_a_failure(room: Room, stub) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    stub.enqueue(StubReply(text="Ada's answer."), model=MINI)
    stub.enqueue(StubReply(status=500), model=FAILING, times=3)
    stub.enqueue(StubReply(text="Cy's answer.", usage={"cached_tokens": 3}), model=MINI)
    return {"input": "Plan the launch."}


def _scripted_orchestrator_with_a_reprompt(room: Room, stub) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    _route(stub, {"agents": ["zed"], "reason": "Zed knows."})
    _route(stub, {"agents": ["cy", "ada"], "reason": "Cy, then Ada."})
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
    _ledger_ok()
