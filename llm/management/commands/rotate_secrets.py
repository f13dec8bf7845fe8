"""`manage.py rotate_secrets [--dry-run]`: re-encrypt stored secrets (provider keys, HTTP tools'
secret headers) under the newest PANTHEON_ENCRYPTION_KEYS key. Run it after putting a new key
first, before removing the old one."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from llm.services import provider_secrets_rotate


class Command(BaseCommand):
    help = "Re-encrypt every stored provider API key under the newest encryption key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would change; write nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]
        result = provider_secrets_rotate(dry_run=dry_run)
        verb = "would rotate" if dry_run else "rotated"
        self.stdout.write(f"{verb} {result.changed} of {result.total} stored secrets")
        if result.unreadable:
            raise CommandError(
                "no configured key decrypts the secret of: "
                + ", ".join(result.unreadable)
                + ". Put the old key back in PANTHEON_ENCRYPTION_KEYS (after the new one)."
            )
