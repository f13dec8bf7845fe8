"""`manage.py reprice_events --version LABEL [--from DATE] [--to DATE] [--dry-run]`

Computes what each call event costs under pricing version LABEL and writes the difference from
what it has cost so far as an adjustment ledger entry about the event. Event rows never change;
a re-run writes nothing more."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_date

from pantheon.credits import format_credits
from pantheon.errors import ApplicationError
from usage.models import PricingVersion
from usage.selectors import day_end, day_start
from usage.services import events_reprice


class Command(BaseCommand):
    help = "Reprice call events under a pricing version, as ledger adjustments."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # `--version` names the pricing version here, replacing Django's "show the version".
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--version", dest="label", required=True, help="Version label.")
        parser.add_argument("--from", dest="date_from", help="First day (UTC), YYYY-MM-DD.")
        parser.add_argument("--to", dest="date_to", help="Last day (UTC), YYYY-MM-DD.")
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--dry-run", action="store_true", help="Show, write nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        version = PricingVersion.objects.filter(label=options["label"]).first()
        if version is None:
            raise CommandError(f"No pricing version {options['label']!r}.")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be >= 1.")
        bounds = {}
        for name, key in (("from", "date_from"), ("to", "date_to")):
            if options[key]:
                day = parse_date(options[key])
                if day is None:
                    raise CommandError(f"--{name}: {options[key]!r} is not a YYYY-MM-DD date.")
                bounds[key] = day
        dry_run = options["dry_run"]
        try:
            result = events_reprice(
                version=version,
                dry_run=dry_run,
                batch_size=options["batch_size"],
                since=day_start(bounds["date_from"]) if "date_from" in bounds else None,
                until=day_end(bounds["date_to"]) if "date_to" in bounds else None,
                progress=lambda n: self.stdout.write(f"… {n} events examined"),
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        prefix = "Dry run: would write" if dry_run else "Wrote"
        self.stdout.write(
            f"{prefix} {result.adjusted} adjustment(s) over {result.examined} event(s) under "
            f"{version.label}: {format_credits(result.charged_micro)} credits charged, "
            f"{format_credits(result.refunded_micro)} refunded; "
            f"{result.unpriced} event(s) of models {version.label} does not price were skipped."
        )
