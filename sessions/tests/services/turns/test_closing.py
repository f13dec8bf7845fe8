"""Every opened turn closes.

Two kinds of failure after a turn is opened:
- a speaker that cannot be served — its provider disabled or its key unreadable, its model
  without a price — fails alone, like any provider failure: its message says why, nothing is
  billed for it, its reservation is released, the other speakers go on;
- anything else that escapes the pipeline (a bug, a failed write) closes the turn `failed`:
  the fault-injection matrix raises at each step in turn, for JSON and streamed turns, and
  checks the terminal status, that no reservation is left active, that the ledger verifies,
  that the provider calls made were billed, and that the session accepts the next turn.

Requests go through the test client (the real views and exception handler); the provider is
the stub server over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from llm.models import ModelConfig, Provider
from pantheon import sql
from sessions.models import Message, Turn, TurnStatus
from sessions.tests.builders import FAILING, MANAGER, Room, ledger_ok, single_agent
from testing.stub_llm import StubReply
from usage.models import LlmCallEvent, PricingVersion, Reservation

pytestmark = pytest.mark.postgres

SSE = {"HTTP_ACCEPT": "text/event-stream"}


def _no_active_reservation(turn_id: Any) -> None:
    assert not Reservation.objects.filter(turn_id=turn_id, status="active").exists()


def _serve_model_by(model_id: str, provider: Provider) -> None:
    ModelConfig.objects.filter(pk=model_id).update(provider=provider)


def _disabled_provider(stub_url: str) -> Provider:
    provider = Provider(name="down", base_url=stub_url, is_active=False)
    provider.api_key = "sk-down"
    provider.save()
    return provider


def _unreadable_provider(stub_url: str) -> Provider:
    # A token no configured key decrypts: what a lost PANTHEON_ENCRYPTION_KEYS entry leaves.
    return Provider.objects.create(
        name="lost-key", base_url=stub_url, api_key_encrypted="gAAAAABnot-a-token"
    )


# --- a speaker that cannot be served ----------------------------------------------------------


@pytest.mark.usefixtures("write_path")
@pytest.mark.parametrize(
    ("make_provider", "says"),
    [(_disabled_provider, "disabled"), (_unreadable_provider, "decrypted")],
    ids=["disabled", "key-unreadable"],
)
def test_single_speaker_on_an_unusable_provider_is_502_and_closed(  # type: ignore[no-untyped-def]
    db, llm_stub, make_provider, says
) -> None:
    s = single_agent(model_id=FAILING)
    _serve_model_by(FAILING, make_provider(llm_stub.url))

    response = s.post("Hello?")
    assert response.status_code == 502, response.content
    error = response.json()["error"]
    assert error["code"] == "llm_unavailable"
    turn = Turn.objects.get(pk=error["details"]["turn_id"])
    assert turn.status == TurnStatus.FAILED
    reply = Message.objects.get(turn=turn, role="assistant")
    assert reply.status == "error" and reply.error_code == "llm_provider_error"
    assert says in reply.error_message
    assert llm_stub.requests == []  # no request was sent
    assert not LlmCallEvent.objects.filter(turn_id=turn.id).exists()  # nothing billed
    assert Reservation.objects.get(turn_id=turn.id).status == "released"
    ledger_ok()

    # The session is not left answering 409: the next turn is opened (and fails the same way).
    again = s.post("Hello again?")
    assert again.status_code == 502
    assert again.json()["error"]["details"]["turn_index"] == 2


@pytest.mark.usefixtures("write_path")
def test_a_later_speaker_on_a_disabled_provider_fails_alone(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="round_table")
    _serve_model_by(FAILING, _disabled_provider(llm_stub.url))  # Bo's model

    response = room.post("Everyone?")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "partial"
    by_handle = {m["agent"]["handle"]: m for m in body["messages"][1:]}
    assert by_handle["ada"]["status"] == by_handle["cy"]["status"] == "ok"
    assert by_handle["bo"]["status"] == "error"
    assert by_handle["bo"]["error"]["code"] == "llm_provider_error"
    assert "disabled" in by_handle["bo"]["error"]["message"]
    assert len(llm_stub.requests) == 2  # Ada and Cy
    events = LlmCallEvent.objects.filter(turn_id=body["id"])
    assert events.count() == 2 and all(e.status == "ok" for e in events)
    _no_active_reservation(body["id"])
    ledger_ok()


@pytest.mark.usefixtures("write_path")
def test_a_later_speaker_without_a_price_fails_alone(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="round_table")
    unpriced = ModelConfig.objects.create(
        id="test/unpriced", context_window=8000, max_output_tokens=500, display_name="Unpriced"
    )
    assert (
        not PricingVersion.objects.get(status="active").prices.filter(model_id=unpriced.id).exists()
    )
    room.bo.model = unpriced
    room.bo.save(update_fields=["model"])

    response = room.post("Everyone?")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "partial"
    bo = next(m for m in body["messages"][1:] if m["agent"]["handle"] == "bo")
    assert bo["status"] == "error" and bo["error"]["code"] == "model_not_priced"
    assert "test/unpriced" in bo["error"]["message"]
    assert [r.model for r in llm_stub.requests] == [room.ada.model_id, room.cy.model_id]
    _no_active_reservation(body["id"])
    ledger_ok()


@pytest.mark.usefixtures("write_path")
def test_an_orchestrator_on_a_disabled_provider_falls_back(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="orchestrator")
    _serve_model_by(MANAGER, _disabled_provider(llm_stub.url))

    response = room.post("Who should answer?")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["routing"]["fallback_used"] is True
    assert body["routing"]["fallback_reason"] == "routing call failed: llm_provider_error"
    assert [m["agent"]["handle"] for m in body["messages"][1:]] == ["ada"]
    assert not LlmCallEvent.objects.filter(turn_id=body["id"], purpose="routing").exists()
    _no_active_reservation(body["id"])
    ledger_ok()


# --- the fault-injection matrix ---------------------------------------------------------------


class InjectedFault(RuntimeError):
    """The bug a step of the pipeline raises in this test."""


ONE_STATEMENT, ORM = "one statement", "orm"


@dataclass(frozen=True)
class Step:
    """Where to raise: `target` is "module:attribute", raised on its `nth` call (earlier calls,
    e.g. the first speaker's own pre-flight, run normally), with the turn's writes made by
    `path` (one statement each, or the ORM)."""

    name: str
    target: str
    mode: str
    path: str
    nth: int = 1
    # Whether the turn's close had committed before the fault (the turn keeps its status).
    after_close: bool = False


TURNS = "sessions.services.turns"
CALLS = f"{TURNS}.calls"
# Steps both write paths share.
SHARED = [
    ("speaker resolution (routing)", "sessions.routing:validate_routing", "orchestrator", 1),
    ("budgeting a later speaker", f"{TURNS}.execution:prepare_call", "round_table", 1),
    ("reserving for a later speaker", f"{CALLS}:credits_reserve", "round_table", 1),
    ("gateway selection", "sessions.services.provider_calls:gateway_for_model", "round_table", 1),
    ("the call", f"{CALLS}:provider_call", "round_table", 1),
    ("the audit's row", f"{CALLS}:audit_row", "round_table", 1),
    ("the close", f"{TURNS}.execution:turn_close", "round_table", 1),
]
# Each path's own writes.
OWN = {
    ORM: [
        ("the call's write", f"{CALLS}:record_call", "round_table", 1),
        ("the call event's write", f"{CALLS}:call_event_record", "round_table", 1),
        ("the progress write", f"{CALLS}:touch", "round_table", 1),
        ("a later speaker's write", f"{CALLS}:record_call", "round_table", 2),
        ("the single speaker's write", f"{CALLS}:record_call", "manual", 1),
    ],
    ONE_STATEMENT: [
        ("the call's write", "sessions.sql:call_write", "round_table", 1),
        ("the call event's rows", "usage.sql:record_ctes", "round_table", 1),
        ("the statement", "pantheon.sql:run", "round_table", 2),  # the 1st opened the turn
        ("a later speaker's write", "sessions.sql:call_write", "round_table", 2),
        ("the single speaker's write", "sessions.sql:call_write", "manual", 1),
    ],
}
STEPS = [
    Step(name, target, mode, path, nth)
    for path in (ONE_STATEMENT, ORM)
    for name, target, mode, nth in [*SHARED, *OWN[path]]
] + [
    Step(
        "rendering after the close",
        "sessions.selectors:turn_with_details_from",
        "round_table",
        path,
        after_close=True,
    )
    for path in (ONE_STATEMENT, ORM)
]


def _inject(monkeypatch: pytest.MonkeyPatch, step: Step) -> None:
    if step.path == ORM:
        monkeypatch.setattr(sql, "available", lambda: False)
    module_name, attribute = step.target.split(":")
    module = __import__(module_name, fromlist=[attribute])
    original: Callable[..., Any] = getattr(module, attribute)
    calls = 0

    def faulty(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == step.nth:
            raise InjectedFault(f"injected into {step.name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, attribute, faulty)


def _post(room: Room, step: Step, *, stream: bool) -> tuple[int, dict[str, Any]]:
    """Run the step's turn; returns the status and the turn's id with its reported status."""
    text = "@ada what now?" if step.mode == "manual" else "What now?"
    response = room.client.post(
        f"/api/v1/sessions/{room.session.id}/turns",
        {"input": text, "mode": step.mode},
        format="json",
        **(SSE if stream else {}),
    )
    if not stream:
        return response.status_code, response.json()
    assert response.status_code == 200, response.content
    events = _events(b"".join(response.streaming_content).decode())
    assert events[0][0] == "turn.started"
    name, data = events[-1]
    assert name == "turn.completed", events  # the stream always ends with the turn
    return 200, data


def _events(text: str) -> list[tuple[str, Any]]:
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        out.append((fields["event"], json.loads(fields["data"])))
    return out


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("step", STEPS, ids=[f"{s.path}: {s.name}" for s in STEPS])
def test_a_fault_at_any_step_closes_the_turn(  # type: ignore[no-untyped-def]
    db, llm_stub, monkeypatch, step: Step, stream: bool
) -> None:
    room = Room(mode=step.mode)
    _inject(monkeypatch, step)

    status, body = _post(room, step, stream=stream)

    turn = Turn.objects.get(session=room.session)
    if step.after_close:
        # The close had committed: the turn keeps what it really was, answered as usual.
        assert turn.status == TurnStatus.COMPLETED
        assert status in (200, 201) and body["status"] == "completed"
    else:
        assert turn.status == TurnStatus.FAILED and turn.error_code == "internal_error"
        if stream:
            assert body["status"] == "failed" and body["id"] == str(turn.id)
        else:
            assert status == 502, body
            assert body["error"]["code"] == "internal_error"
            assert body["error"]["details"]["turn_id"] == str(turn.id)
    _no_active_reservation(turn.id)
    # Every provider call that was made is recorded and billed, the interrupted one included.
    assert LlmCallEvent.objects.filter(turn_id=turn.id).count() == len(llm_stub.requests)
    # A speaker cut off by the fault carries the error; none is left without a message.
    for message in Message.objects.filter(turn=turn, role="assistant"):
        assert message.status in ("ok", "error"), message.status
        if message.status == "error":
            assert message.error_code
    ledger_ok()

    monkeypatch.undo()
    llm_stub.reset()
    after = room.client.post(
        f"/api/v1/sessions/{room.session.id}/turns",
        {"input": "@ada and now?", "mode": "manual"},
        format="json",
    )
    assert after.status_code == 201, after.content
    assert after.json()["turn_index"] == 2
    ledger_ok()


def test_a_fault_is_answered_the_same_on_idempotent_replay(db, llm_stub, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="round_table")
    step = Step("the close", f"{TURNS}.execution:turn_close", "round_table", ONE_STATEMENT)
    _inject(monkeypatch, step)
    headers = {"HTTP_IDEMPOTENCY_KEY": "fault-1"}
    path = f"/api/v1/sessions/{room.session.id}/turns"
    first = room.client.post(path, {"input": "Hi"}, format="json", **headers)
    assert first.status_code == 502
    monkeypatch.undo()
    replay = room.client.post(path, {"input": "Hi"}, format="json", **headers)
    assert replay.status_code == 502
    assert replay.json() == first.json()


@pytest.mark.parametrize(
    "step",
    [
        Step("the call's write", "sessions.sql:call_write", "round_table", ONE_STATEMENT),
        Step("the call's write", f"{CALLS}:record_call", "round_table", ORM),
    ],
    ids=[ONE_STATEMENT, ORM],
)
def test_credits_are_not_lost_when_a_write_fails(db, llm_stub, monkeypatch, step: Step) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="round_table")
    before = room.user.credit_account.balance_micro
    _inject(monkeypatch, step)
    llm_stub.enqueue(
        StubReply(text="Ada here.", usage={"prompt_tokens": 50, "completion_tokens": 7})
    )

    status, body = _post(room, step, stream=False)
    assert status == 502
    event = LlmCallEvent.objects.get(turn_id=body["error"]["details"]["turn_id"])
    assert event.status == "ok" and event.input_tokens == 50 and event.output_tokens == 7
    room.user.credit_account.refresh_from_db()
    account = room.user.credit_account
    assert account.balance_micro == before - event.credits_burned
    assert account.reserved_micro == 0
    assert Decimal(event.credits_burned) > 0
