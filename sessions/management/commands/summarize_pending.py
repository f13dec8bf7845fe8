"""Run pending session summaries now (the sweep's work, by hand — e.g. while the broker is down)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from sessions.services.summaries import (
    SummaryRetryable,
    summaries_due,
    summary_enqueue,
    summary_generate,
)


class Command(BaseCommand):
    help = "Generate pending session summaries inline (or --enqueue them for the worker)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--enqueue", action="store_true", help="hand them to the worker")
        parser.add_argument("--dry-run", action="store_true", help="list them, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        due = summaries_due(older_than_seconds=0)
        self.stdout.write(f"{len(due)} pending summaries")
        done = {"ready": 0, "failed": 0, "skipped": 0, "retry": 0, "enqueued": 0}
        for n, summary_id in enumerate(due, start=1):
            if options["dry_run"]:
                self.stdout.write(f"  would summarize {summary_id}")
                continue
            if options["enqueue"]:
                done["enqueued"] += int(summary_enqueue(summary_id))
                continue
            try:
                done[summary_generate(summary_id=summary_id)] += 1
            except SummaryRetryable as exc:
                done["retry"] += 1
                self.stderr.write(f"  {summary_id}: provider error {exc}; left pending")
            self.stdout.write(f"  [{n}/{len(due)}] {summary_id}")
        self.stdout.write(", ".join(f"{k} {v}" for k, v in done.items()))
