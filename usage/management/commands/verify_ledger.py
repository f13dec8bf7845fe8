"""`manage.py verify_ledger [--expiry-margin-minutes N]`

Checks that every balance equals the sum of its ledger entries, every billed call event has
exactly one burn of its credits, every account's reserved credits equal its active
reservations, and no reservation stayed active long past its expiry. Prints each problem and
exits non-zero; prints "ledger ok" otherwise."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from usage.selectors import ledger_problems

# The expiry sweep runs every few minutes; an hour late means it is not running.
DEFAULT_EXPIRY_MARGIN_MINUTES = 60


class Command(BaseCommand):
    help = "Verify the credit ledger; exit non-zero naming each problem."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--expiry-margin-minutes",
            type=int,
            default=DEFAULT_EXPIRY_MARGIN_MINUTES,
            help="How long past its expiry an active reservation is a problem (default: 60).",
        )
        parser.add_argument("--batch-size", type=int, default=1000)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["expiry_margin_minutes"] < 0 or options["batch_size"] < 1:
            raise CommandError("--expiry-margin-minutes must be >= 0, --batch-size >= 1.")
        problems = 0
        for problem in ledger_problems(
            expiry_margin=timedelta(minutes=options["expiry_margin_minutes"]),
            batch_size=options["batch_size"],
            progress=lambda message: self.stdout.write(f"… {message}"),
        ):
            problems += 1
            self.stderr.write(problem)
        if problems:
            raise CommandError(f"ledger has {problems} problem(s)")
        self.stdout.write("ledger ok")
