"""The provider misbehaving during a turn — hanging, slow, cut off mid-stream — through the API
(a JSON turn and a streamed one), against the stub provider over real HTTP.

The angle of this file is the end state: each case ends in the state the API contract
documents, within a bounded time, with no reservation left active and the ledger verifying clean
(`manage.py verify_ledger`). The mapping of each provider failure to its error code is
sessions/tests/api/test_turns.py's.

- hanging (no answer at all, or the stream stalls after its first chunk): the read timeout ends
  the call — one request, never retried — the turn is `failed`, answered 502 `llm_unavailable`
  (a stream: `agent.failed`, then `turn.completed` with status `failed`), the call event is a
  `timeout`, nothing is billed, the balance is what it was;
- slow, each gap shorter than the read timeout but the whole answer longer than it: the turn
  completes (201), billed once;
- cut mid-stream (the connection dropped, or an in-stream error event): a provider error — the
  turn `failed`, 502; a failed reply is never content (even the part a stream already showed);
  billed only for what the provider reported, which is nothing here;
- a round table where one agent's provider hangs: 201 `partial`, that agent's message `error`
  `llm_timeout`, the others answered and billed once each.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from rest_framework.test import APIClient

from llm.providers import clear_client_cache
from sessions.models import Message, Turn
from sessions.tests.builders import MINI, Setup, ledger_ok, single_agent
from testing import factories
from testing.db_faults import wait_for
from testing.stub_llm import LlmStub, StubReply
from usage.models import CreditAccount, LedgerEntry, LlmCallEvent, Reservation
from usage.services import credits_grant

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

READ_TIMEOUT_S = 1.0
# A hang guard, not a performance figure: a failure costs one read timeout (a timeout is never
# retried), plus the turn's own writes.
BOUND_S = READ_TIMEOUT_S + 8.0
HANGING = "openai/gpt-4o"  # Bo's model in the round table: the scripted hang is keyed to it

HANG = StubReply(hang=True)
# Headers and the first (role-only) chunk arrive, then silence longer than the read timeout.
STALL = StubReply(text="never finished", chunk_delay=READ_TIMEOUT_S + 4)
CUT = StubReply(text="one two three four five six", cut_after_chunks=2)
STREAM_ERROR = StubReply(text="one two", stream_error="upstream overloaded")
# Every gap is shorter than the read timeout; the whole answer takes about twice as long.
SLOW = StubReply(
    text="slow but steady words arrive",
    delay=READ_TIMEOUT_S * 0.6,
    chunk_delay=READ_TIMEOUT_S * 0.3,
)


@pytest.fixture
def stub(llm_stub: LlmStub, settings: Any) -> Iterator[LlmStub]:
    """The stub provider with a short read timeout."""
    settings.LLM_READ_TIMEOUT_SECONDS = READ_TIMEOUT_S
    clear_client_cache()
    yield llm_stub
    clear_client_cache()


# --- running a turn, JSON or streamed ----------------------------------------------------------


@dataclass
class Ran:
    status: int  # 201 / 502 for JSON; 200 for a stream
    body: Any  # the JSON body; for a stream, the `turn.completed` data (None if absent)
    seconds: float
    events: list[tuple[str, Any]] = field(default_factory=list)  # a stream's (name, data)

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def event(self, name: str, agent: str | None = None) -> Any:
        return next(
            data
            for n, data in self.events
            if n == name and (agent is None or data.get("agent") == agent)
        )


def _run(client: APIClient, url: str, text: str, *, streamed: bool) -> Ran:
    started = time.monotonic()
    if not streamed:
        response = client.post(url, {"input": text}, format="json")
        return Ran(response.status_code, response.json(), time.monotonic() - started)
    response = client.post(url, {"input": text}, format="json", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    raw = b"".join(response.streaming_content).decode()  # the stream ends: never hangs
    seconds = time.monotonic() - started
    events = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if not line.startswith(":"))
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    body = next((data for name, data in events if name == "turn.completed"), None)
    return Ran(200, body, seconds, events)


# --- the end state ---------------------------------------------------------------------------


def _balance(user: Any) -> int:
    return CreditAccount.objects.get(user=user).balance_micro


def _assert_settled(user: Any, turn_id: Any, balance_before: int) -> list[LlmCallEvent]:
    """No reservation left active; each billed event burned exactly once, an unbilled one not at
    all; the balance moved by exactly the burns; the ledger verifies. Returns the turn's events
    in call order."""
    assert Reservation.objects.filter(turn_id=turn_id).exists()
    assert not Reservation.objects.filter(turn_id=turn_id, status="active").exists()
    account = CreditAccount.objects.get(user=user)
    assert account.reserved_micro == 0
    events = list(LlmCallEvent.objects.filter(turn_id=turn_id).order_by("created_at"))
    for event in events:
        burns = [b.amount_micro for b in LedgerEntry.objects.filter(event=event, kind="burn")]
        assert burns == ([-event.credits_burned] if event.credits_burned else [])
    assert account.balance_micro == balance_before - sum(e.credits_burned for e in events)
    ledger_ok()
    return events


def _assert_failed_single_agent_turn(s: Setup, ran: Ran, code: str, *, streamed: bool) -> Turn:
    """A single-agent turn whose provider failed is stored `failed` with the user's
    message kept; JSON: 502 `llm_unavailable` with `details.turn_id`; a stream: the agent's
    `agent.failed`, then `turn.completed` with status `failed`."""
    turn = Turn.objects.get(session=s.session)
    if streamed:
        names = ran.names()
        assert names[:2] == ["turn.started", "agent.started"]
        assert names[-2:] == ["agent.failed", "turn.completed"]
        assert set(names[2:-2]) <= {"agent.delta"}
        failed = ran.event("agent.failed")
        assert failed["status"] == "error" and failed["error"]["code"] == code
        assert ran.body["id"] == str(turn.id) and ran.body["status"] == "failed"
        assert ran.body["assistant_output"] == ""
    else:
        assert ran.status == 502, ran.body
        assert ran.body["error"]["code"] == "llm_unavailable"
        assert ran.body["error"]["details"]["turn_id"] == str(turn.id)
    assert turn.status == "failed" and turn.completed_at is not None
    user_msg, reply = Message.objects.filter(turn=turn).order_by("sequence")
    assert (user_msg.role, user_msg.status) == ("user", "ok")
    assert (reply.status, reply.error_code) == ("error", code)
    assert reply.content == ""  # a failed reply is never content
    return turn


# --- (a) the provider hangs -------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("reply", [HANG, STALL], ids=["no-answer", "stalls-mid-stream"])
def test_hanging_provider_fails_the_turn_within_the_read_timeout(
    db: None, stub: LlmStub, reply: StubReply, streamed: bool
) -> None:
    s = single_agent()
    before = _balance(s.user)
    stub.enqueue(reply, times=3)  # were a timeout retried, the retry would hang as well
    ran = _run(s.client, s.url, "Are you there?", streamed=streamed)
    assert READ_TIMEOUT_S <= ran.seconds < BOUND_S
    turn = _assert_failed_single_agent_turn(s, ran, "llm_timeout", streamed=streamed)
    assert len(stub.requests) == 1  # a timeout is never retried
    wait_for(lambda: stub.requests[0].disconnected)  # the provider connection was closed
    (event,) = _assert_settled(s.user, turn.id, before)
    assert (event.status, event.error_code) == ("timeout", "llm_timeout")
    assert event.credits_burned == 0 and event.output_tokens == 0
    assert _balance(s.user) == before
    # Two different timeouts: before the answer's headers, and between two chunks of it.
    error_message = Message.objects.get(turn=turn, role="assistant").error_message
    assert ("did not answer" if reply is HANG else "stopped sending") in error_message
    # The session is not left locked by the failed turn.
    stub.reset()
    assert s.post("And now?").status_code == 201


# --- (b) slow, but within the timeout ----------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_slow_provider_within_the_read_timeout_completes_billed_once(
    db: None, stub: LlmStub, streamed: bool
) -> None:
    s = single_agent()
    before = _balance(s.user)
    stub.enqueue(SLOW)
    ran = _run(s.client, s.url, "Take your time.", streamed=streamed)
    # The whole answer took longer than the read timeout: the timeout is per read, not total.
    assert READ_TIMEOUT_S < ran.seconds < BOUND_S
    if streamed:
        assert ran.names()[-1] == "turn.completed"
        deltas = [d["text"] for n, d in ran.events if n == "agent.delta"]
        assert len(deltas) > 1 and "".join(deltas) == SLOW.text
    else:
        assert ran.status == 201, ran.body
    assert ran.body["status"] == "completed"
    assert ran.body["assistant_output"] == f"Ada: {SLOW.text}"
    assert len(stub.requests) == 1
    turn = Turn.objects.get(session=s.session)
    assert turn.status == "completed"
    (event,) = _assert_settled(s.user, turn.id, before)
    assert event.status == "ok" and event.usage_source == "provider"
    assert event.credits_burned > 0
    assert _balance(s.user) == before - event.credits_burned


# --- (c) the stream is cut mid-way --------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("reply", [CUT, STREAM_ERROR], ids=["connection-dropped", "error-event"])
def test_stream_cut_mid_way_fails_the_turn_and_bills_only_what_was_reported(
    db: None, stub: LlmStub, reply: StubReply, streamed: bool
) -> None:
    s = single_agent()
    before = _balance(s.user)
    stub.enqueue(reply, times=3)
    ran = _run(s.client, s.url, "Tell me everything.", streamed=streamed)
    assert ran.seconds < BOUND_S
    turn = _assert_failed_single_agent_turn(s, ran, "llm_provider_error", streamed=streamed)
    assert len(stub.requests) == 1  # the answer had started: never retried
    if streamed:
        # The client saw what arrived before the cut; the stored reply is still not content.
        shown = "".join(d["text"] for n, d in ran.events if n == "agent.delta")
        assert shown and reply.text is not None and reply.text.startswith(shown)
        assert shown != reply.text or reply.stream_error
    (event,) = _assert_settled(s.user, turn.id, before)
    assert (event.status, event.error_code) == ("error", "llm_provider_error")
    # The provider reported no usage before the cut: nothing is billed.
    assert event.credits_burned == 0 and event.usage_source == "provider"
    assert _balance(s.user) == before


# --- (d) a round table with one agent hanging ----------------------------------------------------


def _round_table() -> tuple[Any, APIClient, str]:
    user, key = factories.make_api_key()
    credits_grant(
        user=user, amount_micro=10_000_000_000, note="tests", idempotency_key=f"rt-{user.id}"
    )
    room = factories.make_room(owner=user, default_mode="round_table")
    for handle, model in (("ada", MINI), ("bo", HANGING), ("cy", MINI)):
        factories.make_agent(
            room,
            name=handle.capitalize(),
            handle=handle,
            system_prompt=f"You are {handle.capitalize()}.",
            model_id=model,
        )
    session = factories.make_session(room)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return user, client, f"/api/v1/sessions/{session.id}/turns"


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_round_table_one_agent_hanging_the_others_answer(
    db: None, stub: LlmStub, streamed: bool
) -> None:
    user, client, url = _round_table()
    before = _balance(user)
    stub.enqueue(StubReply(text="Ada's answer."), model=MINI)
    stub.enqueue(HANG, model=HANGING, times=3)
    stub.enqueue(StubReply(text="Cy's answer."), model=MINI)
    ran = _run(client, url, "Plan the launch.", streamed=streamed)
    assert READ_TIMEOUT_S <= ran.seconds < BOUND_S
    if streamed:
        assert ran.event("agent.failed", "bo")["error"]["code"] == "llm_timeout"
        assert [d["agent"] for n, d in ran.events if n == "agent.completed"] == ["ada", "cy"]
        assert ran.names()[-1] == "turn.completed"
    else:
        assert ran.status == 201, ran.body
    body = ran.body
    assert body["status"] == "partial"
    ada, bo, cy = body["messages"][1:]
    assert (ada["status"], ada["content"]) == ("ok", "Ada's answer.")
    assert (cy["status"], cy["content"]) == ("ok", "Cy's answer.")
    assert bo["status"] == "error" and bo["error"]["code"] == "llm_timeout"
    assert bo["content"] == ""
    assert body["assistant_output"] == "Ada: Ada's answer.\n\nCy: Cy's answer."
    assert [r.model for r in stub.requests] == [MINI, HANGING, MINI]  # Bo: one call, no retry
    assert Turn.objects.get(pk=body["id"]).status == "partial"
    events = _assert_settled(user, body["id"], before)
    assert [(e.status, e.error_code or "") for e in events] == [
        ("ok", ""),
        ("timeout", "llm_timeout"),
        ("ok", ""),
    ]
    assert events[0].credits_burned > 0 and events[2].credits_burned > 0
    assert events[1].credits_burned == 0
    # Each speaker reserved its own worst case; Bo's was given back, not burned.
    assert Reservation.objects.filter(turn_id=body["id"]).count() == 3
