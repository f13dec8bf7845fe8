"""`manage.py grant_credits --email E --amount A [--note N] [--idempotency-key K] [--dry-run]`

Grants credits to a user through the ledger. The amount is in credits (a decimal with up to 6
places). A repeated idempotency key grants once; without one a fresh key is generated and
printed, so a retry of the same grant can pass it."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import User
from pantheon.credits import format_credits, parse_credits
from pantheon.errors import ApplicationError
from usage.selectors import credits_for_user
from usage.services import credits_grant


class Command(BaseCommand):
    help = "Grant credits to a user (a ledger grant entry); idempotent on --idempotency-key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", required=True, help="The user's e-mail address.")
        parser.add_argument("--amount", required=True, help="Credits, e.g. 25 or 2.5.")
        parser.add_argument("--note", default="", help="Shown in the ledger.")
        parser.add_argument(
            "--idempotency-key",
            default="",
            help="Repeating a key grants once (default: a new random key, printed).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Show, write nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            amount_micro = parse_credits(options["amount"])
        except ValueError as exc:
            raise CommandError(f"--amount: {exc}.") from exc
        email = options["email"].strip()
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            raise CommandError(f"No user with e-mail {email!r}.")
        key = options["idempotency_key"].strip() or f"grant:{uuid.uuid4()}"
        if len(key) > 255:
            raise CommandError("--idempotency-key: at most 255 characters.")
        if options["dry_run"]:
            self.stdout.write(
                f"Dry run: would grant {format_credits(amount_micro)} credits to {user.email} "
                f"(idempotency key {key}). Nothing written."
            )
            return
        try:
            entry = credits_grant(
                user=user,
                amount_micro=amount_micro,
                note=options["note"],
                idempotency_key=key,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        balance = credits_for_user(user)["balance"]
        self.stdout.write(
            self.style.SUCCESS(
                f"Granted {format_credits(entry.amount_micro)} credits to {user.email} "
                f"(entry {entry.id}, idempotency key {key}); balance now {balance}."
            )
        )
