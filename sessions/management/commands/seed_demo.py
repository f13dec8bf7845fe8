"""`manage.py seed_demo`: demo data for a first run, and how to use it.

Idempotent: every run reuses the demo user, the staff login, the "Demo room", its three agents and
its session, tops the demo user's available credits up to DEMO_CREDITS, and prints fresh
credentials. Secrets are stored nowhere in clear, so each run
  - issues a new "demo" API key and revokes the older ones (exactly one stays live), and
  - sets a new generated password on the admin login.

The first run also leaves a history for the staff console to show (sessions are the markers: a
history session that exists is never replayed, so re-runs add nothing): sessions in every mode
(manual with @mentions, round table, orchestrator) with a structured summary, one request rejected
by the context budget (a very long input for GPT-3.5 Turbo's 16k window), and one agent whose
provider is down (connection refused), which makes its turn partial. Every turn goes through the
real pipeline (`turn_run`) on the offline model — never a paid provider, even when
OPENROUTER_API_KEY is set — so the history is the same on every machine and takes a few seconds.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.test.utils import override_settings

from accounts.models import ApiKey, User
from accounts.services import api_key_create, api_key_revoke, user_get_or_create
from llm.models import ModelConfig, Provider, ProviderKind
from llm.providers import clear_client_cache
from llm.services import provider_create
from pantheon.errors import ApplicationError
from rooms.models import Agent, Room, TurnMode
from rooms.services import agent_create, room_create
from sessions.models import Session
from sessions.services.sessions import session_create
from sessions.services.summaries import (
    BackfillItem,
    summary_backfill_prepare,
    summary_generate,
)
from sessions.services.turns import turn_run
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


# --- the history ----------------------------------------------------------------------------

FAILURES_ROOM_NAME = "Demo room: failures"
FAILURES_ROOM_DESCRIPTION = (
    "What failures look like in the staff console: a request over a small context window, and "
    "an agent whose provider is down."
)
SMALL_WINDOW_MODEL = "openai/gpt-3.5-turbo"  # a 16,385-token window in the catalog
# The agent whose provider is down: a model people serve themselves, bound for the demo turn to
# a provider on a closed local port (the discard port: connection refused, no traffic leaves).
UNREACHABLE_MODEL = "mistralai/mistral-7b-instruct"
UNREACHABLE_PROVIDER = "demo-local-vllm (down)"
UNREACHABLE_BASE_URL = "http://127.0.0.1:9/v1"
# Far over GPT-3.5 Turbo's input budget (about 14k tokens) and within TURN_INPUT_MAX_CHARS.
OVERFLOW_INPUT = "@gus please review this whole log before we decide:\n" + (
    "12:00:01 worker-7 retried job 4411 after a timeout on the billing queue.\n" * 1_500
)


@dataclass(frozen=True)
class _HistorySession:
    title: str
    room: str  # "demo" or "failures"
    mode: str
    inputs: tuple[str, ...]
    summarize: bool = False


HISTORY = (
    _HistorySession(
        title="Round table: what to build first",
        room="demo",
        mode=TurnMode.ROUND_TABLE,
        inputs=(
            "Hello team, what should we build first?",
            "Which risk should we test this week, and how?",
        ),
        summarize=True,
    ),
    _HistorySession(
        title="Manual: ask by @mention",
        room="demo",
        mode=TurnMode.MANUAL,
        inputs=(
            "@ada what does last month's usage tell us?",
            "@bo @cy turn that into a plan, then tear it apart.",
        ),
    ),
    _HistorySession(
        title="Orchestrator: the manager routes",
        room="demo",
        mode=TurnMode.ORCHESTRATOR,
        inputs=(
            "Is the launch plan too risky? @cy should answer.",
            "Who can estimate the infrastructure cost? Probably @ada.",
        ),
    ),
    _HistorySession(
        title="Rejected: input over the context window",
        room="failures",
        mode=TurnMode.MANUAL,
        inputs=(OVERFLOW_INPUT,),
    ),
    _HistorySession(
        title="Partial: one agent's provider is down",
        room="failures",
        mode=TurnMode.ROUND_TABLE,
        inputs=("Status check: is everyone there?",),
    ),
)

FAILURE_AGENTS = (
    ("Gus", "gus", SMALL_WINDOW_MODEL, "You are Gus. You read logs and summarize them."),
    ("Vic", "vic", UNREACHABLE_MODEL, "You are Vic, served by the team's own vLLM server."),
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

    _top_up(demo_user)

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


def _failures_room(demo_user: User) -> Room:
    room = (
        Room.objects.alive()
        .filter(owner=demo_user, name=FAILURES_ROOM_NAME)
        .order_by("created_at")
        .first()
    )
    if room is None:
        room = room_create(
            owner=demo_user,
            name=FAILURES_ROOM_NAME,
            description=FAILURES_ROOM_DESCRIPTION,
            default_mode=TurnMode.MANUAL,
        )
    existing = set(Agent.objects.alive().filter(room=room).values_list("handle", flat=True))
    for name, handle, model, prompt in FAILURE_AGENTS:
        if handle not in existing:
            agent_create(room=room, name=name, handle=handle, model=model, system_prompt=prompt)
    return room


def _unreachable_provider() -> Provider:
    provider = Provider.objects.filter(name=UNREACHABLE_PROVIDER).first()
    if provider is None:
        provider = provider_create(
            name=UNREACHABLE_PROVIDER,
            kind=ProviderKind.OPENAI_COMPATIBLE,
            base_url=UNREACHABLE_BASE_URL,
            is_active=False,
        )
    return provider


def _play(*, user: User, session: Session, spec: _HistorySession) -> None:
    """Run the spec's inputs as turns through the pipeline. A rejection (the budget overflow)
    is part of the story: its audit row is what staff see."""
    for text in spec.inputs:
        try:
            turn_run(user=user, session=session, user_input=text, mode=spec.mode)
        except ApplicationError as exc:
            if exc.code != "context_budget_exceeded":
                raise


def _play_with_provider_down(*, user: User, session: Session, spec: _HistorySession) -> None:
    """Bind the unreachable model to the down provider just for this session's turns, then put
    the catalog back as it was: no other user's calls ever go to the closed port."""
    provider = _unreachable_provider()
    model = ModelConfig.objects.get(pk=UNREACHABLE_MODEL)
    previous = model.provider_id
    Provider.objects.filter(pk=provider.pk).update(is_active=True)
    ModelConfig.objects.filter(pk=model.pk).update(provider=provider)
    try:
        _play(user=user, session=session, spec=spec)
    finally:
        ModelConfig.objects.filter(pk=model.pk).update(provider=previous)
        Provider.objects.filter(pk=provider.pk).update(is_active=False)
        clear_client_cache()


def _seed_history(seed: DemoSeed) -> int:
    """Play every history session that does not exist yet. Returns how many were played."""
    rooms = {"demo": seed.room, "failures": _failures_room(seed.demo_user)}
    played = 0
    # The offline model (no paid call, the same answers everywhere); a failed call fails fast.
    with override_settings(
        OPENROUTER_API_KEY="", LLM_MAX_RETRIES=0, LLM_CONNECT_TIMEOUT_SECONDS=1.0
    ):
        for spec in HISTORY:
            room = rooms[spec.room]
            if Session.objects.filter(room=room, title=spec.title).exists():
                continue
            session = session_create(room=room, user=seed.demo_user, title=spec.title)
            if spec.room == "failures" and spec.mode == TurnMode.ROUND_TABLE:
                _play_with_provider_down(user=seed.demo_user, session=session, spec=spec)
            else:
                _play(user=seed.demo_user, session=session, spec=spec)
            if spec.summarize:
                session.refresh_from_db()
                summary_id = summary_backfill_prepare(
                    item=BackfillItem(session.id, "missing", session.turn_counter)
                )
                if summary_id is not None:
                    summary_generate(summary_id=summary_id)
            played += 1
    return played


def _top_up(user: User) -> None:
    available = Decimal(credits_for_user(user)["available"])
    if available < DEMO_CREDITS:
        credits_grant(
            user=user,
            amount_micro=int((DEMO_CREDITS - available) * MICRO),
            note="seed_demo top-up",
            # Each top-up is a new grant; a retry of the same run cannot happen.
            idempotency_key=f"seed_demo:{user.pk}:{secrets.token_hex(8)}",
        )


class Command(BaseCommand):
    help = (
        "Create (or reuse) the demo user, an admin login, a 'Demo room' with three agents and a "
        "session; on the first run, a history of turns for the staff console (every mode, a "
        "rejected request, a failed agent); issue a fresh demo API key (older demo keys are "
        "revoked) and a new admin password; print how to use them."
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
            played = _seed_history(seed)
        except ApplicationError as exc:  # e.g. the demo model was deactivated in the admin
            raise CommandError(f"seed_demo: {exc.message} {exc.details}") from exc
        # The history burned credits: top up again, so the printed figure is the full amount.
        _top_up(seed.demo_user)
        seed = replace(seed, credits=credits_for_user(seed.demo_user))
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
            f"  History:    {played} demo session(s) played now "
            f"({len(HISTORY)} in all; see them in the admin)",
            f"  Dashboard:  {base}/admin/usage/llmcallevent/dashboard/",
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
