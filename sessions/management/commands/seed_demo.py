"""`manage.py seed_demo`: demo data for a first run, and how to use it.

Idempotent: every run reuses the demo user, the staff login, the "Demo room", its three agents and
its session, tops the demo user's available credits up to DEMO_CREDITS, and prints fresh
credentials. Secrets are stored nowhere in clear, so each run
  - issues a new "demo" API key and revokes the older ones (exactly one stays live), and
  - sets a new generated password on the admin login.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.models import ApiKey, User
from accounts.services import api_key_create, api_key_revoke, user_get_or_create
from pantheon.errors import ApplicationError
from rooms.models import Agent, Room, TurnMode
from rooms.services import agent_create, room_create
from sessions.models import Session
from sessions.services.sessions import session_create
from usage.selectors import credits_for_user
from usage.services import credits_grant

DEMO_EMAIL = "demo@pantheon.local"
DEMO_DISPLAY_NAME = "Demo User"
ADMIN_EMAIL = "admin@pantheon.local"
ADMIN_DISPLAY_NAME = "Pantheon Admin"
DEMO_KEY_NAME = "demo"
ROOM_NAME = "Demo room"
ROOM_DESCRIPTION = "Three agents answer in turn: an analyst, a builder and a critic."
SESSION_TITLE = "Demo session"
AGENT_MODEL = "openai/gpt-4o-mini"
# A new user starts at 0 credits and a turn needs credits: enough for many demo turns.
DEMO_CREDITS = Decimal(100)
MICRO = 1_000_000


@dataclass(frozen=True)
class _AgentSpec:
    name: str
    handle: str
    system_prompt: str


AGENTS = (
    _AgentSpec(
        name="Ada",
        handle="ada",
        system_prompt=(
            "You are Ada, the analyst. Break the question down, state your assumptions and "
            "back every claim with reasoning or numbers. Be concise."
        ),
    ),
    _AgentSpec(
        name="Bo",
        handle="bo",
        system_prompt=(
            "You are Bo, the builder. Turn the discussion into a concrete plan: steps, owners "
            "and the smallest thing that could ship first."
        ),
    ),
    _AgentSpec(
        name="Cy",
        handle="cy",
        system_prompt=(
            "You are Cy, the critic. Find the weakest point in what was said before you, name "
            "the risk plainly and suggest how to test it."
        ),
    ),
)


@dataclass(frozen=True)
class DemoSeed:
    """What a seed run produced; `admin_password` and `api_key` exist only in this object."""

    demo_user: User
    admin_user: User
    admin_password: str
    api_key: str
    room: Room
    agents: list[Agent]
    session: Session
    credits: dict[str, str]


@transaction.atomic
def _seed() -> DemoSeed:
    demo_user, _ = user_get_or_create(email=DEMO_EMAIL, display_name=DEMO_DISPLAY_NAME)

    admin_password = secrets.token_urlsafe(18)
    admin_user = User.objects.filter(email__iexact=ADMIN_EMAIL).first()
    if admin_user is None:
        admin_user = User.objects.create_superuser(
            email=ADMIN_EMAIL, password=admin_password, display_name=ADMIN_DISPLAY_NAME
        )
    else:
        admin_user.is_active = admin_user.is_staff = admin_user.is_superuser = True
        admin_user.set_password(admin_password)
        admin_user.save(update_fields=["is_active", "is_staff", "is_superuser", "password"])

    room = (
        Room.objects.alive().filter(owner=demo_user, name=ROOM_NAME).order_by("created_at").first()
    )
    if room is None:
        room = room_create(
            owner=demo_user,
            name=ROOM_NAME,
            description=ROOM_DESCRIPTION,
            default_mode=TurnMode.ROUND_TABLE,
        )
    existing = set(Agent.objects.alive().filter(room=room).values_list("handle", flat=True))
    for spec in AGENTS:
        if spec.handle not in existing:
            agent_create(
                room=room,
                name=spec.name,
                handle=spec.handle,
                model=AGENT_MODEL,
                system_prompt=spec.system_prompt,
            )

    session = Session.objects.alive().filter(room=room).order_by("created_at").first()
    if session is None:
        session = session_create(room=room, user=demo_user, title=SESSION_TITLE)

    available = Decimal(credits_for_user(demo_user)["available"])
    if available < DEMO_CREDITS:
        credits_grant(
            user=demo_user,
            amount_micro=int((DEMO_CREDITS - available) * MICRO),
            note="seed_demo top-up",
            # Each top-up is a new grant; a retry of the same run cannot happen.
            idempotency_key=f"seed_demo:{demo_user.pk}:{secrets.token_hex(8)}",
        )

    # A key's secret is shown only once, so a re-run cannot print the old one: replace it.
    for old_key in ApiKey.objects.filter(user=demo_user, name=DEMO_KEY_NAME, revoked_at=None):
        api_key_revoke(api_key=old_key)
    issued = api_key_create(user=demo_user, name=DEMO_KEY_NAME)

    return DemoSeed(
        demo_user=demo_user,
        admin_user=admin_user,
        admin_password=admin_password,
        api_key=issued.key,
        room=room,
        agents=list(Agent.objects.alive().filter(room=room)),
        session=session,
        credits=credits_for_user(demo_user),
    )


class Command(BaseCommand):
    help = (
        "Create (or reuse) the demo user, an admin login, a 'Demo room' with three agents and a "
        "session; issue a fresh demo API key (older demo keys are revoked) and a new admin "
        "password; print how to use them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="Where the server is reached, for the printed links (default: %(default)s).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        base = options["base_url"].rstrip("/")
        try:
            seed = _seed()
        except ApplicationError as exc:  # e.g. the demo model was deactivated in the admin
            raise CommandError(f"seed_demo: {exc.message} {exc.details}") from exc
        handles = ", ".join(f"@{agent.handle}" for agent in seed.agents)
        key = seed.api_key
        lines = [
            "",
            "Pantheon demo data is ready.",
            "",
            f"  URL:        {base}/",
            f"  API docs:   {base}/api/docs/",
            f"  Admin:      {base}/admin/",
            f"    e-mail:   {seed.admin_user.email}",
            f"    password: {seed.admin_password}",
            "              (a new password is set on every seed_demo run)",
            f"  Demo user:  {seed.demo_user.email} ({seed.credits['available']} credits)",
            f"  API key:    {key}",
            "              (the only live 'demo' key: every run revokes the previous one)",
            f"  Room:       {seed.room.name} {seed.room.pk} ({handles}, {seed.room.default_mode})",
            f"  Session:    {seed.session.pk}",
            "",
            "Try it:",
            f'  curl -H "Authorization: Bearer {key}" {base}/api/v1/auth/me',
            "  curl -X POST -H 'Content-Type: application/json' "
            f'-H "Authorization: Bearer {key}" \\',
            '       -d \'{"input": "Hello team, what should we build first?"}\' \\',
            f"       {base}/api/v1/sessions/{seed.session.pk}/turns",
            "",
        ]
        self.stdout.write("\n".join(lines))
