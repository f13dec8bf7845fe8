"""The values a turn's stages hand to each other. All frozen: a stage returns a new value, it
never edits one it was given, so what a stage may change is what it returns.

    admission → AdmittedTurn (the opened turn, its first call prepared and reserved)
    execution → SpeakerResult per speaker, gathered in Progress (replaced after each step)
    closing   → TurnOutcome (the finished turn, for the view to answer)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from accounts.models import User
from llm import budget
from llm.models import ModelConfig
from rooms.models import Agent
from sessions.models import (
    Message,
    MessageStatus,
    Session,
    SessionSummary,
    Turn,
    TurnContextAudit,
)
from sessions.selectors import HistoryMessage, SummaryState
from usage.models import LlmCallEvent, Reservation


@dataclass(frozen=True)
class PromptContext:
    """What every call of a turn shares: read once per turn, not once per speaker."""

    turn_index: int
    user_input: str
    history: tuple[HistoryMessage, ...]
    summaries: SummaryState


@dataclass(frozen=True)
class PreparedCall:
    """One provider call, budgeted: its prompt after the cascade, and what the cascade did."""

    agent: Agent | None  # None for the orchestrator's routing call
    model: ModelConfig
    purpose: str
    cascade: budget.CascadeResult
    summary: SessionSummary | None  # the ready summary the prompt uses
    summary_cover_to: int | None  # a summary to request: cover turns 1..N
    tools: tuple[dict[str, Any], ...] = ()  # the tools offered (OpenAI format), in the budget


@dataclass(frozen=True)
class Reply:
    """An earlier successful reply of this turn, attributed in later speakers' prompts."""

    agent: Agent
    content: str


@dataclass(frozen=True)
class Preflight:
    """What a turn's pre-flight read and decided, before anything is written."""

    agents: tuple[Agent, ...]  # the room's active agents, in position order
    speakers: tuple[Agent, ...]  # empty for the orchestrator: its routing call decides
    context: PromptContext
    first: PreparedCall  # the routing call, or the first speaker's reply


@dataclass(frozen=True)
class OpenTurn:
    """The rows admission wrote: the turn (running) and its user message."""

    session: Session
    turn: Turn
    user: User
    user_message: Message
    idempotency_key: str | None
    summary_requested: UUID | None  # a pending summary row written with the turn
    # Where the ledger keys of this run's calls start: the turn's own, or a retry's.
    run: str = ""
    # The API key that asked for the turn (or the retry): its spending limits apply.
    api_key_id: UUID | None = None

    @property
    def key_prefix(self) -> str:
        return f"turn:{self.turn.id}{self.run}"


@dataclass(frozen=True)
class AdmittedTurn:
    """A turn that passed every pre-flight check and is open, its first call budgeted and
    reserved: what execution needs, possibly in another thread."""

    open: OpenTurn
    mode: str
    agents: tuple[Agent, ...]  # the room's active agents
    speakers: tuple[Agent, ...]  # empty for the orchestrator: its routing call decides
    context: PromptContext
    first: PreparedCall
    first_reservation: Reservation

    @property
    def turn(self) -> Turn:
        return self.open.turn


@dataclass(frozen=True)
class CallWritten:
    """What one recorded provider call wrote (in its transaction)."""

    event: LlmCallEvent
    audit: TurnContextAudit
    summary_requested: UUID | None = None


@dataclass(frozen=True)
class SpeakerResult:
    """One speaker's part of the turn: its message and what its calls wrote."""

    message: Message
    calls: tuple[CallWritten, ...] = ()
    audits: tuple[TurnContextAudit, ...] = ()  # audits of calls never made (budget, credits)
    reply: Reply | None = None  # set when the reply is ok

    @property
    def ok(self) -> bool:
        return self.reply is not None

    @property
    def interrupted(self) -> bool:
        return self.message.status == MessageStatus.INTERRUPTED


@dataclass(frozen=True)
class Progress:
    """What a turn has done so far. Replaced after each step (`with_calls`, `with_result`)."""

    open: OpenTurn
    routing_calls: tuple[CallWritten, ...] = ()
    results: tuple[SpeakerResult, ...] = ()

    @property
    def calls_made(self) -> int:
        """Provider calls recorded so far: the next one's ledger key counts on from here."""
        return len(self.routing_calls) + sum(len(r.calls) for r in self.results)

    @property
    def replies(self) -> list[Reply]:
        return [r.reply for r in self.results if r.reply is not None]

    @property
    def summaries_requested(self) -> list[UUID]:
        requested = [self.open.summary_requested]
        for call in self.all_calls:
            requested.append(call.summary_requested)
        return [s for s in requested if s is not None]

    @property
    def all_calls(self) -> list[CallWritten]:
        return [*self.routing_calls, *(c for r in self.results for c in r.calls)]

    def with_routing(self, calls: tuple[CallWritten, ...]) -> Progress:
        return replace(self, routing_calls=self.routing_calls + calls)

    def with_result(self, result: SpeakerResult) -> Progress:
        return replace(self, results=(*self.results, result))


@dataclass(frozen=True)
class TurnOutcome:
    """A finished turn. `error` names why the request as a whole failed (a single speaker's only
    call failed: `llm_unavailable`; the turn broke off: `internal_error`), else None."""

    turn: Turn  # with its messages, audits and usage attached (no query to render it)
    error: str | None = None


@dataclass(frozen=True)
class Replay:
    """A finished request with the same Idempotency-Key: answer it again, run nothing.
    `status_code` is the status the first answer had."""

    turn_id: UUID
    status_code: int
