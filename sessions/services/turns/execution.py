"""Running an admitted turn: the routing call (orchestrator), then each speaker in order — its
prompt (with this turn's earlier replies), its reservation, its call, its write — and the
close. A speaker that cannot be served (its budget, credits, price, provider) fails alone;
anything else that escapes closes the turn `failed` (closing.turn_recover): every opened turn
closes. Once the observer reports `cancelled()`, the call in flight is closed and kept as
interrupted and no later speaker runs."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from llm.gateway import ChatMessage, GatewayRequest
from rooms.models import Agent, TurnMode
from sessions.models import Message, MessageStatus
from sessions.services.turns import calls, tools
from sessions.services.turns.closing import turn_close, turn_recover
from sessions.services.turns.control import cancel_watch
from sessions.services.turns.observers import NullObserver, TurnObserver
from sessions.services.turns.orchestrator import route
from sessions.services.turns.prompts import prepare_call
from sessions.services.turns.state import (
    AdmittedTurn,
    CallWritten,
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
    retry's reply replaces the message it `supersedes`.

    With tools, a reply is up to `TOOL_MAX_ROUNDS` rounds: a call that asks for tools is
    recorded (event, burn, audit: no message yet), the tools run (outside any transaction), and
    the next call — budgeted again with the results, reserved again — goes on; the last round
    offers no tool, so the model answers. A cancel stops the rounds: the reply is kept
    `interrupted`. The reply's tool calls are stored with its message."""
    open_turn = admitted.open
    context = tools.tool_context(open_turn.session, open_turn.user.pk)
    offered = tools.offered(agent, context) if agent.tools else ()
    exchange: list[ChatMessage] = []
    runs: list[tools.ToolRun] = []
    written: list[CallWritten] = []
    started = False
    rounds = 0
    while True:
        offer = offered if rounds < settings.TOOL_MAX_ROUNDS else ()
        if first and rounds == 0:
            prepared, reservation = admitted.first, admitted.first_reservation
        else:
            prepared = prepare_call(
                agent=agent,
                context=admitted.context,
                earlier=earlier,
                tools=offer,
                exchange=exchange,
            )
            reserved = calls.reserve(open_turn, prepared)
            if isinstance(reserved, tuple):
                return speaker_failed(
                    progress,
                    prepared,
                    position,
                    *reserved,
                    observer=observer,
                    supersedes=supersedes,
                    written=written,
                    runs=runs,
                )
            reservation = reserved
        if not started:
            observer.agent_started(agent)
            started = True
        outcome = calls.invoke(
            prepared,
            GatewayRequest(
                model=prepared.model.id,
                messages=prepared.cascade.messages,
                temperature=float(agent.temperature),
                max_tokens=prepared.cascade.output_reserve,
                tools=list(prepared.tools) or None,
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
                written=written,
                runs=runs,
            )
        key = calls.call_key(open_turn, progress.calls_made + len(written) + 1)
        asks_for_tools = outcome.status == "ok" and outcome.tool_calls and prepared.tools
        if asks_for_tools:
            _, call = calls.call_write(
                open_turn,
                prepared,
                outcome,
                reservation,
                key=key,
                request_summary=not _summary_asked(progress, written),
                reply_at=None,
            )
            written.append(call)
            rounds += 1
            round_runs = tools.run_round(
                outcome.tool_calls,
                round_number=rounds,
                agent=agent,
                context=context,
                observer=observer,
            )
            runs += round_runs
            if observer.cancelled():  # before the round, or during it
                return _stopped_between_rounds(
                    progress, agent, position, outcome.text, observer, supersedes, written, runs
                )
            exchange += tools.exchange(outcome.text, outcome.tool_calls, round_runs)
            continue
        message, call = calls.call_write(
            open_turn,
            prepared,
            outcome,
            reservation,
            key=key,
            request_summary=not _summary_asked(progress, written),
            reply_at=position,
            last=last,
            supersedes=supersedes.id if supersedes is not None else None,
        )
        assert message is not None
        written.append(call)
        _store_tool_calls(message, agent, runs)
        observer.agent_finished(agent, message, call.event)
        ok = message.status == MessageStatus.OK
        return SpeakerResult(
            message=message,
            calls=tuple(written),
            reply=Reply(agent=agent, content=outcome.text) if ok else None,
        )


def _summary_asked(progress: Progress, written: list[CallWritten]) -> bool:
    return bool(progress.summaries_requested) or any(c.summary_requested for c in written)


def _store_tool_calls(message: Message, agent: Agent, runs: list[tools.ToolRun]) -> None:
    """Store the reply's tool calls, and keep them on the message for the turn's body."""
    stored = tools.tool_calls_write(message.turn, message, agent, runs)
    message.__dict__.setdefault("_prefetched_objects_cache", {})["tool_calls"] = stored


def _stopped_between_rounds(
    progress: Progress,
    agent: Agent,
    position: int,
    text: str,
    observer: TurnObserver,
    supersedes: Message | None,
    written: list[CallWritten],
    runs: list[tools.ToolRun],
) -> SpeakerResult:
    """A cancel during a tool round: what the model said so far is kept as the `interrupted`
    reply (its calls are recorded already), and no later round runs."""
    open_turn = progress.open
    with transaction.atomic():
        if supersedes is not None:
            calls.supersede(supersedes.id)
        message = calls.assistant_message_write(
            open_turn.turn,
            agent,
            position,
            status=MessageStatus.INTERRUPTED,
            content=text,
            error_code="interrupted",
        )
        _store_tool_calls(message, agent, runs)
        calls.touch(open_turn.turn)
    observer.agent_finished(agent, message, written[-1].event if written else None)
    return SpeakerResult(message=message, calls=tuple(written))


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
    written: list[CallWritten] | None = None,
    runs: list[tools.ToolRun] | None = None,
) -> SpeakerResult:
    """A speaker that could not be called (budget, credits, price, an unusable provider): its
    own error message and audit (replacing the reply a retry `supersedes`), and its reservation
    (if it had one) given back unspent. In a later tool round, the calls already `written` and
    the tool calls `runs` made stay the reply's."""
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
        _store_tool_calls(failed, agent, runs or [])
        calls.touch(open_turn.turn)
    observer.agent_finished(agent, failed, None)
    return SpeakerResult(message=failed, calls=tuple(written or ()), audits=(audit,))
