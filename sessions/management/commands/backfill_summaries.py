"""Backfill structured summaries for sessions whose summary is missing, failed or unstructured.

Walks sessions by primary key in batches (never OFFSET), prints progress, changes nothing with
--dry-run, and is idempotent: a second run finds nothing left to do."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from sessions.services.summaries import (
    SummaryRetryable,
    summary_backfill_batches,
    summary_backfill_prepare,
    summary_enqueue,
    summary_generate,
)


class Command(BaseCommand):
    help = "Summarize sessions whose summary is missing, failed or unstructured."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch-size", type=int, default=200)
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--enqueue", action="store_true", help="hand them to the worker")

    def handle(self, *args: Any, **options: Any) -> None:
        scanned = found = done = 0
        for items, sessions in summary_backfill_batches(batch_size=options["batch_size"]):
            scanned += sessions
            for item in items:
                found += 1
                label = f"session {item.session_id} ({item.reason}, turns 1-{item.cover_to})"
                if options["dry_run"]:
                    self.stdout.write(f"  would summarize {label}")
                    continue
                summary_id = summary_backfill_prepare(item=item)
                if summary_id is None:
                    continue
                if options["enqueue"]:
                    summary_enqueue(summary_id)
                    done += 1
                    continue
                try:
                    status = summary_generate(summary_id=summary_id)
                except SummaryRetryable as exc:
                    status = f"left pending ({exc})"
                done += 1
                self.stdout.write(f"  {label}: {status}")
            self.stdout.write(f"scanned {scanned} sessions: {found} found, {done} done")
        verb = "would summarize" if options["dry_run"] else "summarized"
        self.stdout.write(f"backfill complete: {verb} {found if options['dry_run'] else done}")
