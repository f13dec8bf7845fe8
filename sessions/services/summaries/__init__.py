"""Structured session summaries: asked for by turns (`requests`), written by the Celery worker
(`generation`), in the shape `schema` checks."""

from sessions.services.summaries.generation import (
    SummaryRetryable,
    summary_generate,
    summary_lease_remaining,
    summary_mark_failed,
)
from sessions.services.summaries.requests import (
    BackfillItem,
    summaries_due,
    summary_backfill_batches,
    summary_backfill_prepare,
    summary_enqueue,
    summary_request,
    summary_row,
)
from sessions.services.summaries.schema import (
    LIST_FIELDS,
    SUMMARY_SCHEMA,
    SummaryInvalid,
    validate_summary,
)

__all__ = [
    "LIST_FIELDS",
    "SUMMARY_SCHEMA",
    "BackfillItem",
    "SummaryInvalid",
    "SummaryRetryable",
    "summaries_due",
    "summary_backfill_batches",
    "summary_backfill_prepare",
    "summary_enqueue",
    "summary_generate",
    "summary_lease_remaining",
    "summary_mark_failed",
    "summary_request",
    "summary_row",
    "validate_summary",
]
