"""The orchestrator's routing call: the manager model answers with structured output (an
ordered, duplicate-free list of this room's active handles and a one-line reason), validated on
the server. An invalid answer gets one corrective re-prompt naming the error; if it is still
invalid — or the call itself fails — the room's first active agent answers and the turn records
`fallback_used` with the reason. Every routing call is budgeted, reserved, audited and metered
like any other (purpose `routing`)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from llm.gateway import ChatMessage, GatewayRequest
from rooms.models import Agent
from sessions import routing
from sessions.services.turns import calls
from sessions.services.turns.observers import TurnObserver
from sessions.services.turns.state import AdmittedTurn, CallWritten, PreparedCall, Progress
from usage.models import Reservation


@dataclass(frozen=True)
class _Attempt:
    """One routing call's result: a valid decision, an answer to correct (`invalid`), or a
    reason to give up (`failed`)."""

    written: CallWritten | None = None
    decision: routing.RoutingDecision | None = None
    invalid: str = ""
    failed: str = ""


def route(
    admitted: AdmittedTurn, progress: Progress, observer: TurnObserver
) -> tuple[tuple[Agent, ...], Progress]:
    """The speakers the routing call chose (or the fallback), and the progress with the routing
    calls recorded. The turn's routing fields are written and the observer told."""
    agents = admitted.agents
    prepared = admitted.first
    reservation: Reservation | None = admitted.first_reservation
    messages = list(prepared.cascade.messages)
    attempt = _Attempt()
    for number in (1, 2):
        if number == 2:
            reserved = calls.reserve(admitted.open, prepared)
            if isinstance(reserved, tuple):
                attempt = _Attempt(failed=f"routing re-prompt not possible: {reserved[0]}")
                break
            reservation = reserved
        attempt = _call(admitted, progress, prepared, reservation, messages, observer)
        if attempt.written is not None:
            progress = progress.with_routing((attempt.written,))
        if not attempt.invalid:
            break
        messages = [*prepared.cascade.messages, _correction(attempt.invalid, agents)]
    if attempt.decision is not None:
        by_handle = {a.handle: a for a in agents}
        speakers = tuple(by_handle[h] for h in attempt.decision.selected)
    else:
        reason = attempt.failed or f"invalid routing answer: {attempt.invalid}"
        speakers = (agents[0],)
    _record_routing(admitted, attempt.decision, None if attempt.decision else reason, agents)
    observer.routed(admitted.turn)
    return speakers, progress


def _call(
    admitted: AdmittedTurn,
    progress: Progress,
    prepared: PreparedCall,
    reservation: Reservation | None,
    messages: list[ChatMessage],
    observer: TurnObserver,
) -> _Attempt:
    handles = [a.handle for a in admitted.agents]
    max_agents = settings.ROOM_MAX_AGENTS_PER_TURN
    outcome = calls.invoke(
        prepared,
        GatewayRequest(
            model=prepared.model.id,
            messages=messages,
            temperature=0,
            max_tokens=prepared.cascade.output_reserve,
            json_schema=routing.routing_schema(handles, max_agents),
            schema_name="routing",
        ),
        observer,
    )
    if not outcome.reached:  # the provider could not be used: nothing was sent
        calls.release(reservation)
        return _Attempt(failed=f"routing call failed: {outcome.error_code}")
    _, written = calls.call_write(
        admitted.open,
        prepared,
        outcome,
        reservation,
        key=calls.call_key(admitted.open, progress.calls_made + 1),
        request_summary=not progress.summaries_requested,
    )
    if outcome.status == "ok":
        try:
            decision = routing.validate_routing(outcome.parsed, handles, max_agents)
        except routing.RoutingInvalid as exc:
            return _Attempt(written=written, invalid=str(exc))
        return _Attempt(written=written, decision=decision)
    if outcome.error_code == "llm_invalid_response":
        return _Attempt(written=written, invalid=outcome.error_message)
    return _Attempt(written=written, failed=f"routing call failed: {outcome.error_code}")


def _correction(error: str, agents: tuple[Agent, ...]) -> ChatMessage:
    handles = [a.handle for a in agents]
    most = min(settings.ROOM_MAX_AGENTS_PER_TURN, len(handles))
    return ChatMessage(
        role="user",
        content=(
            f"Your previous answer was invalid: {error} Answer again with only a JSON object: "
            f"'agents' (1 to {most} distinct handles from {handles}) and 'reason' (one line)."
        ),
    )


def _record_routing(
    admitted: AdmittedTurn,
    decision: routing.RoutingDecision | None,
    fallback_reason: str | None,
    agents: tuple[Agent, ...],
) -> None:
    turn = admitted.turn
    by_handle = {a.handle: a for a in agents}
    if decision is not None:
        turn.routing_selected = decision.selected
        turn.routing_reason = decision.reason
    else:
        turn.routing_selected = [agents[0].handle]
        turn.fallback_used = True
        turn.fallback_reason = (fallback_reason or "")[:500]
    turn.speaker_ids = [str(by_handle[h].id) for h in turn.routing_selected]
    turn.save(
        update_fields=[
            "routing_selected",
            "routing_reason",
            "fallback_used",
            "fallback_reason",
            "speaker_ids",
        ]
    )
