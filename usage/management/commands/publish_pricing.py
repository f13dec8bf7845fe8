"""`manage.py publish_pricing FILE [--dry-run]`

Publishes a pricing version from a JSON file:

    {"label": "v2", "effective_from": "2026-03-01T00:00:00Z",
     "credits_per_usd": "100", "markup": "1.00",
     "prices": {"openai/gpt-4o-mini": {"input": "0.15", "output": "0.60",
                                       "cached_input": "0.075"}}}

Prices are USD per 1M tokens (strings or numbers, at most 4 decimal places); `cached_input`,
`cache_write` (default: input) and `reasoning` (default: output) are optional. Publishing the
same file again changes nothing; changing a published version is refused, and so is an
`effective_from` less than `PRICING_PUBLISH_LEAD_SECONDS` (default 120) ahead: every server
process reloads its prices within `PRICING_CACHE_SECONDS` and must know a version before it
takes effect."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils.dateparse import parse_datetime

from pantheon.errors import ApplicationError
from usage.selectors import pricing_version_in_force
from usage.services import PRICE_FIELDS, PublishResult, pricing_version_publish


class _DryRunRollback(Exception):
    def __init__(self, result: PublishResult) -> None:
        super().__init__("dry run")
        self.result = result


_TOP_LEVEL = {"label", "effective_from", "credits_per_usd", "markup", "prices"}


def _decimal(value: Any, where: str) -> Decimal:
    # Numbers are parsed as Decimal (parse_float below), never through a float.
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise CommandError(f"{where}: expected a decimal number, got {value!r}.")
    try:
        result = Decimal(str(value).strip())
    except ArithmeticError as exc:
        raise CommandError(f"{where}: {value!r} is not a decimal number.") from exc
    if not result.is_finite():
        raise CommandError(f"{where}: {value!r} is not a finite number.")
    return result


def parse_pricing_document(text: str) -> dict[str, Any]:
    """The file's JSON as the arguments of `pricing_version_publish`; CommandError naming the
    field when it is malformed."""
    try:
        document = json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        raise CommandError(f"Not valid JSON: {exc}.") from exc
    if not isinstance(document, dict):
        raise CommandError("The file must hold a JSON object.")
    missing = _TOP_LEVEL - {"markup"} - set(document)
    unknown = set(document) - _TOP_LEVEL
    if missing or unknown:
        raise CommandError(
            "; ".join(
                [f"missing field(s): {', '.join(sorted(missing))}"] * bool(missing)
                + [f"unknown field(s): {', '.join(sorted(unknown))}"] * bool(unknown)
            )
        )
    if not isinstance(document["label"], str):
        raise CommandError("label: expected a string.")
    raw_from = document["effective_from"]
    effective_from = parse_datetime(raw_from) if isinstance(raw_from, str) else None
    if effective_from is None:
        raise CommandError(
            f"effective_from: {raw_from!r} is not an ISO 8601 date-time "
            "(e.g. 2026-03-01T00:00:00Z)."
        )
    if effective_from.tzinfo is None:
        raise CommandError("effective_from: give a time zone (e.g. a trailing Z for UTC).")
    prices = document["prices"]
    if not isinstance(prices, dict):
        raise CommandError("prices: expected an object of model id → prices.")
    parsed: dict[str, dict[str, Decimal | None]] = {}
    for model_id, fields in prices.items():
        if not isinstance(fields, dict):
            raise CommandError(f"prices.{model_id}: expected an object.")
        unknown_fields = set(fields) - set(PRICE_FIELDS)
        if unknown_fields:
            raise CommandError(
                f"prices.{model_id}: unknown field(s) {', '.join(sorted(unknown_fields))} "
                f"(allowed: {', '.join(PRICE_FIELDS)})."
            )
        parsed[model_id] = {
            field: None
            if fields.get(field) is None
            else _decimal(fields[field], f"prices.{model_id}.{field}")
            for field in PRICE_FIELDS
        }
    return {
        "label": document["label"],
        "effective_from": effective_from,
        "credits_per_usd": _decimal(document["credits_per_usd"], "credits_per_usd"),
        "markup": _decimal(document.get("markup", "1"), "markup"),
        "prices": parsed,
    }


class Command(BaseCommand):
    help = "Publish a pricing version from a JSON file (published versions are never changed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="Path to the pricing JSON file.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Validate and show, write nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {path}: {exc}.") from exc
        arguments = parse_pricing_document(text)
        self._warn_about_dropped_models(arguments["prices"])
        try:
            with transaction.atomic():
                result = pricing_version_publish(**arguments)
                if options["dry_run"]:
                    # Every publishing rule was checked by the real service; undo its writes.
                    raise _DryRunRollback(result)
        except _DryRunRollback as dry:
            self.stdout.write(
                f"Dry run: {dry.result.version.label} would be {dry.result.outcome} "
                f"({len(arguments['prices'])} model(s), in force from "
                f"{arguments['effective_from'].isoformat()}). Nothing written."
            )
            return
        except ApplicationError as exc:
            raise CommandError(f"Refused: {exc.message}") from exc
        version = result.version
        if result.outcome == "unchanged":
            self.stdout.write(f"{version.label} is already published as given; nothing to do.")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Published {version.label} ({result.outcome}): {len(arguments['prices'])} "
                f"model(s), in force from {version.effective_from.isoformat()}."
            )
        )

    def _warn_about_dropped_models(self, prices: dict[str, Any]) -> None:
        current = pricing_version_in_force()
        if current is None:
            return
        dropped = sorted(set(current.prices.values_list("model_id", flat=True)) - set(prices))
        if dropped:
            self.stderr.write(
                self.style.WARNING(
                    f"Warning: {len(dropped)} model(s) priced by {current.label} have no price "
                    f"in this file and cannot be used once it is in force: {', '.join(dropped)}"
                )
            )
