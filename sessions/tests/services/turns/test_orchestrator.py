"""The orchestrator's routing call through HTTP against the stub provider: structured output
validated on the server, one corrective re-prompt, the fallback and its reason."""

from __future__ import annotations

import pytest

from sessions.models import TurnContextAudit
from sessions.tests.builders import MANAGER, Room, ledger_ok, script_routing
from usage.models import LlmCallEvent

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("write_path")]


@pytest.fixture
def room(db, llm_stub) -> Room:  # type: ignore[no-untyped-def]
    return Room()


def _system_prompts(stub) -> list[str]:  # type: ignore[no-untyped-def]
    """Which agent each recorded request was for, by its system prompt."""
    return [r.body["messages"][0]["content"] for r in stub.requests]


# --- orchestrator --------------------------------------------------------------------------------


def test_orchestrator_routes_with_structured_output(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    script_routing(llm_stub, {"agents": ["bo", "ada"], "reason": "Bo builds, Ada checks."})
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
    ledger_ok()


def test_orchestrator_invalid_answer_is_fixed_by_the_reprompt(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    script_routing(llm_stub, {"agents": ["zed"], "reason": "Zed knows."})  # outside the room
    script_routing(llm_stub, {"agents": ["cy"], "reason": "Cy reviews."})
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
    script_routing(llm_stub, {"agents": ["ada", "ada"], "reason": "twice"})
    script_routing(llm_stub, {"agents": [], "reason": "nobody"})
    response = room.post("Who answers?", mode="orchestrator")
    body = response.json()
    assert body["status"] == "completed"
    routing = body["routing"]
    assert routing["fallback_used"] is True
    assert routing["selected"] == ["ada"]
    assert routing["fallback_reason"].startswith("invalid routing answer")
    assert [m["agent"]["handle"] for m in body["messages"][1:]] == ["ada"]


def test_orchestrator_routing_call_failure_falls_back(room: Room, llm_stub) -> None:  # type: ignore[no-untyped-def]
    script_routing(llm_stub, status=500, times=3)
    response = room.post("Anyone?", mode="orchestrator")
    body = response.json()
    assert response.status_code == 201
    assert body["routing"]["fallback_used"] is True
    assert "routing call failed" in body["routing"]["fallback_reason"]
    assert body["messages"][1]["agent"]["handle"] == "ada"
    ledger_ok()


def test_orchestrator_default_mode_and_offline_routing(db, settings) -> None:  # type: ignore[no-untyped-def]
    settings.OPENROUTER_API_KEY = ""  # the offline provider
    r = Room(mode="orchestrator")
    response = r.post("@cy what could go wrong?")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["mode"] == "orchestrator"
    assert body["routing"]["selected"] == ["cy"]
    assert body["routing"]["reason"] == "[offline model] routed by mention: @cy"
    assert body["messages"][1]["content"].startswith("[offline model]")
    # No mention: a keyword of an agent's roster line (its name here), else the first agent.
    by_name = r.post("Is Cy around?").json()["routing"]
    assert by_name["selected"] == ["cy"]
    assert by_name["reason"] == "[offline model] routed by keyword match: 'cy' ~ @cy"
    unmatched = r.post("What could go wrong?").json()["routing"]
    assert unmatched["selected"] == ["ada"] and not unmatched["fallback_used"]
    assert unmatched["reason"] == "[offline model] no mention or keyword match: first agent"
