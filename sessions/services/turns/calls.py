"""One provider call of a turn and its write — the only place the turn pipeline talks to usage
about money: reserve the call's worst case, call the provider (outside any transaction), then
in one short transaction write what it produced (message or routing record), the context
audit, the metered call event with its burn and the reservation's settlement, and the turn's
progress. A write that loses its database connection is made once more on a fresh one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from llm.gateway import GatewayRequest
from pantheon import sql
from pantheon.db import connection_is_broken, connection_lost
from rooms.models import Agent
from sessions import sql as sessions_sql
from sessions.models import (
    AuditOutcome,
    Message,
    MessageRole,
    MessageStatus,
    Session,
    Turn,
    TurnContextAudit,
)
from sessions.services.provider_calls import CallOutcome, call_record, provider_call
from sessions.services.summaries import summary_request, summary_row
from sessions.services.turns.observers import TurnObserver
from sessions.services.turns.prompts import budget_rejection
from sessions.services.turns.state import CallWritten, OpenTurn, PreparedCall
from usage.models import LlmCallEvent, Reservation
from usage.services import (
    CallRecord,
    ModelNotPriced,
    ReservationRefused,
    call_event_build,
    call_event_record,
    credits_reserve,
    refusal_record,
    reservation_release,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class CallNotRecorded(Exception):
    """A provider call returned but its write did not commit (the cause is chained): whoever
    closes the turn still records and bills it."""

    def __init__(
        self, prepared: PreparedCall, outcome: CallOutcome, reservation: Reservation | None
    ) -> None:
        super().__init__(f"the {prepared.purpose} call's write did not commit")
        self.prepared, self.outcome, self.reservation = prepared, outcome, reservation


def call_key(open_turn: OpenTurn, number: int) -> str:
    """The ledger key of the run's `number`-th provider call (a repeat of the write is a no-op).
    A retry's run has keys of its own."""
    return f"{open_turn.key_prefix}:call:{number}"


def reserve(open_turn: OpenTurn, prepared: PreparedCall) -> Reservation | tuple[str, str]:
    """A later call's own pre-flight: its reservation, or why it cannot run (its budget, the
    credits, a model without a price) as (code, message) — that speaker's error, not the turn's."""
    if prepared.cascade.rejected:
        return "context_budget_exceeded", budget_rejection(prepared).message
    try:
        return credits_reserve(
            user=open_turn.user,
            model_id=prepared.model.id,
            estimated_input_tokens=prepared.cascade.estimated_final,
            output_reserve=prepared.cascade.output_reserve,
            purpose=prepared.purpose,
            session_id=open_turn.session.id,
            turn_id=open_turn.turn.id,
            room_id=open_turn.session.room_id,
            api_key_id=open_turn.api_key_id,
        )
    except ReservationRefused as refused:
        refusal_record(user_id=open_turn.user.pk, refusal=refused, purpose=prepared.purpose)
        return refused.code, refused.message
    except ModelNotPriced as exc:
        return exc.code, exc.message


def release(reservation: Reservation | None) -> None:
    """Give back a reservation whose call was never made."""
    if reservation is not None:
        reservation_release(reservation=reservation)


def invoke(prepared: PreparedCall, request: GatewayRequest, observer: TurnObserver) -> CallOutcome:
    """The provider call, outside any transaction; the agent's deltas go to the observer."""
    agent = prepared.agent
    observer.call_starting()
    return provider_call(
        prepared.model,
        request,
        estimated_prompt_tokens=prepared.cascade.estimated_final,
        on_delta=(lambda text: observer.agent_delta(agent, text)) if agent is not None else None,
        cancelled=observer.cancelled,
        on_open=observer.call_opened,
    )


def audit_row(
    *,
    session: Session,
    turn: Turn | None,
    prepared: PreparedCall,
    provider_prompt_tokens: int | None = None,
    call_event_id: UUID | None = None,
) -> TurnContextAudit:
    """The context audit of one budgeted call (or of a rejected request, `turn` None), unsaved."""
    c = prepared.cascade
    return TurnContextAudit(
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


def audit_write(**fields: Any) -> TurnContextAudit:
    """`audit_row`, saved."""
    audit = audit_row(**fields)
    audit.save(force_insert=True)
    return audit


def touch(turn: Turn) -> None:
    """Record the turn's progress: the stale sweep fails only a turn that stopped making it."""
    turn.progress_at = timezone.now()
    Turn.objects.filter(pk=turn.pk).update(progress_at=turn.progress_at)


def assistant_message_row(
    turn: Turn,
    agent: Agent,
    position: int,
    *,
    status: str,
    content: str = "",
    error_code: str = "",
    error_message: str = "",
) -> Message:
    """A speaker's message in the turn, unsaved: its reply, or the error that kept it from
    replying."""
    return Message(
        session_id=turn.session_id,
        turn=turn,
        sequence=position,
        role=MessageRole.ASSISTANT,
        agent=agent,
        mode=turn.mode,
        content=content,
        status=status,
        error_code=error_code,
        error_message=error_message,
    )


def assistant_message_write(turn: Turn, agent: Agent, position: int, **fields: Any) -> Message:
    """`assistant_message_row`, saved (in the caller's transaction)."""
    message = assistant_message_row(turn, agent, position, **fields)
    message.save(force_insert=True)
    return message


def supersede(message_id: UUID) -> None:
    """Mark the reply a retry replaces (in the caller's transaction)."""
    Message.objects.filter(pk=message_id).exclude(status=MessageStatus.SUPERSEDED).update(
        status=MessageStatus.SUPERSEDED
    )


def reply_status(outcome: CallOutcome) -> str:
    return {"ok": MessageStatus.OK, "cancelled": MessageStatus.INTERRUPTED}.get(
        outcome.status, MessageStatus.ERROR
    )


def _reply_row(
    open_turn: OpenTurn, prepared: PreparedCall, outcome: CallOutcome, position: int
) -> Message:
    status = reply_status(outcome)
    assert prepared.agent is not None
    return assistant_message_row(
        open_turn.turn,
        prepared.agent,
        position,
        status=status,
        # A failed reply is never content: no later prompt may take it for an answer.
        content=outcome.text if status != MessageStatus.ERROR else "",
        error_code=outcome.error_code if status != MessageStatus.OK else "",
        error_message=outcome.error_message,
    )


def _record(
    open_turn: OpenTurn, prepared: PreparedCall, outcome: CallOutcome, key: str
) -> CallRecord:
    """What usage records of this call."""
    return call_record(
        outcome,
        purpose=prepared.purpose,
        model_id=prepared.model.id,
        idempotency_key=key,
        room_id=open_turn.session.room_id,
        session_id=open_turn.session.id,
        turn_id=open_turn.turn.id,
        agent_id=prepared.agent.id if prepared.agent else None,
        api_key_id=open_turn.api_key_id,
    )


def _provider_prompt_tokens(outcome: CallOutcome) -> int | None:
    # None when the provider reported nothing (a failed call), never a misleading 0.
    usage = outcome.usage
    return usage.prompt_tokens if usage.source == "provider" and usage.prompt_tokens else None


def record_call(
    open_turn: OpenTurn,
    prepared: PreparedCall,
    outcome: CallOutcome,
    reservation: Reservation | None,
    *,
    key: str,
    request_summary: bool,
    progress: bool = True,
) -> CallWritten:
    """Inside the caller's transaction, with the ORM: the call event (priced, burned,
    reservation settled), the context audit with the provider's prompt count, a summary request
    if the cascade asked for one (and none was requested yet this turn), and the turn's progress
    (unless `progress` is false: the turn's close, which writes it anyway, comes next)."""
    event = call_event_record(
        user=open_turn.user,
        reservation=reservation,
        call=_record(open_turn, prepared, outcome, key),
    )
    audit = audit_write(
        session=open_turn.session,
        turn=open_turn.turn,
        prepared=prepared,
        provider_prompt_tokens=_provider_prompt_tokens(outcome),
        call_event_id=event.id,
    )
    requested = None
    if request_summary and prepared.summary_cover_to is not None:
        summary = summary_request(
            session=open_turn.session, turn=open_turn.turn, cover_to=prepared.summary_cover_to
        )
        requested = summary.id if summary is not None else None
    if progress:
        touch(open_turn.turn)
    return CallWritten(event=event, audit=audit, summary_requested=requested)


def call_write(
    open_turn: OpenTurn,
    prepared: PreparedCall,
    outcome: CallOutcome,
    reservation: Reservation | None,
    *,
    key: str,
    request_summary: bool,
    reply_at: int | None = None,
    last: bool = False,
    supersedes: UUID | None = None,
) -> tuple[Message | None, CallWritten]:
    """A call's one write: the reply's message (at position `reply_at`; a routing call has
    none) and the recorded call; the `last` speaker leaves the turn's progress to the close; a
    retry's reply marks the one it replaces (`supersedes`) superseded.
    One statement on PostgreSQL (`sessions.sql.call_write`), else one ORM transaction. Raises
    CallNotRecorded (the cause chained) when it cannot be written."""

    def write() -> tuple[Message | None, CallWritten]:
        if sql.available():
            written = _write_at_once(
                open_turn,
                prepared,
                outcome,
                reservation,
                key=key,
                request_summary=request_summary,
                reply_at=reply_at,
                last=last,
                supersedes=supersedes,
            )
            if written is not None:
                return written
        return _write_with_orm(
            open_turn,
            prepared,
            outcome,
            reservation,
            key=key,
            request_summary=request_summary,
            reply_at=reply_at,
            last=last,
            supersedes=supersedes,
        )

    def committed() -> tuple[Message | None, CallWritten] | None:
        written = committed_call(key)
        if written is None:
            return None
        if reply_at is None:
            return None, written
        # A retry's reply shares its place with the reply it replaced: the current one.
        current = Message.objects.select_related("agent").exclude(status=MessageStatus.SUPERSEDED)
        return current.get(turn=open_turn.turn, sequence=reply_at), written

    try:
        return retry_on_lost_connection(write, committed)
    except Exception as exc:
        raise CallNotRecorded(prepared, outcome, reservation) from exc


def _write_at_once(
    open_turn: OpenTurn,
    prepared: PreparedCall,
    outcome: CallOutcome,
    reservation: Reservation | None,
    *,
    key: str,
    request_summary: bool,
    reply_at: int | None,
    last: bool,
    supersedes: UUID | None,
) -> tuple[Message | None, CallWritten] | None:
    """The call's rows in one statement; None when the event's key or generation id was seen
    before (the ORM path decides then)."""
    now = timezone.now()
    turn = open_turn.turn
    event = call_event_build(
        user_id=open_turn.user.pk, call=_record(open_turn, prepared, outcome, key)
    )
    message = _reply_row(open_turn, prepared, outcome, reply_at) if reply_at is not None else None
    audit = audit_row(
        session=open_turn.session,
        turn=turn,
        prepared=prepared,
        provider_prompt_tokens=_provider_prompt_tokens(outcome),
        call_event_id=event.id,
    )
    summary = None
    if request_summary and prepared.summary_cover_to is not None:
        summary = summary_row(
            session=open_turn.session, turn=turn, cover_to=prepared.summary_cover_to
        )
    written, requested = sessions_sql.call_write(
        event=event,
        reservation_id=reservation.id if reservation is not None else None,
        message=message,
        audit=audit,
        summary=summary,
        progress_of=None if last else turn.id,
        now=now,
        supersedes=supersedes,
    )
    if not written:
        return None
    if not last:
        turn.progress_at = now
    return message, CallWritten(event=event, audit=audit, summary_requested=requested)


def _write_with_orm(
    open_turn: OpenTurn,
    prepared: PreparedCall,
    outcome: CallOutcome,
    reservation: Reservation | None,
    *,
    key: str,
    request_summary: bool,
    reply_at: int | None,
    last: bool,
    supersedes: UUID | None,
) -> tuple[Message | None, CallWritten]:
    with transaction.atomic():
        if supersedes is not None:
            supersede(supersedes)
        message = None
        if reply_at is not None:
            message = _reply_row(open_turn, prepared, outcome, reply_at)
            message.save(force_insert=True)
        written = record_call(
            open_turn,
            prepared,
            outcome,
            reservation,
            key=key,
            request_summary=request_summary,
            progress=not last,
        )
        return message, written


def committed_call(key: str) -> CallWritten | None:
    """The call's write if it committed after all (its COMMIT's answer was lost); None when
    it did not. A summary it requested stays pending for the sweep."""
    event = LlmCallEvent.objects.filter(idempotency_key=key).first()
    if event is None:
        return None
    audit = TurnContextAudit.objects.select_related("agent").get(call_event_id=event.id)
    return CallWritten(event=event, audit=audit)


def retry_on_lost_connection(write: Callable[[], T], committed: Callable[[], T | None]) -> T:
    """Run one of the turn's short write transactions after a provider call. When the database
    connection is lost meanwhile (a killed backend, a restart, a failover), the transaction was
    rolled back: it is made once more on a fresh connection, so a short outage still ends the
    turn in its documented state, its call billed once. If the connection died in the COMMIT
    itself, the first attempt may have committed after all: `committed()` looks for what it
    wrote and returns it, so nothing is written twice. A second failure goes up. Other
    database errors (a pool checkout timeout, a deadlock) go up at once."""
    try:
        return write()
    except (OperationalError, InterfaceError) as exc:
        # In the caller's own transaction, only the caller can redo it.
        if connection.in_atomic_block or not connection_is_broken(exc):
            raise
        logger.warning("database connection lost while writing a turn; retrying once: %s", exc)
        connection_lost()
        done = committed()
        return done if done is not None else write()
