"""Asking for summaries: the `pending` row written in a turn's transaction (so a sweep always
finds it), handing it to the worker once that transaction has committed (or, with no broker, to
a thread of this process), the periodic sweep's list of summaries due, and the backfill of
sessions whose summary is missing or failed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from uuid import UUID

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from pantheon.db import pk_batches
from sessions.models import Session, SessionSummary, SummaryStatus, Turn
from sessions.services.summaries.generation import (
    SummaryRetryable,
    claim_lease,
    summary_generate,
)
from sessions.services.summaries.schema import LIST_FIELDS

logger = logging.getLogger(__name__)

# Enqueued by name: services never import the tasks module (tasks call services).
SUMMARIZE_TASK = "sessions.tasks.summarize_session"


def summary_row(*, session: Session, turn: Turn, cover_to: int) -> SessionSummary:
    """The pending summary row of turns 1..`cover_to` that `turn` asks for, unsaved."""
    return SessionSummary(
        session=session,
        last_turn_covered=cover_to,
        status=SummaryStatus.PENDING,
        model=settings.SUMMARY_MODEL,
        requested_by_turn=turn,
    )


def summary_request(*, session: Session, turn: Turn, cover_to: int) -> SessionSummary | None:
    """Write the pending summary row of turns 1..`cover_to` (in the caller's transaction).
    None when one is already pending: at most one is, per session."""
    summary = summary_row(session=session, turn=turn, cover_to=cover_to)
    try:
        with transaction.atomic():
            summary.save(force_insert=True)
    except IntegrityError:
        return None
    return summary


def summary_enqueue(summary_id: UUID) -> bool:
    """Hand a summary to the worker. Never raises.

    - `CELERY_TASK_ALWAYS_EAGER`: generated here and now.
    - An empty `CELERY_BROKER_URL` (no broker, the zero-setup first run): generated in this
      process, in a thread started once the caller's transaction has committed (at once outside
      one), so the turn's response never waits for the summarizer.
    - Otherwise sent to the broker. With the broker down the row stays pending and the sweep (or
      `manage.py summarize_pending`) picks it up later."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return _generate_here(summary_id)
    if not settings.CELERY_BROKER_URL:
        # The thread reads the row on a connection of its own: only committed rows exist there.
        transaction.on_commit(partial(_start_generation_thread, summary_id), robust=True)
        return True
    try:
        current_app.send_task(SUMMARIZE_TASK, args=[str(summary_id)], retry=False)
        return True
    except Exception:  # any broker failure: the pending row is the durable record
        logger.warning("could not enqueue summary %s; the sweep will retry", summary_id)
        return False


def _generate_here(summary_id: UUID) -> bool:
    try:
        summary_generate(summary_id=summary_id)
    except SummaryRetryable:
        logger.warning(
            "summary %s is pending again after a provider error; the sweep (or manage.py "
            "summarize_pending) will retry it",
            summary_id,
        )
    except Exception:  # the request that asked for it has succeeded; the sweep retries
        logger.exception("summary %s failed in-process", summary_id)
    return True


def _start_generation_thread(summary_id: UUID) -> None:
    # Not a daemon: a stopping server finishes the summary it started (gunicorn's graceful
    # timeout bounds the wait) rather than leaving the row `running` until its lease expires.
    threading.Thread(
        target=_generate_in_thread, args=(summary_id,), name=f"summary-{summary_id}"
    ).start()


def _generate_in_thread(summary_id: UUID) -> None:
    """A thread's whole life: Django gives it database connections of its own, which nothing
    else would ever close (or hand back to the pool), so it closes them before it ends."""
    try:
        _generate_here(summary_id)
    finally:
        connections.close_all()


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


def summary_backfill_batches(*, batch_size: int) -> Iterator[tuple[list[BackfillItem], int]]:
    """Alive sessions walked by primary key in batches (never OFFSET): for each batch, the
    sessions whose summary is missing, failed or unstructured, with the turn it should cover,
    and how many sessions the batch held."""
    sessions = Session.objects.filter(deleted_at__isnull=True).only("id", "turn_counter")
    for batch in pk_batches(sessions, batch_size=batch_size):
        yield _backfill_items([(s.id, s.turn_counter) for s in batch]), len(batch)


def _backfill_items(batch: list[tuple[UUID, int]]) -> list[BackfillItem]:
    keep = settings.CONTEXT_RECENT_TURNS_TO_KEEP
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
    return items


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
