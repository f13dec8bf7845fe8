"""`manage.py rotate_api_key PREFIX [--grace 24h]`

Issues a successor for the key shown as PREFIX (e.g. `pan_1a2b3c4d5e6f`); the old key keeps
working until the grace period ends, then answers 401. The new key is printed alone on the last
line of stdout."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.management.durations import parse_duration
from accounts.selectors import api_key_get_by_prefix
from accounts.services import api_key_rotate
from pantheon.errors import ApplicationError


class Command(BaseCommand):
    help = "Rotate an API key: print its successor; the old key works until the grace period ends."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="The key's prefix, e.g. pan_1a2b3c4d5e6f.")
        parser.add_argument(
            "--grace",
            default="24h",
            help="How long the old key keeps working, e.g. 24h, 30m, 0s (default: 24h).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        prefix: str = options["prefix"].strip()
        try:
            grace = parse_duration(options["grace"])
        except ValueError as exc:
            raise CommandError(f"--grace: {exc}") from exc
        api_key = api_key_get_by_prefix(prefix=prefix)
        if api_key is None:
            raise CommandError(
                f"No API key with prefix {prefix!r} (a prefix looks like pan_1a2b3c4d5e6f)."
            )
        try:
            issued = api_key_rotate(api_key=api_key, grace=grace)
        except ApplicationError as exc:
            raise CommandError(f"Cannot rotate {prefix}: {exc.message}") from exc
        old_expires_at = issued.api_key.predecessor.expires_at  # set by the rotation
        self.stdout.write(
            f"Rotated {prefix} for {api_key.user.email}: the old key works until "
            f"{old_expires_at:%Y-%m-%d %H:%M:%S %Z}. The new key ({issued.api_key.prefix}) is "
            "shown once: store it now."
        )
        self.stdout.write(issued.key)
