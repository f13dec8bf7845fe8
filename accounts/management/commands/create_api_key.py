"""`manage.py create_api_key --email E [--name N] [--expires-in 30d]`

Issues an API key for the user with that e-mail (created when missing). The key is printed
alone on the last line of stdout, so scripts can take it with `| tail -n 1`."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_email
from django.utils import timezone

from accounts.management.durations import parse_duration
from accounts.services import api_key_create, user_get_or_create
from pantheon.errors import ApplicationError


class Command(BaseCommand):
    help = "Issue an API key for a user (created if needed); prints the key alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", required=True, help="The key owner's e-mail address.")
        parser.add_argument("--name", default="cli", help="A label for the key (default: cli).")
        parser.add_argument(
            "--expires-in",
            dest="expires_in",
            default=None,
            help="Lifetime such as 30d, 12h or 45m (default: never expires).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        email: str = options["email"].strip()
        name: str = options["name"].strip()
        try:
            validate_email(email)
        except ValidationError as exc:
            raise CommandError(f"Invalid e-mail address: {email!r}.") from exc
        if not name or len(name) > 100:
            raise CommandError("--name must be 1 to 100 characters.")
        expires_at = None
        if options["expires_in"] is not None:
            try:
                lifetime = parse_duration(options["expires_in"])
            except ValueError as exc:
                raise CommandError(f"--expires-in: {exc}") from exc
            if not lifetime:
                raise CommandError("--expires-in must be longer than zero.")
            expires_at = timezone.now() + lifetime

        user, created = user_get_or_create(email=email)
        if created:
            self.stdout.write(f"Created user {user.email}.")
        elif not user.is_active:
            self.stderr.write(f"Warning: {user.email} is inactive; the key will not work.")
        try:
            issued = api_key_create(user=user, name=name, expires_at=expires_at)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        expiry = f"expires {expires_at.isoformat()}" if expires_at else "never expires"
        self.stdout.write(
            f"Issued key {issued.api_key.prefix} ({name}) for {user.email}; {expiry}. "
            "It is shown once: store it now."
        )
        self.stdout.write(issued.key)
