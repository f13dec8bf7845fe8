"""Running an admitted turn: the routing call (orchestrator), then each speaker in order — its
prompt (with this turn's earlier replies), its reservation, its call, its write — and the
close. A speaker that cannot be served (its budget, credits, price, provider) fails alone;
anything else that escapes closes the turn `failed` (closing.turn_recover): every opened turn
closes. Once the observer reports `cancelled()`, the call in flight is closed and kept as
interrupted and no later speaker runs."""

from __future__ import annotations

from django.db import transaction

from llm.gateway import GatewayRequest
from rooms.models import Agent, TurnMode
from sessions.models import Message, MessageStatus
from sessions.services.turns import calls
from sessions.services.turns.closing import turn_close, turn_recover
from sessions.services.turns.control import cancel_watch
from sessions.services.turns.observers import NullObserver, TurnObserver
from sessions.services.turns.orchestrator import route
from sessions.services.turns.prompts import prepare_call
from sessions.services.turns.state import (
    AdmittedTurn,
    PreparedCall,
    Progress,
    Reply,
    SpeakerResult,
    TurnOutcome,
)
from usage.models import Reservation


def turn_execute(*, admitted: AdmittedTurn, observer: TurnObserver | None = None) -> TurnOutcome:
    """Run an admitted turn to its end and close it; never leaves it running (short of the
    database itself being gone, when the stale sweep closes it later)."""
    observer = observer or NullObserver()
    with cancel_watch(admitted.turn.id, observer.cancel):
        return _execute(admitted, observer)


def _execute(admitted: AdmittedTurn, observer: TurnObserver) -> TurnOutcome:
    progress = Progress(open=admitted.open)
    speaking: tuple[Agent, int] | None = None
    try:
        observer.turn_started(admitted.turn)
        speakers: tuple[Agent, ...] = admitted.speakers
        if admitted.mode == TurnMode.ORCHESTRATOR:
            speakers, progress = route(admitted, progress, observer)
        for position, agent in enumerate(speakers, start=1):
            if observer.cancelled():
                break
            speaking = (agent, position)
            result = speak(
                admitted,
                progress,
                agent,
                position,
                observer,
                first=position == 1 and admitted.mode != TurnMode.ORCHESTRATOR,
                earlier=progress.replies,
                last=position == len(speakers),
            )
            progress = progress.with_result(result)
            speaking = None
            if result.interrupted:
                break
        return turn_close(progress, speakers=len(speakers), cancelled=observer.cancelled())
    except Exception as exc:
        return turn_recover(progress, exc, speaking=speaking, observer=observer)


def speak(
    admitted: AdmittedTurn,
    progress: Progress,
    agent: Agent,
    position: int,
    observer: TurnObserver,
    *,
    first: bool,
    earlier: list[Reply],
    last: bool,
    supersedes: Message | None = None,
) -> SpeakerResult:
    """One agent's reply at `position`, on the `earlier` replies of this turn: its prompt and
    reservation (the `first` call's were made at admission), its call, then one write for
    message, event, burn and audit (the `last` leaves the turn's progress to the close). A
    retry's reply replaces the message it `supersedes`."""
    if first:
        prepared, reservation = admitted.first, admitted.first_reservation
    else:
        prepared = prepare_call(agent=agent, context=admitted.context, earlier=earlier)
        reserved = calls.reserve(admitted.open, prepared)
        if isinstance(reserved, tuple):
            return speaker_failed(
                progress, prepared, position, *reserved, observer=observer, supersedes=supersedes
            )
        reservation = reserved
    observer.agent_started(agent)
    outcome = calls.invoke(
        prepared,
        GatewayRequest(
            model=prepared.model.id,
            messages=prepared.cascade.messages,
            temperature=float(agent.temperature),
            max_tokens=prepared.cascade.output_reserve,
        ),
        observer,
    )
    if not outcome.reached:  # the provider could not be used: nothing was sent
        return speaker_failed(
            progress,
            prepared,
            position,
            outcome.error_code,
            outcome.error_message,
            observer=observer,
            reservation=reservation,
            supersedes=supersedes,
        )
    message, written = calls.call_write(
        admitted.open,
        prepared,
        outcome,
        reservation,
        key=calls.call_key(admitted.open, progress.calls_made + 1),
        request_summary=not progress.summaries_requested,
        reply_at=position,
        last=last,
        supersedes=supersedes.id if supersedes is not None else None,
    )
    assert message is not None
    observer.agent_finished(agent, message, written.event)
    ok = message.status == MessageStatus.OK
    return SpeakerResult(
        message=message,
        calls=(written,),
        reply=Reply(agent=agent, content=outcome.text) if ok else None,
    )


def speaker_failed(
    progress: Progress,
    prepared: PreparedCall,
    position: int,
    code: str,
    message: str,
    *,
    observer: TurnObserver,
    reservation: Reservation | None = None,
    supersedes: Message | None = None,
) -> SpeakerResult:
    """A speaker that could not be called (budget, credits, price, an unusable provider): its
    own error message and audit (replacing the reply a retry `supersedes`), and its reservation
    (if it had one) given back unspent."""
    agent = prepared.agent
    assert agent is not None
    calls.release(reservation)
    open_turn = progress.open
    with transaction.atomic():
        if supersedes is not None:
            calls.supersede(supersedes.id)
        failed = calls.assistant_message_write(
            open_turn.turn,
            agent,
            position,
            status=MessageStatus.ERROR,
            error_code=code,
            error_message=message,
        )
        audit = calls.audit_write(session=open_turn.session, turn=open_turn.turn, prepared=prepared)
        calls.touch(open_turn.turn)
    observer.agent_finished(agent, failed, None)
    return SpeakerResult(message=failed, audits=(audit,))
