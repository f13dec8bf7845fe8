"""How a turn ends: its close (status, output, leftover reservations, its Idempotency-Key, the
summary it requested), the recovery of a turn that broke off, and the stale sweep that fails a
turn whose process died — so a session is never left answering 409."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from pantheon.db import connection_is_broken, connection_lost
from rooms.models import Agent
from sessions import selectors
from sessions.models import (
    IdempotencyStatus,
    Message,
    MessageRole,
    MessageStatus,
    Turn,
    TurnIdempotencyKey,
    TurnStatus,
)
from sessions.services.summaries import summary_enqueue
from sessions.services.turns import calls
from sessions.services.turns.observers import TurnObserver
from sessions.services.turns.state import Progress, TurnOutcome
from usage.models import Reservation, ReservationStatus

logger = logging.getLogger(__name__)

# Why a failed turn is answered as an error as a whole (502), stored on the turn: a replay
# of its Idempotency-Key answers the same.
LLM_UNAVAILABLE = "llm_unavailable"
INTERNAL_ERROR = "internal_error"


def _status_of(replies: list[Message | None]) -> str:
    """A turn's status from each speaker's current message (None: it never spoke, a cancel or a
    disconnect kept it from it)."""
    ok = sum(1 for m in replies if m is not None and m.status == MessageStatus.OK)
    if any(m is None or m.status == MessageStatus.INTERRUPTED for m in replies):
        return TurnStatus.INTERRUPTED
    if ok == len(replies):
        return TurnStatus.COMPLETED
    return TurnStatus.PARTIAL if ok else TurnStatus.FAILED


def _output(replies: list[Message | None]) -> str:
    return "\n\n".join(
        f"{m.agent.name}: {m.content}"
        for m in replies
        if m is not None and m.status == MessageStatus.OK
    )


def turn_close(progress: Progress, *, speakers: int, cancelled: bool) -> TurnOutcome:
    """Close a turn that ran to its end: status from its speakers' results (a single speaker
    that failed makes the whole request `llm_unavailable`), output, leftover reservations
    released (a next speaker's, never called), its Idempotency-Key finished, its summary
    request enqueued once this has committed. Rendered from what it wrote (no query)."""
    replies: list[Message | None] = [r.message for r in progress.results]
    replies += [None] * (speakers - len(replies))
    error = _close(progress, replies)
    return TurnOutcome(turn=_rendered(progress), error=error)


def retry_close(progress: Progress, *, replies: list[Message | None]) -> TurnOutcome:
    """Close a turn after a retry: its status and output recomputed over every speaker's current
    reply (`replies`, in the speakers' order); the turn read back, its usage counting every
    call it ever made, superseded ones included."""
    error = _close(progress, replies)
    turn_id = progress.open.turn.id
    return TurnOutcome(turn=selectors.turn_get_by_id(turn_id=turn_id), error=error)


def _close(progress: Progress, replies: list[Message | None]) -> str | None:
    """Write the close; returns why the request failed as a whole, if it did."""
    status = _status_of(replies)
    error = LLM_UNAVAILABLE if status == TurnStatus.FAILED and len(replies) == 1 else None
    now = timezone.now()
    open_turn = progress.open
    turn = open_turn.turn
    leftovers = _holds_reservations(progress)
    # The usual close is the turn's UPDATE alone: one statement, no transaction around it.
    alone = not open_turn.idempotency_key and not leftovers

    def write() -> None:
        with nullcontext() if alone else transaction.atomic():
            turn.status, turn.assistant_output = status, _output(replies)
            turn.completed_at = turn.progress_at = now
            turn.error_code = error or ""
            turn.save(
                update_fields=[
                    "status",
                    "assistant_output",
                    "completed_at",
                    "progress_at",
                    "error_code",
                ]
            )
            if open_turn.idempotency_key:
                _finish_idempotency_key(turn, 502 if error else 201)
            if leftovers:
                release_leftover_reservations(turn.id)
            _enqueue_summaries(progress)

    calls.retry_on_lost_connection(write, lambda: None)
    return error


def _holds_reservations(progress: Progress) -> bool:
    """Whether a reservation of this turn may still be active. Every recorded call settled its
    own and every speaker that failed before its call released its own; later speakers reserve
    only right before they speak. What is left is the one made at admission, when the turn was
    cancelled before any call used it."""
    return not progress.results and not progress.routing_calls


def _rendered(progress: Progress) -> Turn:
    """The finished turn with its details, from the rows its stages wrote (no query)."""
    messages = [progress.open.user_message, *(r.message for r in progress.results)]
    return selectors.turn_with_details_from(
        progress.open.turn,
        messages=messages,
        audits=[
            *(c.audit for c in progress.all_calls),
            *(a for r in progress.results for a in r.audits),
        ],
        events=[c.event for c in progress.all_calls],
    )


def _finish_idempotency_key(turn: Turn, answered: int) -> None:
    TurnIdempotencyKey.objects.filter(turn=turn, status=IdempotencyStatus.RUNNING).update(
        status=IdempotencyStatus.DONE, response_status=answered
    )


def _enqueue_summaries(progress: Progress) -> None:
    # Outside a transaction, on_commit runs at once: the close has committed.
    for summary_id in progress.summaries_requested:
        transaction.on_commit(partial(summary_enqueue, summary_id), robust=True)


def release_leftover_reservations(turn_id: object) -> None:
    """Free every reservation of the turn still active (its call never happened)."""
    for reservation in Reservation.objects.filter(turn_id=turn_id, status=ReservationStatus.ACTIVE):
        calls.release(reservation)


# --- recovery -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryRecovery:
    """What the recovery of a retry needs: the turn's speakers in order (its status and output
    are recomputed over their current replies), and the reply the speaker at work was
    replacing (None when it had none)."""

    speakers: tuple[Agent, ...]
    replaced: Message | None


def turn_recover(
    progress: Progress,
    exc: Exception,
    *,
    speaking: tuple[Agent, int] | None,
    observer: TurnObserver,
    retry: RetryRecovery | None = None,
) -> TurnOutcome:
    """Close a turn that an unexpected error broke off: a provider call that returned is still
    recorded and billed, the speaker at work gets an `internal_error` message, the turn ends
    `failed` (unless its close had already committed), every reservation it still holds is
    released and its Idempotency-Key finishes — so the session accepts the next turn at once.
    A `retry` that broke off leaves the turn's other replies as they were: the speaker at work
    gets its error message (replacing its reply), and the status and output are recomputed over
    every speaker's current reply (`failed` only when none is ok).
    When the database itself is gone none of this can be written: the database error goes up
    (503) and the stale sweep closes the turn once the database is back."""
    turn_id = progress.open.turn.id
    cause = exc.__cause__ if isinstance(exc, calls.CallNotRecorded) else exc
    if isinstance(cause, OperationalError | InterfaceError) and connection_is_broken(cause):
        connection_lost()
        logger.warning("turn %s lost its database connection: %s", turn_id, cause)
    else:
        logger.error("turn %s broke off on an unexpected error", turn_id, exc_info=exc)
    if isinstance(exc, calls.CallNotRecorded):
        _bill_unrecorded(progress, exc)
    turn, pinned = _close_failed(progress, speaking, retry)
    if pinned is not None:
        try:
            observer.agent_finished(pinned.agent, pinned, None)
        except Exception:  # a stream whose renderer failed: the turn is closed all the same
            logger.exception("observer of turn %s failed", turn_id)
    _enqueue_summaries(progress)
    error = turn.error_code if turn.status == TurnStatus.FAILED and turn.error_code else None
    return TurnOutcome(turn=selectors.turn_get_by_id(turn_id=turn_id), error=error)


def _bill_unrecorded(progress: Progress, unrecorded: calls.CallNotRecorded) -> None:
    """Record (and bill) a provider call whose own write never committed. If even that fails,
    its reservation is released with the others: the call goes unbilled, the user is never
    overcharged."""
    try:
        with transaction.atomic():
            calls.record_call(
                progress.open,
                unrecorded.prepared,
                unrecorded.outcome,
                unrecorded.reservation,
                key=f"{progress.open.key_prefix}:call:recovered",
                request_summary=False,
                progress=False,
            )
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        logger.exception("the last call of turn %s could not be recorded", progress.open.turn.id)


def _close_failed(
    progress: Progress, speaking: tuple[Agent, int] | None, retry: RetryRecovery | None
) -> tuple[Turn, Message | None]:
    """The recovery's one transaction. Returns the turn as it now stands, and the error message
    written for the speaker at work (None when there was none to write)."""
    now = timezone.now()
    pinned: Message | None = None
    with transaction.atomic():
        turn = Turn.objects.select_for_update(no_key=True).get(pk=progress.open.turn.pk)
        if turn.status == TurnStatus.RUNNING and retry is not None:
            pinned = _pin_retry_failure(turn, speaking, retry.replaced)
            replies = _current_replies(turn, retry.speakers)
            turn.status = _status_of(replies)
            turn.error_code = INTERNAL_ERROR if turn.status == TurnStatus.FAILED else ""
            turn.assistant_output = _output(replies)
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
        elif turn.status == TurnStatus.RUNNING:
            pinned = _pin_failure(turn, speaking)
            turn.status, turn.error_code = TurnStatus.FAILED, INTERNAL_ERROR
            turn.assistant_output = _output([r.message for r in progress.results])
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
        _finish_idempotency_key(turn, 502)
        release_leftover_reservations(turn.id)
    return turn, pinned


def _pin_failure(turn: Turn, speaking: tuple[Agent, int] | None) -> Message | None:
    """The error message of the speaker that was at work, unless its message was written."""
    if speaking is None:
        return None
    agent, position = speaking
    if Message.objects.filter(turn=turn, sequence=position).exists():
        return None
    return calls.assistant_message_write(
        turn,
        agent,
        position,
        status=MessageStatus.ERROR,
        error_code=INTERNAL_ERROR,
        error_message="An internal error stopped this reply.",
    )


def _current_replies(turn: Turn, speakers: tuple[Agent, ...]) -> list[Message | None]:
    """Each speaker's reply as it stands (not superseded), in the speakers' order."""
    current = selectors.current_replies(turn=turn)
    return [current.get(agent.id) for agent in speakers]


def _pin_retry_failure(
    turn: Turn, speaking: tuple[Agent, int] | None, replaced: Message | None
) -> Message | None:
    """The error message of a retry's speaker at work, replacing its reply — unless its new
    reply was written already."""
    if speaking is None:
        return None
    agent, position = speaking
    now_current = (
        Message.objects.filter(turn=turn, agent=agent, role=MessageRole.ASSISTANT)
        .exclude(status=MessageStatus.SUPERSEDED)
        .order_by("-created_at")
        .first()
    )
    if now_current is not None and (replaced is None or now_current.pk != replaced.pk):
        return None
    if replaced is not None:
        calls.supersede(replaced.id)
    return calls.assistant_message_write(
        turn,
        agent,
        position,
        status=MessageStatus.ERROR,
        error_code=INTERNAL_ERROR,
        error_message="An internal error stopped this reply.",
    )


# --- the stale sweep ----------------------------------------------------------------------------


def turn_fail_stale(turn: Turn, *, now: datetime) -> None:
    """Fail a running turn that stopped making progress (in the caller's transaction, with the
    turn locked), releasing its reservations and finishing its Idempotency-Key."""
    turn.status = TurnStatus.FAILED
    turn.error_code = "turn_stale"
    turn.completed_at = now
    turn.save(update_fields=["status", "error_code", "completed_at"])
    release_leftover_reservations(turn.id)
    _finish_idempotency_key(turn, 502)


def turns_fail_stale(*, now: datetime | None = None) -> int:
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
                turn_fail_stale(turn, now=now)
                count += 1
    return count
