"""Celery tasks of the sessions app. Tasks take ids and call a service."""

from __future__ import annotations

import logging
import random
from uuid import UUID

from celery import shared_task
from django.conf import settings

from sessions.services.summaries import (
    SummaryRetryable,
    summaries_due,
    summary_enqueue,
    summary_generate,
    summary_lease_remaining,
    summary_mark_failed,
)
from sessions.services.turns import idempotency_keys_purge, turns_fail_stale

logger = logging.getLogger(__name__)

SUMMARY_MAX_RETRIES = 4
# Product rule: a summary's first retry comes within 30 s, whatever SUMMARY_RETRY_BASE_SECONDS says.
SUMMARY_FIRST_RETRY_WITHIN_SECONDS = 30.0
SUMMARY_RETRY_CAP_SECONDS = 300.0


def retry_ceiling(retries: int) -> float:
    """The longest countdown before retry number `retries` + 1: SUMMARY_RETRY_BASE_SECONDS *
    2**retries, the first one clamped to 30 s (product rule) whatever the base. Every ceiling
    stays under half of what the broker's visibility timeout leaves after the task's hard time
    limit: with late acks on Redis, a message held (countdown) and then run (time limit) for
    longer than the visibility timeout is delivered a second time."""
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    room = (visibility - settings.CELERY_TASK_TIME_LIMIT) / 2
    ceiling = min(SUMMARY_RETRY_CAP_SECONDS, room, settings.SUMMARY_RETRY_BASE_SECONDS * 2**retries)
    if retries == 0:
        ceiling = min(ceiling, SUMMARY_FIRST_RETRY_WITHIN_SECONDS)
    return max(0.0, ceiling)


def retry_countdown(retries: int) -> float:
    """Exponential backoff with full jitter: uniform(0, retry_ceiling(retries))."""
    return random.uniform(0, retry_ceiling(retries))


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=SUMMARY_MAX_RETRIES)
def summarize_session(self, summary_id: str) -> str:  # type: ignore[no-untyped-def]
    """Write one structured session summary (idempotent: a duplicate delivery does nothing)."""
    try:
        status = summary_generate(summary_id=UUID(summary_id))
    except SummaryRetryable as exc:
        if self.request.retries >= SUMMARY_MAX_RETRIES:
            summary_mark_failed(summary_id=UUID(summary_id), code=str(exc) or "llm_unavailable")
            return "failed"
        raise self.retry(exc=exc, countdown=retry_countdown(self.request.retries)) from exc
    if status == "skipped" and (self.request.delivery_info or {}).get("redelivered"):
        # This very message was delivered before and its worker was lost mid-task (SIGKILL, OOM:
        # reject_on_worker_lost requeued it), so the running claim it found is most likely its
        # own, abandoned. Come back once the claim's lease has passed and retake it, rather
        # than leaving the summary to the periodic sweep.
        wait = summary_lease_remaining(summary_id=UUID(summary_id))
        if wait is not None and self.request.retries < SUMMARY_MAX_RETRIES:
            raise self.retry(countdown=wait + 1)  # else the periodic sweep retakes it
    return status


@shared_task(acks_late=True)
def sweep_pending_summaries() -> int:
    """Re-enqueue pending summaries (and ones whose worker died)."""
    due = summaries_due()
    for summary_id in due:
        summary_enqueue(summary_id)
    return len(due)


@shared_task(acks_late=True)
def sweep_stale_turns() -> int:
    """Fail running turns that stopped making progress."""
    return turns_fail_stale()


@shared_task(acks_late=True)
def purge_idempotency_keys() -> int:
    """Delete turn Idempotency-Keys older than IDEMPOTENCY_KEY_TTL_HOURS (beat)."""
    return idempotency_keys_purge()
