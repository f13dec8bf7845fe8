"""Structured session summaries, written by the Celery worker.

A `pending` row is written in the turn's transaction; `summary_generate` claims it, calls the
summarizer model with a JSON-schema structured output (previous ready summary + the newly covered
turns), validates the answer on the server, re-prompts once, and writes the result and its
metered call in one transaction. A duplicate delivery finds the row already claimed or done and
does nothing; a failed summary never becomes prompt content.
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
from sessions import turn_selectors
from sessions.models import (
    Message,
    MessageRole,
    MessageStatus,
    Session,
    SessionSummary,
    SummaryStatus,
)
from sessions.services.calls import CallOutcome, call_event_write, provider_call
from usage.models import CallPurpose, Reservation, ReservationStatus
from usage.services import InsufficientCredits, credits_reserve, reservation_release

logger = logging.getLogger(__name__)

SUMMARY_OUTPUT_TOKENS = 1500


def claim_lease() -> timedelta:
    """A running claim older than this (SUMMARY_CLAIM_LEASE_SECONDS) is abandoned: its worker
    died, and the row may be retaken. Read at call time, so a test can shorten it."""
    return timedelta(seconds=settings.SUMMARY_CLAIM_LEASE_SECONDS)


_ITEM = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "turns": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["text", "turns"],
    "additionalProperties": False,
}
SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary_text": {"type": "string"},
        "key_facts": {"type": "array", "items": _ITEM},
        "decisions": {"type": "array", "items": _ITEM},
        "open_questions": {"type": "array", "items": _ITEM},
        "action_items": {"type": "array", "items": _ITEM},
    },
    "required": ["summary_text", "key_facts", "decisions", "open_questions", "action_items"],
    "additionalProperties": False,
}
LIST_FIELDS = ("key_facts", "decisions", "open_questions", "action_items")


class SummaryInvalid(ValueError):
    """The summarizer's answer does not hold up; the message says why (used to re-prompt)."""


class SummaryRetryable(Exception):
    """A provider error worth retrying later (timeout, rate limit, 5xx)."""


def validate_summary(answer: Any, *, first_turn: int, last_turn: int) -> dict[str, Any]:
    """Server-side checks beyond the schema: real text, and citations of covered turns only."""
    if not isinstance(answer, dict):
        raise SummaryInvalid("The answer must be a JSON object.")
    text = answer.get("summary_text")
    if not isinstance(text, str) or not text.strip():
        raise SummaryInvalid("'summary_text' must be a non-empty string.")
    clean: dict[str, Any] = {"summary_text": text.strip()}
    for name in LIST_FIELDS:
        items = answer.get(name)
        if not isinstance(items, list):
            raise SummaryInvalid(f"'{name}' must be a list of {{text, turns}} items.")
        out = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise SummaryInvalid(f"Every '{name}' item needs a 'text' string.")
            turns = item.get("turns")
            if not isinstance(turns, list) or not all(isinstance(t, int) for t in turns):
                raise SummaryInvalid(f"Every '{name}' item needs 'turns', a list of integers.")
            outside = [t for t in turns if not 1 <= t <= last_turn]
            if outside:
                raise SummaryInvalid(
                    f"'{name}' cites turns {outside}; only turns 1-{last_turn} exist."
                )
            if item["text"].strip():
                out.append({"text": item["text"].strip(), "turns": sorted(set(turns))})
        clean[name] = out
    return clean


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
            status__in=turn_selectors.HISTORY_MESSAGE_STATUSES,
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
    model = ModelConfig.objects.filter(pk=summary.model or settings.SUMMARY_MODEL).first()
    if model is None:
        _finish_failed(summary, "unknown_model")
        return SummaryStatus.FAILED
    messages = _prompt(summary, claim.previous)
    first_turn = (claim.previous.last_turn_covered if claim.previous else 0) + 1
    for attempt in (1, 2):
        called = _call(summary, model, messages)
        if called is None:
            _finish_failed(summary, "insufficient_credits")
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
) -> tuple[Reservation, CallOutcome] | None:
    """Reserve the call's worst case, then call the summarizer (outside any transaction).
    None: the owner's credits cannot cover it."""
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
        )
    except InsufficientCredits:
        return None
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
    event = call_event_write(
        user=session.room.owner,
        reservation=reservation,
        purpose="summary",
        model_id=model_id,
        outcome=outcome,
        idempotency_key=f"summary:{summary.id}:try:{summary.attempts}:call:{attempt}",
        room_id=session.room_id,
        session_id=session.id,
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


def summaries_due(*, older_than_seconds: int = 30) -> list[UUID]:
    """Pending summaries to (re-)enqueue, and running ones whose worker died."""
    now = timezone.now()
    pending = SessionSummary.objects.filter(
        status=SummaryStatus.PENDING, updated_at__lt=now - timedelta(seconds=older_than_seconds)
    )
    abandoned = SessionSummary.objects.filter(
        status=SummaryStatus.RUNNING,
        updated_at__lt=now - claim_lease(),
    )
    return list(pending.values_list("id", flat=True)) + list(abandoned.values_list("id", flat=True))


@dataclass(frozen=True)
class BackfillItem:
    session_id: UUID
    reason: str  # missing | failed | unstructured
    cover_to: int


def summary_backfill_candidates(
    *, after_id: UUID | None, limit: int
) -> tuple[list[BackfillItem], UUID | None]:
    """One batch of sessions (by primary key, never OFFSET) whose summary is missing, failed or
    unstructured, with the turn it should cover. Returns the items and the last id scanned."""
    keep = settings.CONTEXT_RECENT_TURNS_TO_KEEP
    sessions = Session.objects.filter(deleted_at__isnull=True).order_by("id")
    if after_id is not None:
        sessions = sessions.filter(id__gt=after_id)
    batch = list(sessions.values_list("id", "turn_counter")[:limit])
    if not batch:
        return [], None
    latest: dict[UUID, SessionSummary] = {}
    for summary in SessionSummary.objects.filter(session_id__in=[b[0] for b in batch]).order_by(
        "session_id", "-last_turn_covered"
    ):
        latest.setdefault(summary.session_id, summary)
    items = []
    for session_id, counter in batch:
        summary = latest.get(session_id)
        cover_to = counter - keep
        if summary is None:
            if cover_to > 0:
                items.append(BackfillItem(session_id, "missing", cover_to))
        elif summary.status == SummaryStatus.FAILED:
            items.append(BackfillItem(session_id, "failed", summary.last_turn_covered))
        elif summary.status == SummaryStatus.READY and not any(
            getattr(summary, name) for name in LIST_FIELDS
        ):
            items.append(BackfillItem(session_id, "unstructured", summary.last_turn_covered))
    return items, batch[-1][0]


def summary_backfill_prepare(*, item: BackfillItem) -> UUID | None:
    """Make the summary of one backfill item pending again (or new). None when another process
    already did (idempotent)."""
    with transaction.atomic():
        session = Session.objects.select_for_update(no_key=True).get(pk=item.session_id)
        if SessionSummary.objects.filter(
            session=session, status__in=[SummaryStatus.PENDING, SummaryStatus.RUNNING]
        ).exists():
            return None
        existing = SessionSummary.objects.filter(
            session=session, last_turn_covered=item.cover_to
        ).first()
        if existing is None:
            return SessionSummary.objects.create(
                session=session,
                last_turn_covered=item.cover_to,
                status=SummaryStatus.PENDING,
                model=settings.SUMMARY_MODEL,
            ).id
        if existing.status == SummaryStatus.READY and any(
            getattr(existing, name) for name in LIST_FIELDS
        ):
            return None  # already done by an earlier run
        existing.status = SummaryStatus.PENDING
        existing.model = settings.SUMMARY_MODEL
        existing.error_code = ""
        existing.save(update_fields=["status", "model", "error_code", "updated_at"])
        return existing.id
