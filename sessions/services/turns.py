"""The turn pipeline: `turn_run` takes a validated request on an owned session and runs it end to
end — pre-flight checks, a short transaction that allocates the turn, one provider call per
speaker (never inside a transaction), and one short transaction per call that writes the message,
the context audit, the call event, its burn and the reservation's settlement. It is two steps,
`turn_admit` (every check, then the turn opened) and `turn_execute` (the calls and the close), so
the streaming view can answer every rejection as JSON and only then start its stream.

Pre-flight order (product.md): 400 and 404 are the view's; then 422 (speakers, the first call's
budget), 409 (a turn is running), 402 (credits for the first call). Nothing is written before all
of them pass, except the audit row of a budget rejection.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import partial
from typing import Any, Protocol, TypeVar
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from accounts.models import User
from llm import budget, tokenizer
from llm.gateway import ChatMessage, GatewayRequest
from llm.models import ModelConfig
from pantheon.db import connection_is_broken, connection_lost
from pantheon.errors import ApplicationError
from rooms.models import Agent, Room, TurnMode
from sessions import routing, turn_selectors
from sessions.models import (
    AuditOutcome,
    IdempotencyStatus,
    Message,
    MessageRole,
    MessageStatus,
    Session,
    SessionSummary,
    SummaryStatus,
    Turn,
    TurnContextAudit,
    TurnIdempotencyKey,
    TurnStatus,
)
from sessions.services.calls import CallOutcome, call_event_write, provider_call
from usage.models import LlmCallEvent, Reservation
from usage.services import (
    InsufficientCredits,
    ModelNotPriced,
    credits_reserve,
    reservation_release,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


# --- request fingerprint and idempotency ------------------------------------------------------


def request_fingerprint(*, session_id: UUID, body: dict[str, Any]) -> str:
    canonical = json.dumps({"session": str(session_id), "body": body}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Replay:
    """A finished request with the same Idempotency-Key: answer it again, run nothing."""

    turn_id: UUID
    status_code: int


def idempotency_check(*, user: User, key: str, fingerprint: str) -> Replay | None:
    record = TurnIdempotencyKey.objects.filter(user=user, key=key).first()
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise ApplicationError(
            "This Idempotency-Key was used with a different request.",
            code="idempotency_key_reused",
            status_code=422,
        )
    if record.status == IdempotencyStatus.RUNNING or record.turn_id is None:
        raise ApplicationError(
            "A request with this Idempotency-Key is still running.",
            code="idempotency_key_in_use",
            status_code=409,
            headers={"Retry-After": "2"},
        )
    return Replay(turn_id=record.turn_id, status_code=record.response_status or 201)


# --- observers (the SSE renderer listens; the JSON renderer does not) ------------------------


class TurnObserver(Protocol):
    def turn_started(self, turn: Turn) -> None: ...
    # Right before each provider call (routing, re-prompt, reply), outside any transaction.
    def call_starting(self) -> None: ...
    # The in-flight call's `close` (None once it ended): cancelling closes the upstream at once.
    def call_opened(self, close: Callable[[], None] | None) -> None: ...
    def agent_started(self, agent: Agent) -> None: ...
    def agent_delta(self, agent: Agent, text: str) -> None: ...
    def routed(self, turn: Turn) -> None: ...
    def agent_finished(self, agent: Agent, message: Message, event_id: UUID | None) -> None: ...
    def cancelled(self) -> bool: ...


class _NullObserver:
    def turn_started(self, turn: Turn) -> None:
        pass

    def call_starting(self) -> None:
        # A provider call lasts seconds: give the database connection back (to the pool)
        # meanwhile, so slow providers never starve other requests of connections.
        if not connection.in_atomic_block:
            connection.close()

    def call_opened(self, close: Callable[[], None] | None) -> None:
        pass

    def agent_started(self, agent: Agent) -> None:
        pass

    def agent_delta(self, agent: Agent, text: str) -> None:
        pass

    def routed(self, turn: Turn) -> None:
        pass

    def agent_finished(self, agent: Agent, message: Message, event_id: UUID | None) -> None:
        pass

    def cancelled(self) -> bool:
        return False


# --- budgeting -------------------------------------------------------------------------------


def budget_policy() -> budget.BudgetPolicy:
    return budget.BudgetPolicy(
        summary_trigger_ratio=Decimal(str(settings.CONTEXT_SUMMARY_TRIGGER_RATIO)),
        prune_trigger_ratio=Decimal(str(settings.CONTEXT_PRUNE_TRIGGER_RATIO)),
        mandatory_summary_turn=settings.CONTEXT_MANDATORY_SUMMARY_TURN,
        recent_turns_to_keep=settings.CONTEXT_RECENT_TURNS_TO_KEEP,
        default_model_limit=settings.CONTEXT_DEFAULT_MODEL_LIMIT,
        default_max_output_tokens=settings.CONTEXT_MAX_OUTPUT_TOKENS,
    )


def summary_message(summary: SessionSummary) -> ChatMessage:
    """A ready summary as system context."""
    lines = [f"Summary of the conversation so far (turns 1-{summary.last_turn_covered}):"]
    lines.append(summary.summary_text)
    for title, items in (
        ("Key facts", summary.key_facts),
        ("Decisions", summary.decisions),
        ("Open questions", summary.open_questions),
        ("Action items", summary.action_items),
    ):
        if items:
            lines.append(f"{title}:")
            lines.extend(f"- {item.get('text', '')}" for item in items)
    return ChatMessage(role="system", content="\n".join(lines))


@dataclass(frozen=True)
class Reply:
    """An earlier successful reply of this turn, attributed."""

    agent: Agent
    content: str


def _render_history(
    agent: Agent | None, history: list[turn_selectors.HistoryMessage]
) -> list[budget.HistoryTurn]:
    turns: dict[int, list[ChatMessage]] = {}
    for item in history:
        turns.setdefault(item.turn_index, []).append(_as_chat(agent, item))
    return [budget.HistoryTurn(turn_index=i, messages=msgs) for i, msgs in turns.items()]


def _as_chat(agent: Agent | None, item: turn_selectors.HistoryMessage) -> ChatMessage:
    if item.role == MessageRole.USER:
        return ChatMessage(role="user", content=item.content)
    if agent is not None and item.agent_id == agent.id:
        return ChatMessage(role="assistant", content=item.content)
    # Another agent's words are attributed, so no agent mistakes them for its own.
    return ChatMessage(role="user", content=f"[{item.agent_name}]: {item.content}")


@dataclass
class _PromptContext:
    """What every call of a turn shares: read once per turn, not once per speaker."""

    turn_index: int
    user_input: str
    history: list[turn_selectors.HistoryMessage]
    summaries: turn_selectors.SummaryState


@dataclass
class PreparedCall:
    agent: Agent | None  # None for the orchestrator's routing call
    model: ModelConfig
    purpose: str
    cascade: budget.CascadeResult
    summary: SessionSummary | None
    summary_cover_to: int | None  # a summary request: cover turns 1..N


def _budgeted(
    *,
    agent: Agent | None,
    model: ModelConfig,
    purpose: str,
    parts: budget.PromptParts,
    agent_max_output: int | None,
    context: _PromptContext,
) -> PreparedCall:
    policy = budget_policy()
    summaries = context.summaries
    cover_to = context.turn_index - 1 - policy.recent_turns_to_keep
    cascade = budget.run_cascade(
        parts,
        model_limit=budget.model_limit_for(model.context_window, policy),
        output_reserve=budget.output_reserve_for(
            agent_max_output=agent_max_output,
            model_max_output=model.max_output_tokens,
            policy=policy,
        ),
        turn_index=context.turn_index,
        summary_can_be_requested=summaries.pending is None and cover_to > summaries.boundary,
        policy=policy,
        message_tokens=tokenizer.message_tokens,
        base_tokens=tokenizer.TOKENS_PER_REPLY,
    )
    return PreparedCall(
        agent=agent,
        model=model,
        purpose=purpose,
        cascade=cascade,
        summary=summaries.ready if cascade.summary_used else None,
        summary_cover_to=cover_to if cascade.summary_requested else None,
    )


def prepare_call(*, agent: Agent, context: _PromptContext, earlier: list[Reply]) -> PreparedCall:
    """Assemble and budget one agent's prompt: system prompt, ready summary, uncovered history,
    this turn's earlier replies (attributed), the user input."""
    system = (
        [ChatMessage(role="system", content=agent.system_prompt)] if agent.system_prompt else []
    )
    current = [
        *(ChatMessage(role="user", content=f"[{r.agent.name}]: {r.content}") for r in earlier),
        ChatMessage(role="user", content=context.user_input),
    ]
    parts = budget.PromptParts(
        system=system,
        summary=summary_message(context.summaries.ready) if context.summaries.ready else None,
        history=_render_history(agent, context.history),
        current=current,
    )
    return _budgeted(
        agent=agent,
        model=agent.model,
        purpose="agent_reply",
        parts=parts,
        agent_max_output=agent.max_output_tokens,
        context=context,
    )


ROUTING_OUTPUT_TOKENS = 256


def prepare_routing_call(
    *, room: Room, agents: list[Agent], context: _PromptContext
) -> PreparedCall:
    """The orchestrator's prompt: who is in the room, the conversation, the user input."""
    roster = "\n".join(
        f"- @{a.handle} ({a.name}): {(a.system_prompt or '').strip()[:200]}" for a in agents
    )
    instructions = (
        "You are the orchestrator of a room of AI agents. Choose which agents should answer the "
        "user's latest message, most relevant first, and give a one-line reason.\n"
        f"{room.manager_instructions.strip()}\n\nAgents in this room:\n{roster}"
    )
    parts = budget.PromptParts(
        system=[ChatMessage(role="system", content=instructions)],
        summary=summary_message(context.summaries.ready) if context.summaries.ready else None,
        history=_render_history(None, context.history),
        current=[ChatMessage(role="user", content=context.user_input)],
    )
    model = room.manager_model or ModelConfig.objects.get(pk=settings.ORCHESTRATOR_DEFAULT_MODEL)
    return _budgeted(
        agent=None,
        model=model,
        purpose="routing",
        parts=parts,
        agent_max_output=ROUTING_OUTPUT_TOKENS,
        context=context,
    )


def _audit(
    *,
    session: Session,
    turn: Turn | None,
    prepared: PreparedCall,
    provider_prompt_tokens: int | None = None,
    call_event_id: UUID | None = None,
) -> TurnContextAudit:
    c = prepared.cascade
    return TurnContextAudit.objects.create(
        session=session,
        turn=turn,
        agent=prepared.agent,
        purpose=prepared.purpose,
        model=prepared.model.id,
        model_limit=c.model_limit,
        output_reserve=c.output_reserve,
        input_budget=c.input_budget,
        estimated_tokens_initial=c.estimated_initial,
        estimated_tokens_after_summarize=c.estimated_after_summarize,
        estimated_tokens_after_prune=c.estimated_after_prune,
        estimated_tokens_final=c.estimated_final,
        actions=c.actions,
        turns_pruned=c.turns_pruned,
        summary_used=prepared.summary,
        outcome=AuditOutcome.REJECTED if c.rejected else AuditOutcome.OK,
        provider_prompt_tokens=provider_prompt_tokens,
        call_event_id=call_event_id,
    )


def budget_rejection(prepared: PreparedCall) -> ApplicationError:
    c = prepared.cascade
    who = f"@{prepared.agent.handle}" if prepared.agent else "the orchestrator"
    return ApplicationError(
        f"The prompt for {who} does not fit {prepared.model.id}'s context window.",
        code="context_budget_exceeded",
        status_code=422,
        details={
            "estimated_tokens": c.estimated_final,
            "input_budget": c.input_budget,
            "model_limit": c.model_limit,
            "model": prepared.model.id,
            "agent": prepared.agent.handle if prepared.agent else None,
        },
    )


# --- speakers --------------------------------------------------------------------------------


def _unknown_agent(unknown: list[str], agents: list[Agent]) -> ApplicationError:
    return ApplicationError(
        "Unknown or inactive agent: " + ", ".join(unknown) + ".",
        code="unknown_agent",
        status_code=422,
        details={"unknown": unknown, "available": [a.handle for a in agents]},
    )


def _no_agent_selected(agents: list[Agent]) -> ApplicationError:
    return ApplicationError(
        "No agent was addressed: mention one with @handle or pass agent_ids.",
        code="no_agent_selected",
        status_code=422,
        details={"available": [a.handle for a in agents]},
    )


def resolve_speakers(
    *, agents: list[Agent], mode: str, user_input: str, agent_ids: list[UUID] | None
) -> list[Agent]:
    """Who answers, before anything is written (422 otherwise). The orchestrator's speakers are
    chosen later by its routing call; here it only needs an active agent to exist."""
    if not agents:
        raise _no_agent_selected(agents)
    if mode == TurnMode.MANUAL:
        if agent_ids:
            by_id = {a.id: a for a in agents}
            unknown = [str(i) for i in agent_ids if i not in by_id]
            if unknown:
                raise _unknown_agent(unknown, agents)
            return list({i: by_id[i] for i in agent_ids}.values())
        handles = routing.parse_mentions(user_input)
        if not handles:
            raise _no_agent_selected(agents)
        by_handle = {a.handle: a for a in agents}
        unknown = [f"@{h}" for h in handles if h not in by_handle]
        if unknown:
            raise _unknown_agent(unknown, agents)
        return [by_handle[h] for h in handles]
    if mode == TurnMode.ROUND_TABLE:
        return agents
    return []  # orchestrator: decided by the routing call


# --- the pipeline ----------------------------------------------------------------------------


@dataclass
class TurnOutcome:
    turn_id: UUID
    status_code: int
    # The finished turn with its messages, audits and usage attached (no query to render it).
    turn: Turn


@dataclass
class _SpeakerResult:
    message: Message
    ok: bool
    interrupted: bool = False


@dataclass
class _TurnState:
    session: Session
    turn: Turn
    user: User
    observer: TurnObserver = field(default_factory=_NullObserver)
    idempotency_key: str | None = None
    calls: int = 0
    results: list[_SpeakerResult] = field(default_factory=list)
    summaries_requested: list[UUID] = field(default_factory=list)
    # What the turn wrote, kept to render it without reading it back.
    user_message: Message | None = None
    audits: list[TurnContextAudit] = field(default_factory=list)
    events: list[LlmCallEvent] = field(default_factory=list)
    # Reservations made for this turn and not yet settled by a recorded call.
    unsettled: set[UUID] = field(default_factory=set)
    # The speaker at work (agent, message position), so a failure can be pinned on it.
    speaking: tuple[Agent, int] | None = None
    # A provider call that returned but whose write has not committed: billed by the recovery
    # if the write never happens.
    unrecorded: tuple[PreparedCall, CallOutcome, Reservation | None] | None = None


@dataclass
class AdmittedTurn:
    """A turn that passed every pre-flight check and is open (status running, first call's
    credits reserved): what `turn_execute` needs to run its calls, possibly in another thread."""

    state: _TurnState
    mode: str
    agents: list[Agent]
    speakers: list[Agent]
    context: _PromptContext
    first: PreparedCall
    first_reservation: Reservation

    @property
    def turn(self) -> Turn:
        return self.state.turn


def turn_run(
    *,
    user: User,
    session: Session,
    user_input: str,
    mode: str | None,
    agent_ids: list[UUID] | None = None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    observer: TurnObserver | None = None,
) -> TurnOutcome | Replay:
    """Run one turn on an owned, alive session. Returns the finished turn's id and HTTP status
    (201, or 502 when a single-speaker turn's only call failed), or a Replay for a repeated
    Idempotency-Key. Raises ApplicationError for 422/409/402 rejections (nothing written but
    the audit row of a budget rejection)."""
    admitted = turn_admit(
        user=user,
        session=session,
        user_input=user_input,
        mode=mode,
        agent_ids=agent_ids,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    if isinstance(admitted, Replay):
        return admitted
    return turn_execute(admitted=admitted, observer=observer)


def turn_admit(
    *,
    user: User,
    session: Session,
    user_input: str,
    mode: str | None,
    agent_ids: list[UUID] | None = None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> AdmittedTurn | Replay:
    """The pre-flight and the admission of a turn: idempotency replay, speakers (422), the first
    call's budget (422), a running turn (409), the first call's credits (402), then the short
    transaction that opens the turn. Returns the open turn, or a Replay; raises ApplicationError
    for a rejection. No provider is called: a streaming view can answer every rejection as JSON
    before its stream starts."""
    mode = mode or session.room.default_mode
    if idempotency_key:
        replay = idempotency_check(user=user, key=idempotency_key, fingerprint=fingerprint)
        if replay is not None:
            return replay

    agents = turn_selectors.active_agents_for_room(room_id=session.room_id)
    speakers = resolve_speakers(
        agents=agents, mode=mode, user_input=user_input, agent_ids=agent_ids
    )
    summaries = turn_selectors.summary_state_for_session(session_id=session.id)
    history = turn_selectors.history_for_prompt(
        session_id=session.id, after_turn_index=summaries.boundary
    )
    context = _PromptContext(
        turn_index=session.turn_counter + 1,
        user_input=user_input,
        history=history,
        summaries=summaries,
    )
    if mode == TurnMode.ORCHESTRATOR:
        first = prepare_routing_call(room=session.room, agents=agents, context=context)
    else:
        first = prepare_call(agent=speakers[0], context=context, earlier=[])
    if first.cascade.rejected:
        _audit(session=session, turn=None, prepared=first)
        raise budget_rejection(first)

    state, first_reservation = _turn_open(
        user=user,
        session=session,
        mode=mode,
        first=first,
        context=context,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    context.turn_index = state.turn.turn_index
    return AdmittedTurn(
        state=state,
        mode=mode,
        agents=agents,
        speakers=speakers,
        context=context,
        first=first,
        first_reservation=first_reservation,
    )


def turn_execute(*, admitted: AdmittedTurn, observer: TurnObserver | None = None) -> TurnOutcome:
    """Run an admitted turn to its end: the routing call (orchestrator), one call per speaker,
    and the closing transaction. The observer hears each step; once it reports `cancelled()`,
    the call in flight is closed and stored as interrupted and no later speaker runs."""
    observer = observer or _NullObserver()
    state = admitted.state
    state.observer = observer
    try:
        observer.turn_started(state.turn)
        return _execute_speakers(admitted, observer)
    except Exception as exc:
        # Every opened turn closes: whatever escaped (a bug, a database error) ends it failed.
        return _turn_recover(state, exc)


def _execute_speakers(admitted: AdmittedTurn, observer: TurnObserver) -> TurnOutcome:
    state, context = admitted.state, admitted.context
    speakers = admitted.speakers
    first_reservation: Reservation | None = admitted.first_reservation
    prepared_first: PreparedCall | None = admitted.first
    if admitted.mode == TurnMode.ORCHESTRATOR:
        speakers = _route(state, admitted.first, first_reservation, admitted.agents)
        prepared_first, first_reservation = None, None

    replies: list[Reply] = []
    for position, agent in enumerate(speakers, start=1):
        if observer.cancelled():
            break
        state.speaking = (agent, position)
        if position == 1 and prepared_first is not None:
            prepared, reservation = prepared_first, first_reservation
        else:
            prepared = prepare_call(agent=agent, context=context, earlier=replies)
            reservation, failure = _reserve_for_speaker(state, prepared)
            if failure is not None:
                state.results.append(_speaker_failed(state, prepared, position, *failure))
                state.speaking = None
                continue
        observer.agent_started(agent)
        result, reply = _speak(
            state, prepared, position, reservation, last=position == len(speakers)
        )
        state.results.append(result)
        state.speaking = None
        if reply is not None:
            replies.append(reply)
        if result.interrupted:
            break

    return _turn_close(state, speakers_count=len(speakers))


def _turn_open(
    *,
    user: User,
    session: Session,
    mode: str,
    first: PreparedCall,
    context: _PromptContext,
    idempotency_key: str | None,
    fingerprint: str,
) -> tuple[_TurnState, Reservation]:
    """The short transaction that admits the turn: lock the session, refuse a running turn (409),
    reserve the first call's credits (402), allocate the index, write turn + user message."""
    now = timezone.now()
    try:
        with transaction.atomic():
            # Whether the session has a running turn is read with the lock: one round trip.
            # The subquery sees the snapshot from before the lock wait, so a turn opened
            # meanwhile is caught by the one-running-turn constraint below, and a stale one
            # is read again, locked, before it is failed.
            running_turns = Turn.objects.filter(session=OuterRef("pk"), status=TurnStatus.RUNNING)
            locked = (
                Session.objects.select_for_update(no_key=True)
                .annotate(running_since=Subquery(running_turns.values("progress_at")[:1]))
                .get(pk=session.pk)
            )
            stale_before = now - timedelta(seconds=settings.TURN_STALE_AFTER_SECONDS)
            if locked.running_since is not None:
                if locked.running_since > stale_before:
                    raise _turn_in_progress()
                running = (
                    Turn.objects.select_for_update(no_key=True)
                    .filter(session=locked, status=TurnStatus.RUNNING)
                    .first()
                )
                if running is not None:
                    if running.progress_at > stale_before:
                        raise _turn_in_progress()
                    _turn_fail_stale(running, now=now)
            if (
                idempotency_key
                and TurnIdempotencyKey.objects.filter(user=user, key=idempotency_key).exists()
            ):
                raise _idempotency_key_in_use()
            locked.turn_counter += 1
            locked.save(update_fields=["turn_counter", "updated_at"])
            turn = Turn.objects.create(
                session=locked,
                turn_index=locked.turn_counter,
                mode=mode,
                user_input=context.user_input,
                created_at=now,
                progress_at=now,
            )
            reservation = credits_reserve(
                user=user,
                model_id=first.model.id,
                estimated_input_tokens=first.cascade.estimated_final,
                output_reserve=first.cascade.output_reserve,
                purpose=first.purpose,
                session_id=locked.id,
                turn_id=turn.id,
            )
            user_message = Message.objects.create(
                session=locked,
                turn=turn,
                sequence=0,
                role=MessageRole.USER,
                mode=mode,
                content=context.user_input,
                created_at=now,
            )
            requested = (
                _summary_request(session=locked, turn=turn, cover_to=first.summary_cover_to)
                if first.summary_cover_to is not None
                else None
            )
            if idempotency_key:
                TurnIdempotencyKey.objects.create(
                    user=user, key=idempotency_key, request_hash=fingerprint, turn=turn
                )
    except IntegrityError as exc:
        # Another request won the race for this session's running slot or for this key.
        logger.info("turn admission lost a race on session %s: %s", session.pk, exc)
        if "idempotency_user_key" in str(exc):
            raise _idempotency_key_in_use() from exc
        raise _turn_in_progress() from exc
    session.turn_counter = locked.turn_counter
    state = _TurnState(
        session=locked,
        turn=turn,
        user=user,
        idempotency_key=idempotency_key,
        user_message=user_message,
        unsettled={reservation.id},
    )
    if requested is not None:
        state.summaries_requested.append(requested.id)
    return state, reservation


def _turn_in_progress() -> ApplicationError:
    return ApplicationError(
        "A turn is already running in this session.",
        code="turn_in_progress",
        status_code=409,
        headers={"Retry-After": "2"},
    )


def _idempotency_key_in_use() -> ApplicationError:
    return ApplicationError(
        "A request with this Idempotency-Key is still running.",
        code="idempotency_key_in_use",
        status_code=409,
        headers={"Retry-After": "2"},
    )


def _summary_request(*, session: Session, turn: Turn, cover_to: int) -> SessionSummary | None:
    """Write the pending summary row (in the caller's transaction). At most one is pending."""
    try:
        with transaction.atomic():
            return SessionSummary.objects.create(
                session=session,
                last_turn_covered=cover_to,
                status=SummaryStatus.PENDING,
                model=settings.SUMMARY_MODEL,
                requested_by_turn=turn,
            )
    except IntegrityError:
        return None


def _reserve_for_speaker(
    state: _TurnState, prepared: PreparedCall
) -> tuple[Reservation | None, tuple[str, str] | None]:
    """A later speaker's own pre-flight: its budget and its credits become its own error."""
    if prepared.cascade.rejected:
        return None, ("context_budget_exceeded", budget_rejection(prepared).message)
    try:
        reservation = credits_reserve(
            user=state.user,
            model_id=prepared.model.id,
            estimated_input_tokens=prepared.cascade.estimated_final,
            output_reserve=prepared.cascade.output_reserve,
            purpose=prepared.purpose,
            session_id=state.session.id,
            turn_id=state.turn.id,
        )
    except (InsufficientCredits, ModelNotPriced) as exc:
        return None, (exc.code, exc.message)
    state.unsettled.add(reservation.id)
    return reservation, None


def _speaker_failed(
    state: _TurnState,
    prepared: PreparedCall,
    position: int,
    code: str,
    message: str,
    reservation: Reservation | None = None,
) -> _SpeakerResult:
    """A speaker that could not be called (budget, credits, price, an unusable provider): its
    own error message and audit, and its reservation (if it had one) given back unspent."""
    assert prepared.agent is not None
    if reservation is not None:
        reservation_release(reservation=reservation)
        state.unsettled.discard(reservation.id)
    with transaction.atomic():
        msg = Message.objects.create(
            session=state.session,
            turn=state.turn,
            sequence=position,
            role=MessageRole.ASSISTANT,
            agent=prepared.agent,
            mode=state.turn.mode,
            status=MessageStatus.ERROR,
            error_code=code,
            error_message=message,
        )
        audit = _audit(session=state.session, turn=state.turn, prepared=prepared)
        _touch(state.turn)
    state.audits.append(audit)
    state.observer.agent_finished(prepared.agent, msg, None)
    return _SpeakerResult(message=msg, ok=False)


def _invoke(state: _TurnState, prepared: PreparedCall, request: GatewayRequest) -> CallOutcome:
    agent, observer = prepared.agent, state.observer
    observer.call_starting()
    return provider_call(
        prepared.model,
        request,
        estimated_prompt_tokens=prepared.cascade.estimated_final,
        on_delta=(lambda text: observer.agent_delta(agent, text)) if agent is not None else None,
        cancelled=observer.cancelled,
        on_open=observer.call_opened,
    )


def _record_call(
    state: _TurnState,
    prepared: PreparedCall,
    outcome: CallOutcome,
    reservation: Reservation | None,
    *,
    touch: bool = True,
) -> UUID:
    """Inside the caller's transaction: the call event (priced, burned, reservation settled),
    the context audit with the provider's prompt count, and the turn's progress (unless
    `touch` is false: the turn's close, which writes it anyway, comes next)."""
    state.calls += 1
    usage = outcome.usage
    event = call_event_write(
        user=state.user,
        reservation=reservation,
        purpose=prepared.purpose,
        model_id=prepared.model.id,
        outcome=outcome,
        idempotency_key=_call_key(state, state.calls),
        room_id=state.session.room_id,
        session_id=state.session.id,
        turn_id=state.turn.id,
        agent_id=prepared.agent.id if prepared.agent else None,
    )
    audit = _audit(
        session=state.session,
        turn=state.turn,
        prepared=prepared,
        # None when the provider reported nothing (a failed call), never a misleading 0.
        provider_prompt_tokens=(
            usage.prompt_tokens if usage.source == "provider" and usage.prompt_tokens else None
        ),
        call_event_id=event.id,
    )
    state.events.append(event)
    state.audits.append(audit)
    if reservation is not None:
        state.unsettled.discard(reservation.id)
    if prepared.summary_cover_to is not None and not state.summaries_requested:
        requested = _summary_request(
            session=state.session, turn=state.turn, cover_to=prepared.summary_cover_to
        )
        if requested is not None:
            state.summaries_requested.append(requested.id)
    if touch:
        _touch(state.turn)
    return event.id


def _speak(
    state: _TurnState,
    prepared: PreparedCall,
    position: int,
    reservation: Reservation | None,
    *,
    last: bool = False,
) -> tuple[_SpeakerResult, Reply | None]:
    """One agent's reply: the call, then one transaction for message, event, burn and audit.
    The `last` speaker leaves the turn's progress to the close that follows."""
    agent = prepared.agent
    assert agent is not None
    outcome = _invoke(
        state,
        prepared,
        GatewayRequest(
            model=prepared.model.id,
            messages=prepared.cascade.messages,
            temperature=float(agent.temperature),
            max_tokens=prepared.cascade.output_reserve,
        ),
    )
    if not outcome.reached:
        failed = _speaker_failed(
            state, prepared, position, outcome.error_code, outcome.error_message, reservation
        )
        return failed, None
    state.unrecorded = (prepared, outcome, reservation)
    status = {"ok": MessageStatus.OK, "cancelled": MessageStatus.INTERRUPTED}.get(
        outcome.status, MessageStatus.ERROR
    )

    def write() -> tuple[Message, UUID]:
        with transaction.atomic():
            msg = Message.objects.create(
                session=state.session,
                turn=state.turn,
                sequence=position,
                role=MessageRole.ASSISTANT,
                agent=agent,
                mode=state.turn.mode,
                # A failed reply is never content: no later prompt may mistake it for an answer.
                content=outcome.text if status != MessageStatus.ERROR else "",
                status=status,
                error_code=outcome.error_code if status != MessageStatus.OK else "",
                error_message=outcome.error_message,
            )
            return msg, _record_call(state, prepared, outcome, reservation, touch=not last)

    def committed() -> tuple[Message, UUID] | None:
        event = _committed_call(state, reservation)
        if event is None:
            return None
        message = Message.objects.select_related("agent").get(turn=state.turn, sequence=position)
        return message, event.id

    msg, event_id = _write_with_reconnect(state, write, committed)
    state.unrecorded = None
    state.observer.agent_finished(agent, msg, event_id)
    ok = status == MessageStatus.OK
    result = _SpeakerResult(message=msg, ok=ok, interrupted=status == MessageStatus.INTERRUPTED)
    return result, (Reply(agent=agent, content=outcome.text) if ok else None)


# --- orchestrator ------------------------------------------------------------------------------


def _route(
    state: _TurnState,
    prepared: PreparedCall,
    reservation: Reservation | None,
    agents: list[Agent],
) -> list[Agent]:
    """The routing call: structured output validated on the server, one corrective re-prompt,
    then the room's first active agent as the fallback (recorded with its reason)."""
    handles = [a.handle for a in agents]
    max_agents = settings.ROOM_MAX_AGENTS_PER_TURN
    schema = routing.routing_schema(handles, max_agents)
    messages = list(prepared.cascade.messages)
    decision: routing.RoutingDecision | None = None
    fallback_reason = ""
    for attempt in (1, 2):
        if attempt == 2:
            reservation, failure = _reserve_for_speaker(state, prepared)
            if failure is not None:
                fallback_reason = f"routing re-prompt not possible: {failure[0]}"
                break
        outcome = _invoke(
            state,
            prepared,
            GatewayRequest(
                model=prepared.model.id,
                messages=messages,
                temperature=0,
                max_tokens=prepared.cascade.output_reserve,
                json_schema=schema,
                schema_name="routing",
            ),
        )
        if not outcome.reached:
            if reservation is not None:
                reservation_release(reservation=reservation)
                state.unsettled.discard(reservation.id)
            fallback_reason = f"routing call failed: {outcome.error_code}"
            break
        state.unrecorded = (prepared, outcome, reservation)
        _write_with_reconnect(
            state,
            transaction.atomic()(partial(_record_call, state, prepared, outcome, reservation)),
            partial(_committed_call, state, reservation),
        )
        state.unrecorded = None
        if outcome.status == "ok":
            try:
                decision = routing.validate_routing(outcome.parsed, handles, max_agents)
                break
            except routing.RoutingInvalid as exc:
                error = str(exc)
        elif outcome.error_code == "llm_invalid_response":
            error = outcome.error_message
        else:
            fallback_reason = f"routing call failed: {outcome.error_code}"
            break
        fallback_reason = f"invalid routing answer: {error}"
        messages = [
            *prepared.cascade.messages,
            ChatMessage(
                role="user",
                content=(
                    f"Your previous answer was invalid: {error} Answer again with only a JSON "
                    f"object: 'agents' (1 to {min(max_agents, len(handles))} distinct handles "
                    f"from {handles}) and 'reason' (one line)."
                ),
            ),
        ]
    turn = state.turn
    if decision is not None:
        by_handle = {a.handle: a for a in agents}
        turn.routing_selected = decision.selected
        turn.routing_reason = decision.reason
        speakers = [by_handle[h] for h in decision.selected]
    else:
        turn.routing_selected = [agents[0].handle]
        turn.fallback_used = True
        turn.fallback_reason = fallback_reason[:500]
        speakers = [agents[0]]
    turn.save(
        update_fields=["routing_selected", "routing_reason", "fallback_used", "fallback_reason"]
    )
    state.observer.routed(turn)
    return speakers


# --- closing -----------------------------------------------------------------------------------


def _write_with_reconnect(
    state: _TurnState,
    write: Callable[[], T],
    committed: Callable[[], T | None] | None = None,
) -> T:
    """Run one of the turn's short write transactions after a provider call. When the database
    connection is lost meanwhile (a killed backend, a restart, a failover), the transaction was
    rolled back: it is made once more on a fresh connection, so a short outage still ends the
    turn in its documented state, its call billed once. If the connection died in the COMMIT
    itself, the first attempt may have committed after all: `committed()` looks for what it
    wrote (the call's event, by its ledger key) and returns it, so nothing is written twice.
    A second failure goes up (503 `service_unavailable`); the turn then stays running until
    the stale sweep fails it and releases its reservation. Other database errors (a pool
    checkout timeout, a deadlock) go up at once."""
    calls, requested = state.calls, len(state.summaries_requested)
    audits, events = len(state.audits), len(state.events)
    try:
        return write()
    except (OperationalError, InterfaceError) as exc:
        # In the caller's own transaction, only the caller can redo it.
        if connection.in_atomic_block or not connection_is_broken(exc):
            raise
        logger.warning("database connection lost in turn %s; retrying once: %s", state.turn.id, exc)
        connection_lost()
        state.calls = calls
        del state.summaries_requested[requested:]
        del state.audits[audits:]
        del state.events[events:]
        done = committed() if committed is not None else None
        return done if done is not None else write()


def _call_key(state: _TurnState, call: int) -> str:
    """The ledger key of the turn's `call`-th provider call."""
    return f"turn:{state.turn.id}:call:{call}"


def _committed_call(state: _TurnState, reservation: Reservation | None) -> LlmCallEvent | None:
    """The next call's event if its transaction committed after all (its COMMIT's answer was
    lost), with the audit it wrote, taken into the turn's state; None when it did not commit.
    A summary it requested stays pending for the sweep."""
    event = LlmCallEvent.objects.filter(idempotency_key=_call_key(state, state.calls + 1)).first()
    if event is None:
        return None
    state.calls += 1
    state.events.append(event)
    state.audits.append(
        TurnContextAudit.objects.select_related("agent").get(call_event_id=event.id)
    )
    if reservation is not None:
        state.unsettled.discard(reservation.id)
    return event


def _touch(turn: Turn) -> None:
    turn.progress_at = timezone.now()
    Turn.objects.filter(pk=turn.pk).update(progress_at=turn.progress_at)


def _turn_close(state: _TurnState, *, speakers_count: int) -> TurnOutcome:
    results = state.results
    ok = [r for r in results if r.ok]
    if any(r.interrupted for r in results) or (
        state.observer.cancelled() and len(results) < speakers_count
    ):
        status = TurnStatus.INTERRUPTED
    elif len(ok) == speakers_count:
        status = TurnStatus.COMPLETED
    elif ok:
        status = TurnStatus.PARTIAL
    else:
        status = TurnStatus.FAILED
    output = "\n\n".join(f"{r.message.agent.name}: {r.message.content}" for r in ok)
    status_code = 502 if status == TurnStatus.FAILED and speakers_count == 1 else 201
    now = timezone.now()
    turn = state.turn

    # The usual close is the turn's UPDATE alone: one statement, no transaction around it.
    alone = not state.idempotency_key and not state.unsettled

    def write() -> None:
        with nullcontext() if alone else transaction.atomic():
            turn.status = status
            turn.assistant_output = output
            turn.completed_at = now
            turn.progress_at = now
            turn.error_code = "llm_unavailable" if status_code == 502 else ""
            turn.save(
                update_fields=[
                    "status",
                    "assistant_output",
                    "completed_at",
                    "progress_at",
                    "error_code",
                ]
            )
            if state.idempotency_key:
                TurnIdempotencyKey.objects.filter(
                    turn=turn, status=IdempotencyStatus.RUNNING
                ).update(status=IdempotencyStatus.DONE, response_status=status_code)
            if state.unsettled:
                _release_leftover_reservations(turn.id)
            # Outside a transaction, on_commit runs at once: the UPDATE has committed.
            for summary_id in state.summaries_requested:
                transaction.on_commit(partial(_enqueue_summary, summary_id), robust=True)

    _write_with_reconnect(state, write)
    messages = [state.user_message, *(r.message for r in state.results)]
    return TurnOutcome(
        turn_id=turn.id,
        status_code=status_code,
        turn=turn_selectors.turn_with_details_from(
            turn,
            messages=[m for m in messages if m is not None],
            audits=state.audits,
            events=state.events,
        ),
    )


def _turn_recover(state: _TurnState, exc: Exception) -> TurnOutcome:
    """Close a turn that an unexpected error broke off: a provider call that returned is still
    recorded and billed, the speaker at work gets an `internal_error` message, the turn ends
    `failed` (unless its close had already committed), every reservation it still holds is
    released and its Idempotency-Key finishes — so the session accepts the next turn at once.
    When the database itself is gone this cannot be written: the database error goes up (503)
    and the stale sweep closes the turn once the database is back."""
    turn_id = state.turn.id
    if isinstance(exc, OperationalError | InterfaceError) and connection_is_broken(exc):
        connection_lost()
        logger.warning("turn %s lost its database connection: %s", turn_id, exc)
    else:
        logger.error("turn %s broke off on an unexpected error", turn_id, exc_info=exc)
    _bill_unrecorded(state)
    turn, pinned = _turn_close_failed(state)
    if pinned is not None:
        try:
            state.observer.agent_finished(pinned.agent, pinned, None)
        except Exception:  # a stream whose renderer failed: the turn is closed all the same
            logger.exception("observer of turn %s failed", turn_id)
    for summary_id in state.summaries_requested:
        transaction.on_commit(partial(_enqueue_summary, summary_id), robust=True)
    status_code = 502 if turn.status == TurnStatus.FAILED and turn.error_code else 201
    return TurnOutcome(
        turn_id=turn_id,
        status_code=status_code,
        turn=turn_selectors.turn_get_by_id(turn_id=turn_id),
    )


def _bill_unrecorded(state: _TurnState) -> None:
    """Record (and bill) a provider call whose own write never committed. If even that fails,
    its reservation is released with the others: the call goes unbilled, never the user
    overcharged."""
    if state.unrecorded is None:
        return
    prepared, outcome, reservation = state.unrecorded
    state.unrecorded = None
    try:
        with transaction.atomic():
            call_event_write(
                user=state.user,
                reservation=reservation,
                purpose=prepared.purpose,
                model_id=prepared.model.id,
                outcome=outcome,
                idempotency_key=f"turn:{state.turn.id}:call:recovered",
                room_id=state.session.room_id,
                session_id=state.session.id,
                turn_id=state.turn.id,
                agent_id=prepared.agent.id if prepared.agent else None,
            )
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        logger.exception("the last call of turn %s could not be recorded", state.turn.id)


def _turn_close_failed(state: _TurnState) -> tuple[Turn, Message | None]:
    """The recovery's one transaction. Returns the turn as it now stands, and the error message
    written for the speaker at work (None when there was none to write)."""
    now = timezone.now()
    pinned: Message | None = None
    with transaction.atomic():
        turn = Turn.objects.select_for_update(no_key=True).get(pk=state.turn.pk)
        if turn.status == TurnStatus.RUNNING:
            pinned = _pin_failure(state, turn)
            ok = [r.message for r in state.results if r.ok]
            turn.status = TurnStatus.FAILED
            turn.error_code = "internal_error"
            turn.assistant_output = "\n\n".join(f"{m.agent.name}: {m.content}" for m in ok)
            turn.completed_at = turn.progress_at = now
            turn.save(
                update_fields=[
                    "status",
                    "error_code",
                    "assistant_output",
                    "completed_at",
                    "progress_at",
                ]
            )
        TurnIdempotencyKey.objects.filter(turn=turn, status=IdempotencyStatus.RUNNING).update(
            status=IdempotencyStatus.DONE, response_status=502
        )
        _release_leftover_reservations(turn.id)
    return turn, pinned


def _pin_failure(state: _TurnState, turn: Turn) -> Message | None:
    """The error message of the speaker that was at work, unless its message was written."""
    if state.speaking is None:
        return None
    agent, position = state.speaking
    if Message.objects.filter(turn=turn, sequence=position).exists():
        return None
    return Message.objects.create(
        session_id=turn.session_id,
        turn=turn,
        sequence=position,
        role=MessageRole.ASSISTANT,
        agent=agent,
        mode=turn.mode,
        status=MessageStatus.ERROR,
        error_code="internal_error",
        error_message="An internal error stopped this reply.",
    )


def _enqueue_summary(summary_id: UUID) -> None:
    from sessions.tasks import summary_enqueue  # tasks import this module

    summary_enqueue(summary_id)


def _release_leftover_reservations(turn_id: UUID) -> None:
    """A reservation whose call never happened (an interrupted turn's next speaker) is freed."""
    for reservation in Reservation.objects.filter(turn_id=turn_id, status="active"):
        reservation_release(reservation=reservation)


def _turn_fail_stale(turn: Turn, *, now: Any) -> None:
    turn.status = TurnStatus.FAILED
    turn.error_code = "turn_stale"
    turn.completed_at = now
    turn.save(update_fields=["status", "error_code", "completed_at"])
    _release_leftover_reservations(turn.id)
    TurnIdempotencyKey.objects.filter(turn=turn, status=IdempotencyStatus.RUNNING).update(
        status=IdempotencyStatus.DONE, response_status=502
    )


def turns_fail_stale(*, now: Any = None) -> int:
    """Fail running turns that made no progress for TURN_STALE_AFTER_SECONDS (a crashed process
    must never lock a session). Returns how many were failed."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.TURN_STALE_AFTER_SECONDS)
    stale = Turn.objects.filter(status=TurnStatus.RUNNING, progress_at__lt=cutoff)
    count = 0
    for turn_id in stale.values_list("id", flat=True):
        with transaction.atomic():
            turn = Turn.objects.select_for_update(no_key=True).get(pk=turn_id)
            if turn.status == TurnStatus.RUNNING and turn.progress_at < cutoff:
                _turn_fail_stale(turn, now=now)
                count += 1
    return count
