"""The turn pipeline, in stages that each read in one sitting:

    admission     every pre-flight check, then the short transaction that opens the turn
    prompts       building and budgeting a call's prompt (pure)
    speakers      who answers: mentions, agent_ids, round-table order
    orchestrator  the routing call, its re-prompt and fallback
    calls         one provider call and its write (reserve, invoke, record)
    execution     each speaker in order, then the close
    closing       the close, the recovery of a turn that broke off, the stale sweep
    control       cancelling a running turn from any process (the cancel watch)
    retry         retrying and regenerating replies of the latest turn
    idempotency   Idempotency-Key fingerprints, replays and their purge
    state         the frozen values the stages hand to each other

`turn_run` runs admission then execution; the views call the two steps themselves, so a stream
answers every rejection as JSON before it starts.
"""

from __future__ import annotations

from uuid import UUID

from accounts.models import User
from sessions.models import Session
from sessions.services.turns.admission import turn_admit, turn_preflight
from sessions.services.turns.closing import turns_fail_stale
from sessions.services.turns.control import turn_cancel_request
from sessions.services.turns.execution import turn_execute
from sessions.services.turns.idempotency import idempotency_keys_purge, request_fingerprint
from sessions.services.turns.observers import CallControl, NullObserver, TurnObserver
from sessions.services.turns.retry import AdmittedRetry, turn_retry_admit, turn_retry_execute
from sessions.services.turns.state import AdmittedTurn, Replay, TurnOutcome

__all__ = [
    "AdmittedRetry",
    "AdmittedTurn",
    "CallControl",
    "NullObserver",
    "Replay",
    "TurnObserver",
    "TurnOutcome",
    "idempotency_keys_purge",
    "request_fingerprint",
    "turn_admit",
    "turn_cancel_request",
    "turn_execute",
    "turn_preflight",
    "turn_retry_admit",
    "turn_retry_execute",
    "turn_run",
    "turns_fail_stale",
]


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
    """Run one turn on an owned, alive session, end to end. Returns the finished turn, or a
    Replay for a repeated Idempotency-Key; raises ApplicationError for a rejection (nothing
    written but the audit row of a budget rejection)."""
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
