"""Generating one structured session summary (the Celery worker's job).

`summary_generate` claims the pending row, calls the summarizer model with a JSON-schema
structured output (previous ready summary + the newly covered turns), validates the answer on
the server, re-prompts once, and writes the result and its metered call in one transaction. A
duplicate delivery finds the row already claimed or done and does nothing; a failed summary
never becomes prompt content. A provider error is decided inside the transaction and raised
after its commit (`SummaryRetryable`): the call is billed for what the provider reported, the
row is pending again, and nothing of the attempt is rolled back.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from llm import tokenizer
from llm.gateway import ChatMessage, GatewayRequest
from llm.models import ModelConfig
from llm.selectors import model_get
from sessions import selectors
from sessions.models import Message, MessageRole, MessageStatus, SessionSummary, SummaryStatus
from sessions.services.provider_calls import CallOutcome, call_record, provider_call
from sessions.services.summaries.schema import (
    LIST_FIELDS,
    SUMMARY_SCHEMA,
    SummaryInvalid,
    validate_summary,
)
from usage.models import CallPurpose, Reservation, ReservationStatus
from usage.services import (
    ReservationRefused,
    call_event_record,
    credits_reserve,
    refusal_record,
    reservation_release,
)

logger = logging.getLogger(__name__)

SUMMARY_OUTPUT_TOKENS = 1500


def claim_lease() -> timedelta:
    """A running claim older than this (SUMMARY_CLAIM_LEASE_SECONDS) is abandoned: its worker
    died, and the row may be retaken. Read at call time, so a test can shorten it."""
    return timedelta(seconds=settings.SUMMARY_CLAIM_LEASE_SECONDS)


class SummaryRetryable(Exception):
    """A provider error worth retrying later (timeout, rate limit, 5xx)."""


@dataclass(frozen=True)
class _Claim:
    summary: SessionSummary
    previous: SessionSummary | None


def _claim(summary_id: UUID) -> _Claim | None:
    """Take the pending row (or an abandoned running one). None: nothing to do."""
    now = timezone.now()
    with transaction.atomic():
        summary = (
            SessionSummary.objects.select_for_update(no_key=True, skip_locked=True)
            .select_related("session__room")
            .filter(pk=summary_id)
            .first()
        )
        if summary is None:
            return None
        abandoned = (
            summary.status == SummaryStatus.RUNNING and summary.updated_at < now - claim_lease()
        )
        if summary.status != SummaryStatus.PENDING and not abandoned:
            return None
        summary.status = SummaryStatus.RUNNING
        summary.attempts += 1
        summary.save(update_fields=["status", "attempts", "updated_at"])
    if abandoned:  # after the claim's commit: never an account lock under the summary's
        _release_abandoned_reservations(summary)
    previous = (
        SessionSummary.objects.filter(
            session_id=summary.session_id,
            status=SummaryStatus.READY,
            last_turn_covered__lt=summary.last_turn_covered,
        )
        .order_by("-last_turn_covered")
        .first()
    )
    return _Claim(summary=summary, previous=previous)


def _release_abandoned_reservations(summary: SessionSummary) -> None:
    """The dead worker's reservation (its call never finished, so nothing was billed) is freed
    now rather than at its expiry. Only one summary of a session is ever pending or running, so
    the session's active summary reservations are that worker's."""
    for reservation in Reservation.objects.filter(
        session_id=summary.session_id,
        purpose=CallPurpose.SUMMARY,
        status=ReservationStatus.ACTIVE,
    ):
        reservation_release(reservation=reservation)


def summary_lease_remaining(*, summary_id: UUID) -> float | None:
    """Seconds until a running summary's claim may be retaken; None when it is not running."""
    summary = SessionSummary.objects.filter(pk=summary_id, status=SummaryStatus.RUNNING).first()
    if summary is None:
        return None
    ends = summary.updated_at + claim_lease()
    return max(0.0, (ends - timezone.now()).total_seconds())


def _transcript(summary: SessionSummary, previous: SessionSummary | None) -> tuple[str, int]:
    start = previous.last_turn_covered if previous else 0
    rows = (
        Message.objects.filter(
            session_id=summary.session_id,
            turn__session_id=summary.session_id,
            turn__turn_index__gt=start,
            turn__turn_index__lte=summary.last_turn_covered,
            status__in=selectors.HISTORY_MESSAGE_STATUSES,
            role__in=[MessageRole.USER, MessageRole.ASSISTANT],
        )
        .exclude(status=MessageStatus.ERROR)
        .order_by("turn__turn_index", "sequence")
        .values_list("turn__turn_index", "role", "agent__name", "content")
    )
    lines = []
    for turn_index, role, agent_name, content in rows:
        speaker = "User" if role == MessageRole.USER else (agent_name or "Assistant")
        lines.append(f"[turn {turn_index}] {speaker}: {content}")
    return "\n".join(lines), start + 1


def _prompt(summary: SessionSummary, previous: SessionSummary | None) -> list[ChatMessage]:
    transcript, first_turn = _transcript(summary, previous)
    system = (
        "You maintain a structured summary of a conversation between a user and AI agents. "
        "Return JSON with summary_text (a faithful prose summary), key_facts, decisions, "
        "open_questions and action_items; each list item is {text, turns} where turns are the "
        "turn numbers it came from. Merge the previous summary with the new turns; drop nothing "
        "important; invent nothing."
    )
    parts = [ChatMessage(role="system", content=system)]
    if previous is not None:
        parts.append(
            ChatMessage(
                role="user",
                content="Previous summary (turns 1-"
                f"{previous.last_turn_covered}):\n" + _previous_as_text(previous),
            )
        )
    parts.append(
        ChatMessage(
            role="user",
            content=f"New turns {first_turn}-{summary.last_turn_covered}:\n{transcript}",
        )
    )
    return parts


def _previous_as_text(previous: SessionSummary) -> str:
    return json.dumps(
        {
            "summary_text": previous.summary_text,
            **{name: getattr(previous, name) for name in LIST_FIELDS},
        },
        ensure_ascii=False,
    )


def summary_generate(*, summary_id: UUID) -> str:
    """Generate one pending summary. Returns its final status ('ready', 'failed') or 'skipped'
    when there was nothing to do (a duplicate delivery). Raises SummaryRetryable for provider
    errors worth a later retry — only after the failed call's event, its bill, the settlement
    of its reservation and the row's return to `pending` have committed."""
    claim = _claim(summary_id)
    if claim is None:
        return "skipped"
    summary = claim.summary
    model = model_get(summary.model or settings.SUMMARY_MODEL)
    if model is None:
        _finish_failed(summary, "unknown_model")
        return SummaryStatus.FAILED
    messages = _prompt(summary, claim.previous)
    first_turn = (claim.previous.last_turn_covered if claim.previous else 0) + 1
    for attempt in (1, 2):
        called = _call(summary, model, messages)
        if isinstance(called, ReservationRefused):
            _finish_failed(summary, called.code)
            return SummaryStatus.FAILED
        reservation, outcome = called
        with transaction.atomic():
            verdict = _record(
                summary,
                reservation,
                outcome,
                model_id=model.id,
                attempt=attempt,
                first_turn=first_turn,
            )
        # Raised here, after the commit: nothing of this attempt is rolled back.
        if verdict.retry:
            raise SummaryRetryable(outcome.error_code)
        if verdict.error is None:
            return SummaryStatus.READY
        messages = [
            *messages,
            ChatMessage(
                role="user",
                content=f"Your previous answer was invalid: {verdict.error} Answer again with "
                "only the JSON object the schema describes.",
            ),
        ]
    _finish_failed(summary, "invalid_structured_output")
    return SummaryStatus.FAILED


def _call(
    summary: SessionSummary, model: ModelConfig, messages: list[ChatMessage]
) -> tuple[Reservation, CallOutcome] | ReservationRefused:
    """Reserve the call's worst case, then call the summarizer (outside any transaction). The
    refusal when the owner's credits or a spending limit (the user's, the room's) cannot cover
    it."""
    session = summary.session
    output_reserve = min(SUMMARY_OUTPUT_TOKENS, model.max_output_tokens)
    estimate = tokenizer.count_message_tokens(messages)
    try:
        reservation = credits_reserve(
            user=session.room.owner,
            model_id=model.id,
            estimated_input_tokens=estimate,
            output_reserve=output_reserve,
            purpose="summary",
            session_id=session.id,
            room_id=session.room_id,
        )
    except ReservationRefused as refused:
        refusal_record(user_id=session.room.owner_id, refusal=refused, purpose="summary")
        return refused
    outcome = provider_call(
        model,
        GatewayRequest(
            model=model.id,
            messages=messages,
            temperature=0,
            max_tokens=output_reserve,
            json_schema=SUMMARY_SCHEMA,
            schema_name="session_summary",
        ),
        estimated_prompt_tokens=estimate,
    )
    return reservation, outcome


@dataclass(frozen=True)
class _Verdict:
    """What one recorded call means for the summary: done (error None, no retry), re-prompt
    with `error`, or retry later (the row is pending again)."""

    error: str | None = None
    retry: bool = False


def _record(
    summary: SessionSummary,
    reservation: Reservation,
    outcome: CallOutcome,
    *,
    model_id: str,
    attempt: int,
    first_turn: int,
) -> _Verdict:
    """Inside the caller's transaction: the metered event (which bills what the provider
    reported and settles the reservation) and the row's new state. Never raises for a provider
    error, so that the transaction commits whatever the verdict."""
    if not outcome.reached:  # no request was sent (provider disabled, key unreadable)
        reservation_release(reservation=reservation)
        return _back_to_pending(summary, outcome.error_code)
    session = summary.session
    event = call_event_record(
        user=session.room.owner,
        reservation=reservation,
        call=call_record(
            outcome,
            purpose="summary",
            model_id=model_id,
            idempotency_key=f"summary:{summary.id}:try:{summary.attempts}:call:{attempt}",
            room_id=session.room_id,
            session_id=session.id,
        ),
    )
    if outcome.status == "ok":
        try:
            clean = validate_summary(
                outcome.parsed, first_turn=first_turn, last_turn=summary.last_turn_covered
            )
        except SummaryInvalid as exc:
            return _Verdict(error=str(exc))
        _finish_ready(summary, clean, model_id=model_id, event_id=event.id)
        return _Verdict()
    if outcome.error_code == "llm_invalid_response":
        return _Verdict(error=outcome.error_message)
    return _back_to_pending(summary, outcome.error_code)


def _back_to_pending(summary: SessionSummary, code: str) -> _Verdict:
    """A provider failure worth retrying: the row is pending again (the sweep finds it even if
    the task's retry is lost), with the failure's code."""
    summary.status = SummaryStatus.PENDING
    summary.error_code = code
    summary.save(update_fields=["status", "error_code", "updated_at"])
    return _Verdict(retry=True)


def _finish_ready(
    summary: SessionSummary, clean: dict[str, Any], *, model_id: str, event_id: UUID
) -> None:
    summary.status = SummaryStatus.READY
    summary.summary_text = clean["summary_text"]
    for name in LIST_FIELDS:
        setattr(summary, name, clean[name])
    summary.model = model_id
    summary.call_event_id = event_id
    summary.error_code = ""
    summary.completed_at = timezone.now()
    summary.save(
        update_fields=[
            "status",
            "summary_text",
            *LIST_FIELDS,
            "model",
            "call_event_id",
            "error_code",
            "completed_at",
            "updated_at",
        ]
    )


def _finish_failed(summary: SessionSummary, code: str) -> None:
    summary.status = SummaryStatus.FAILED
    summary.error_code = code
    summary.completed_at = timezone.now()
    summary.save(update_fields=["status", "error_code", "completed_at", "updated_at"])


def summary_mark_failed(*, summary_id: UUID, code: str) -> None:
    """Give up on a summary (retries exhausted). A failed summary never becomes prompt content."""
    summary = SessionSummary.objects.filter(pk=summary_id).first()
    if summary is not None and summary.status in (SummaryStatus.PENDING, SummaryStatus.RUNNING):
        _finish_failed(summary, code)
