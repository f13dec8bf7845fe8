"""Retrying and regenerating replies of a session's latest turn.

Without `agent_ids`, every speaker of the turn whose reply is `error` or `interrupted` — or who
never spoke, kept from it by a cancel or a disconnect — answers again; with `agent_ids`, those
speakers answer again whatever their reply. Speakers answer in the turn's order, each on the
turn's earlier replies as they stand at that moment, with the agent's current settings; a new
reply replaces the old one, which is kept `superseded` (never shown in the turn, never prompt
content). The turn is `running` while the retry runs (a new turn is 409, a cancel stops it, the
stale sweep applies); every call goes through the turn's own stages — budget, reservation (402
first), audit, metering — and the close recomputes the turn's status, output and usage.

The checks come before anything is written, in the contract's order: the Idempotency-Key
replay, 404 (no such turn), 422 (not the latest turn, an agent that was not a speaker, nothing
to retry, the first call's budget or price), 409 (a turn is running), 402 (credits).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from pantheon.errors import ApplicationError
from rooms.models import Agent
from sessions import selectors
from sessions.models import (
    Message,
    MessageRole,
    MessageStatus,
    Session,
    Turn,
    TurnIdempotencyKey,
    TurnStatus,
)
from sessions.services.turns import tools
from sessions.services.turns.admission import (
    lock_session_refusing_a_running_turn,
    turn_in_progress,
)
from sessions.services.turns.calls import audit_write
from sessions.services.turns.closing import RetryRecovery, retry_close, turn_recover
from sessions.services.turns.control import cancel_watch, turn_cancel_clear
from sessions.services.turns.execution import speak
from sessions.services.turns.idempotency import idempotency_check, idempotency_key_in_use
from sessions.services.turns.observers import NullObserver, TurnObserver
from sessions.services.turns.prompts import budget_rejection, prepare_call
from sessions.services.turns.speakers import unknown_agent
from sessions.services.turns.state import (
    AdmittedTurn,
    OpenTurn,
    PreparedCall,
    Progress,
    PromptContext,
    Replay,
    Reply,
    TurnOutcome,
)
from usage.models import Reservation
from usage.services import (
    ReservationRefused,
    credits_reserve,
    refusal_record,
    reservation_amount,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPlan:
    """Who answers again: the turn's speakers in order, each one's current reply (if any), and
    the ones regenerated."""

    speakers: tuple[Agent, ...]
    current: dict[UUID, Message]  # agent id → its reply as it stands (not superseded)
    targets: frozenset[UUID]


@dataclass(frozen=True)
class AdmittedRetry:
    """A retry that passed every check, its turn running again and its first call reserved."""

    admitted: AdmittedTurn
    plan: RetryPlan

    @property
    def turn(self) -> Turn:
        return self.admitted.turn


def _turn_not_latest(turn: Turn, latest: int) -> ApplicationError:
    return ApplicationError(
        f"Only the session's latest turn ({latest}) can be retried.",
        code="turn_not_latest",
        details={"turn_index": turn.turn_index, "latest_turn_index": latest},
    )


def turn_changed() -> ApplicationError:
    return ApplicationError(
        "The turn changed while this retry was being prepared (another retry ended); look at "
        "it again and retry what still needs it.",
        code="turn_in_progress",
        retry_after=1,
    )


def _speakers_of(turn: Turn) -> tuple[Agent, ...]:
    """The turn's speakers in order, with their current settings. An agent deleted since keeps
    its place (its reply still counts in the turn's status and output, and in later speakers'
    prompts) but is never regenerated. A turn from before speakers were recorded: its replies'
    agents."""
    ids = [UUID(i) for i in turn.speaker_ids]
    if not ids:
        ids = list(
            dict.fromkeys(
                Message.objects.filter(turn=turn, role=MessageRole.ASSISTANT)
                .exclude(agent=None)
                .order_by("sequence")
                .values_list("agent_id", flat=True)
            )
        )
    agents = {a.id: a for a in Agent.objects.filter(id__in=ids).select_related("model")}
    return tuple(agents[i] for i in ids if i in agents)


def _plan(turn: Turn, agent_ids: list[UUID] | None) -> RetryPlan:
    speakers = _speakers_of(turn)
    current = selectors.current_replies(turn=turn)
    alive = tuple(a for a in speakers if a.deleted_at is None)
    if agent_ids:
        known = {a.id for a in alive}
        unknown = [str(i) for i in agent_ids if i not in known]
        if unknown:
            raise unknown_agent(unknown, alive)
        targets = frozenset(agent_ids)
    else:
        redo = (MessageStatus.ERROR, MessageStatus.INTERRUPTED)
        targets = frozenset(
            a.id for a in alive if a.id not in current or current[a.id].status in redo
        )
    if not targets:
        message = (
            "Nothing to retry: every reply of this turn is ok. Pass agent_ids to regenerate."
            if alive and all(a.id in current for a in speakers)
            else "Nothing to retry: no agent of this turn can answer again (deleted since, or "
            "none was chosen). Pass agent_ids of agents that spoke in it."
        )
        raise ApplicationError(
            message,
            code="no_agent_selected",
            details={"available": [a.handle for a in alive]},
        )
    return RetryPlan(speakers=speakers, current=current, targets=targets)


def _earlier(plan: RetryPlan, current: dict[UUID, Message], position: int) -> list[Reply]:
    """The ok replies of the speakers before `position` (1-based), as they stand now."""
    replies = []
    for agent in plan.speakers[: position - 1]:
        message = current.get(agent.id)
        if message is not None and message.status == MessageStatus.OK:
            replies.append(Reply(agent=agent, content=message.content))
    return replies


def _context(session: Session, turn: Turn) -> PromptContext:
    summaries = selectors.summary_state_for_session(session_id=session.id)
    history = selectors.history_for_prompt(
        session_id=session.id,
        after_turn_index=summaries.boundary,
        before_turn_index=turn.turn_index,
    )
    return PromptContext(
        turn_index=turn.turn_index,
        user_input=turn.user_input,
        history=tuple(history),
        summaries=summaries,
    )


def turn_retry_admit(
    *,
    user: User,
    session: Session,
    turn_index: int,
    agent_ids: list[UUID] | None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    api_key_id: UUID | None = None,
) -> AdmittedRetry | Replay:
    """Every check of a retry, then the short transaction that runs the turn again."""
    if idempotency_key:
        replay = idempotency_check(user=user, key=idempotency_key, fingerprint=fingerprint)
        if replay is not None:
            return replay
    turn = Turn.objects.filter(session=session, turn_index=turn_index).first()
    if turn is None:
        raise ApplicationError("Not found.", code="not_found")
    if turn.turn_index != session.turn_counter:
        raise _turn_not_latest(turn, session.turn_counter)
    plan = _plan(turn, agent_ids)
    context = _context(session, turn)
    first_position, first_agent = next(
        (n, a) for n, a in enumerate(plan.speakers, start=1) if a.id in plan.targets
    )
    first = prepare_call(
        agent=first_agent,
        context=context,
        earlier=_earlier(plan, plan.current, first_position),
        tools=tools.offered(first_agent, tools.tool_context(session, user.pk)),
    )
    if first.cascade.rejected:
        audit_write(session=session, turn=turn, prepared=first)
        raise budget_rejection(first)
    amount = reservation_amount(
        model_id=first.model.id,
        estimated_input_tokens=first.cascade.estimated_final,
        output_reserve=first.cascade.output_reserve,
    )
    # Read before the turn runs again: nothing may fail between that commit and the execution.
    user_message = Message.objects.get(turn=turn, role=MessageRole.USER)
    try:
        reservation = _run_again(
            user,
            session,
            turn,
            first,
            amount,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            api_key_id=api_key_id,
        )
    except ReservationRefused as refused:  # its transaction rolled back: noted on its own
        refusal_record(user_id=user.pk, refusal=refused, purpose=first.purpose)
        raise
    open_turn = OpenTurn(
        session=session,
        turn=turn,
        user=user,
        user_message=user_message,
        idempotency_key=idempotency_key,
        summary_requested=None,
        run=f":retry:{uuid.uuid4().hex[:12]}",
        api_key_id=api_key_id,
    )
    admitted = AdmittedTurn(
        open=open_turn,
        mode=turn.mode,
        agents=plan.speakers,
        speakers=tuple(a for a in plan.speakers if a.id in plan.targets),
        context=context,
        first=first,
        first_reservation=reservation,
    )
    return AdmittedRetry(admitted=admitted, plan=plan)


def _run_again(
    user: User,
    session: Session,
    turn: Turn,
    first: PreparedCall,
    amount: int,
    *,
    idempotency_key: str | None,
    fingerprint: str,
    api_key_id: UUID | None,
) -> Reservation:
    """The turn running again, its first call reserved: 409 when a turn runs in the session
    (this one included), 402 for credits or a spending limit."""
    now = timezone.now()
    try:
        with transaction.atomic():
            # A stale running turn (its process died) is failed first, as for a new turn.
            locked = lock_session_refusing_a_running_turn(session, now)
            if turn.turn_index != locked.turn_counter:  # a new turn came meanwhile
                raise _turn_not_latest(turn, locked.turn_counter)
            ended = Turn.objects.filter(pk=turn.pk).values_list("completed_at", flat=True).get()
            # (A turn planned while running was stale and has just been failed: its replies,
            # which the plan read, are as they were.)
            if turn.status != TurnStatus.RUNNING and ended != turn.completed_at:
                # It ended again since the retry was planned (another retry, or the sweep):
                # the plan — who answers, which replies are replaced — is out of date.
                raise turn_changed()
            reservation = credits_reserve(
                user=user,
                model_id=first.model.id,
                estimated_input_tokens=first.cascade.estimated_final,
                output_reserve=first.cascade.output_reserve,
                purpose=first.purpose,
                session_id=session.id,
                turn_id=turn.id,
                room_id=session.room_id,
                api_key_id=api_key_id,
                amount_micro=amount,
            )
            turn_cancel_clear(turn)
            turn.status, turn.error_code = TurnStatus.RUNNING, ""
            turn.progress_at, turn.completed_at = now, None
            turn.save(
                update_fields=[
                    "status",
                    "error_code",
                    "progress_at",
                    "completed_at",
                    "cancel_requested_at",
                    "cancel_requested_by",
                ]
            )
            if idempotency_key:
                TurnIdempotencyKey.objects.create(
                    user=user, key=idempotency_key, request_hash=fingerprint, turn=turn
                )
    except IntegrityError as exc:
        logger.info("retry admission lost a race on session %s: %s", session.pk, exc)
        if "idempotency_user_key" in str(exc):
            raise idempotency_key_in_use() from exc
        raise turn_in_progress() from exc
    return reservation


def turn_retry_execute(
    *, retry: AdmittedRetry, observer: TurnObserver | None = None
) -> TurnOutcome:
    """Run the retry's speakers in the turn's order and close the turn again."""
    observer = observer or NullObserver()
    with cancel_watch(retry.turn.id, observer.cancel):
        return _execute(retry, observer)


def _execute(retry: AdmittedRetry, observer: TurnObserver) -> TurnOutcome:
    admitted, plan = retry.admitted, retry.plan
    progress = Progress(open=admitted.open)
    current = dict(plan.current)  # each speaker's reply as it stands, updated as they answer
    speaking: tuple[Agent, int] | None = None
    try:
        observer.turn_started(admitted.turn)
        for position, agent in enumerate(plan.speakers, start=1):
            if agent.id not in plan.targets:
                continue
            if observer.cancelled():
                break
            speaking = (agent, position)
            result = speak(
                admitted,
                progress,
                agent,
                position,
                observer,
                first=not progress.results,
                earlier=_earlier(plan, current, position),
                last=False,
                supersedes=current.get(agent.id),
            )
            progress = progress.with_result(result)
            current[agent.id] = result.message
            speaking = None
            if result.interrupted:
                break
        replies = [current.get(a.id) for a in plan.speakers]
        return retry_close(progress, replies=replies)
    except Exception as exc:
        replaced = current.get(speaking[0].id) if speaking is not None else None
        recovery = RetryRecovery(speakers=plan.speakers, replaced=replaced)
        return turn_recover(progress, exc, speaking=speaking, observer=observer, retry=recovery)
