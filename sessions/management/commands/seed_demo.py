"""`manage.py seed_demo`: demo data for a first run, and how to use it.

Idempotent: every run reuses the demo user, the staff login, the "Demo room", its three agents and
its session, tops the demo user's available credits up to DEMO_CREDITS, and prints the
credentials. The database keeps only hashes, so without `--credentials-file` each run
  - issues a new "demo" API key and revokes the older ones (exactly one stays live), and
  - sets a new generated password on the admin login.
With `--credentials-file PATH` (scripts/run.sh passes `.pantheon-demo.json`, git-ignored, mode
0600) both are kept there in clear and reused while they still work, so a restart keeps them:
a key that is revoked, expired or missing from the database (e.g. a new database) is replaced by
a new one, and the file rewritten. Deleting the file gets new ones.

The first run also leaves a history for the staff console to show (sessions are the markers: a
history session that exists is never replayed, so re-runs add nothing): sessions in every mode
(manual with @mentions, round table, orchestrator) with a structured summary, one request rejected
by the context budget (a very long input for GPT-3.5 Turbo's 16k window), and one agent whose
provider is down (connection refused), which makes its turn partial. Every turn goes through the
real pipeline (`turn_run`) on the offline model — never a paid provider, even when
OPENROUTER_API_KEY is set — so the history is the same on every machine and takes a few seconds.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.test.utils import override_settings

from accounts.models import ApiKey, User
from accounts.services import api_key_create, api_key_revoke, hash_secret, user_get_or_create
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
from usage.models import SpendingLimit
from usage.selectors import credits_for_user
from usage.services import credits_grant, spending_limit_create

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
    tools: tuple[str, ...] = ()


AGENTS = (
    _AgentSpec(
        name="Ada",
        handle="ada",
        system_prompt=(
            "You are Ada, the analyst. Break the question down, state your assumptions and "
            "back every claim with reasoning or numbers. Be concise."
        ),
        # Her numbers come from a tool: the offline model calls the calculator for an
        # arithmetic question and the clock when asked the time.
        tools=("calculator", "current_time"),
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
            "@ada what is 1234 * 5678?",
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
class Credentials:
    """The demo API key and admin password in clear: kept only in the credentials file."""

    api_key: str = ""
    admin_password: str = ""


@dataclass(frozen=True)
class DemoSeed:
    """What a seed run produced; `credentials` exist in clear only here (and in the file)."""

    demo_user: User
    admin_user: User
    credentials: Credentials
    key_reused: bool
    room: Room
    agents: list[Agent]
    session: Session
    credits: dict[str, str]


@transaction.atomic
def _seed(stored: Credentials) -> DemoSeed:
    demo_user, _ = user_get_or_create(email=DEMO_EMAIL, display_name=DEMO_DISPLAY_NAME)
    admin_password = stored.admin_password or secrets.token_urlsafe(18)
    admin_user = _admin(admin_password)

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
                tools=list(spec.tools),
            )

    session = Session.objects.alive().filter(room=room).order_by("created_at").first()
    if session is None:
        session = session_create(room=room, user=demo_user, title=SESSION_TITLE)

    _top_up(demo_user)
    _spending_limits(demo_user, room)
    api_key = _demo_key(demo_user, stored.api_key)

    return DemoSeed(
        demo_user=demo_user,
        admin_user=admin_user,
        credentials=Credentials(api_key=api_key, admin_password=admin_password),
        key_reused=api_key == stored.api_key,
        room=room,
        agents=list(Agent.objects.alive().filter(room=room)),
        session=session,
        credits=credits_for_user(demo_user),
    )


def _spending_limits(demo_user: User, room: Room) -> None:
    """What limits look like: the user's own monthly cap, and a daily cap staff set on the room
    (both far above what the demo spends). Kept as they are when they exist."""
    wanted = [
        {"scope": "user", "window": "month", "limit_micro": 50 * MICRO},
        {
            "scope": "room",
            "room_id": room.id,
            "window": "day",
            "limit_micro": 20 * MICRO,
            "set_by_staff": True,
        },
    ]
    existing = set(
        SpendingLimit.objects.filter(user=demo_user).values_list("scope", "room_id", "window")
    )
    for limit in wanted:
        if (limit["scope"], limit.get("room_id"), limit["window"]) not in existing:
            spending_limit_create(user=demo_user, **limit)


def _admin(password: str) -> User:
    """The staff login, with `password` (checked first: hashing a new one costs, and an
    unchanged row is not written)."""
    admin_user = User.objects.filter(email__iexact=ADMIN_EMAIL).first()
    if admin_user is None:
        return User.objects.create_superuser(
            email=ADMIN_EMAIL, password=password, display_name=ADMIN_DISPLAY_NAME
        )
    if not (
        admin_user.is_active
        and admin_user.is_staff
        and admin_user.is_superuser
        and admin_user.check_password(password)
    ):
        admin_user.is_active = admin_user.is_staff = admin_user.is_superuser = True
        admin_user.set_password(password)
        admin_user.save(update_fields=["is_active", "is_staff", "is_superuser", "password"])
    return admin_user


def _demo_key(demo_user: User, stored_key: str) -> str:
    """The one live "demo" key: `stored_key` while it still authenticates the demo user, else a
    new one (a key's secret is shown only once, so an unknown old one cannot be printed). Every
    other live demo key is revoked."""
    keep = _usable_demo_key(demo_user, stored_key)
    for old_key in ApiKey.objects.filter(user=demo_user, name=DEMO_KEY_NAME, revoked_at=None):
        if old_key != keep:
            api_key_revoke(api_key=old_key)
    if keep is not None:
        return stored_key
    return api_key_create(user=demo_user, name=DEMO_KEY_NAME).key


def _usable_demo_key(demo_user: User, key: str) -> ApiKey | None:
    """The row of `key` (`pan_<public id>_<secret>`) when it is the demo user's live demo key."""
    parts = key.split("_", 2)
    if len(parts) != 3 or not all(parts):
        return None
    _, public_id, secret = parts
    row = ApiKey.objects.filter(user=demo_user, name=DEMO_KEY_NAME, public_id=public_id).first()
    if row is None or not hmac.compare_digest(hash_secret(secret), row.secret_hash):
        return None
    return row if row.is_usable() else None


def _read_credentials(path: Path) -> Credentials:
    """What the file holds; nothing when it is missing or unreadable (new ones are issued)."""
    try:
        data = json.loads(path.read_text())
        return Credentials(
            api_key=str(data.get("api_key") or ""),
            admin_password=str(data.get("admin_password") or ""),
        )
    except (OSError, ValueError, AttributeError):
        return Credentials()


def _write_credentials(path: Path, credentials: Credentials) -> None:
    """Replace the file atomically, readable by its owner only (mode 0600)."""
    content = json.dumps(
        {
            "about": "Demo credentials of scripts/run.sh (seed_demo). Delete to get new ones.",
            "admin_email": ADMIN_EMAIL,
            "admin_password": credentials.admin_password,
            "api_key": credentials.api_key,
        },
        indent=2,
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


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
        "rejected request, a failed agent); issue a demo API key and an admin password (new ones "
        "on every run, unless --credentials-file keeps them); print how to use them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="Where the server is reached, for the printed links (default: %(default)s).",
        )
        parser.add_argument(
            "--credentials-file",
            metavar="PATH",
            help=(
                "Keep the demo API key and admin password in this file (mode 0600) and reuse them "
                "while they still work (scripts/run.sh: .pantheon-demo.json). Without it, every "
                "run issues a new key (revoking the previous one) and a new password."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        base = options["base_url"].rstrip("/")
        path = Path(options["credentials_file"]) if options["credentials_file"] else None
        stored = _read_credentials(path) if path is not None else Credentials()
        try:
            seed = _seed(stored)
            if path is not None and seed.credentials != stored:  # as soon as they are committed
                _write_credentials(path, seed.credentials)
            played = _seed_history(seed)
        except ApplicationError as exc:  # e.g. the demo model was deactivated in the admin
            raise CommandError(f"seed_demo: {exc.message} {exc.details}") from exc
        # The history burned credits: top up again, so the printed figure is the full amount.
        _top_up(seed.demo_user)
        seed = replace(seed, credits=credits_for_user(seed.demo_user))
        self.stdout.write("\n".join(_banner(seed, base=base, played=played, path=path)))


def _banner(seed: DemoSeed, *, base: str, played: int, path: Path | None) -> list[str]:
    api = f"{base}/api/v1"
    every = settings.CONTEXT_MANDATORY_SUMMARY_TURN
    if path is None:
        password_notes = ["(a new password is set on every seed_demo run)"]
        key_notes = ["(the only live 'demo' key: every run revokes the previous one)"]
    else:
        password_notes = []
        key_notes = [
            "(this key and the admin password stay the same across restarts: they are kept",
            f" in {path}; delete that file to get new ones)",
        ]
        if not seed.key_reused:
            key_notes.append(f"(a new key: {path} held none that still works here)")
    agents = [f"@{agent.handle:<4} {agent.pk}" for agent in seed.agents]
    return [
        "",
        "Pantheon demo data is ready.",
        "",
        f"  URL:        {base}/",
        f"  API docs:   {base}/api/docs/",
        f"  Admin:      {base}/admin/",
        f"    e-mail:   {seed.admin_user.email}",
        f"    password: {seed.credentials.admin_password}",
        *(f"              {note}" for note in password_notes),
        f"  Demo user:  {seed.demo_user.email} ({seed.credits['available']} credits)",
        f"  API key:    {seed.credentials.api_key}",
        *(f"              {note}" for note in key_notes),
        f"  Room:       {seed.room.pk} ({seed.room.name}, {seed.room.default_mode})",
        *(f"  {'Agents:' if i == 0 else '':<12}{line}" for i, line in enumerate(agents)),
        f"  Session:    {seed.session.pk} (turns so far: {seed.session.turn_counter})",
        f"  History:    {played} demo session(s) played now "
        f"({len(HISTORY)} in all; see them in the admin)",
        f"  Dashboard:  {base}/admin/usage/llmcallevent/dashboard/",
        "",
        "Try it (paste into a shell):",
        f"  API={api}",
        f"  KEY={seed.credentials.api_key}",
        f"  SESSION={seed.session.pk}",
        '  curl -H "Authorization: Bearer $KEY" $API/auth/me',
        "  curl -X POST -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' \\",
        '       -d \'{"input": "Hello team, what should we build first?"}\' \\',
        "       $API/sessions/$SESSION/turns",
        f"  # Every {every}th turn of a session asks for a summary of its older turns; then:",
        '  curl -H "Authorization: Bearer $KEY" $API/sessions/$SESSION/summary',
        "",
    ]
