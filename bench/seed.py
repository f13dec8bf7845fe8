"""Seed the bench database through the project's own services: users with API keys and
credits, rooms, agents and sessions for every scenario, and long histories written in bulk.

`python -m bench.seed OUT.json [--scale S]` (DATABASE_URL must name the bench database).
Writes what the load generator needs (keys, session ids, agent ids) to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

MICRO = 1_000_000
AGENT_MODEL = "openai/gpt-4o-mini"
HISTORY_SIZES = (10, 1_000, 10_000)  # prior messages (a user message and a reply per turn)
HISTORY_SESSIONS_PER_SIZE = 5
RECENT_TURNS = 4  # CONTEXT_RECENT_TURNS_TO_KEEP: what a ready summary leaves uncovered
CONCURRENT_USERS = 50

SYSTEM_PROMPTS = {
    "ada": (
        "You are Ada, the analyst. Break the question down, state your assumptions and back "
        "every claim with reasoning or numbers. Be concise."
    ),
    "bo": (
        "You are Bo, the builder. Turn the discussion into a concrete plan: steps, owners and "
        "the smallest thing that could ship first."
    ),
    "cy": (
        "You are Cy, the critic. Find the weakest point in what was said before you, name the "
        "risk plainly and suggest how to test it."
    ),
}
USER_TEXT = (
    "We are planning the spring launch of the mobile app in three EU markets. Which market "
    "should go first, and what would you measure in the first two weeks? (message {n})"
)
REPLY_TEXT = (
    "Start with the market where the support team already speaks the language and the "
    "payment provider is live; measure activation within 24 hours, day-7 retention, crash-free "
    "sessions and support tickets per thousand installs, and compare them with the beta "
    "cohort before widening the rollout. (reply {n})"
)


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")
    import django

    django.setup()


def _user(email: str, credits: int) -> tuple[Any, str]:
    from accounts.services import api_key_create, user_get_or_create
    from usage.services import credits_grant

    user, _ = user_get_or_create(email=email, display_name=email.split("@")[0])
    issued = api_key_create(user=user, name="bench")
    credits_grant(
        user=user,
        amount_micro=credits * MICRO,
        note="bench seed",
        idempotency_key=f"bench-seed:{user.pk}:{time.time_ns()}",
    )
    return user, issued.key


def _room(owner: Any, name: str, mode: str, handles: list[str]) -> tuple[Any, list[Any]]:
    from rooms.services import agent_create, room_create

    room = room_create(owner=owner, name=name, default_mode=mode)
    agents = [
        agent_create(
            room=room,
            name=handle.capitalize(),
            handle=handle,
            model=AGENT_MODEL,
            system_prompt=SYSTEM_PROMPTS[handle],
            max_output_tokens=512,
        )
        for handle in handles
    ]
    return room, agents


def _sessions(room: Any, user: Any, count: int, title: str) -> list[str]:
    from sessions.services.sessions import session_create

    return [
        str(session_create(room=room, user=user, title=f"{title} {n}").pk) for n in range(count)
    ]


def _history(room: Any, user: Any, agent: Any, messages: int, title: str) -> str:
    """A session with `messages` prior messages (messages/2 completed turns) written in bulk,
    and a ready summary covering all but the last RECENT_TURNS turns — as a session that
    long has after its summaries ran."""
    from django.db import transaction
    from django.utils import timezone

    from sessions.models import (
        Message,
        MessageRole,
        SessionSummary,
        SummaryStatus,
        Turn,
        TurnStatus,
    )
    from sessions.services.sessions import session_create

    turns = messages // 2
    session = session_create(room=room, user=user, title=title)
    start = timezone.now() - timedelta(days=30)
    with transaction.atomic():
        rows = []
        for index in range(1, turns + 1):
            at = start + timedelta(seconds=index * 30)
            rows.append(
                Turn(
                    session=session,
                    turn_index=index,
                    mode=room.default_mode,
                    status=TurnStatus.COMPLETED,
                    user_input=USER_TEXT.format(n=index),
                    assistant_output=f"{agent.name}: {REPLY_TEXT.format(n=index)}",
                    created_at=at,
                    progress_at=at,
                    completed_at=at + timedelta(seconds=2),
                )
            )
        Turn.objects.bulk_create(rows, batch_size=2000)
        message_rows = []
        for turn in rows:
            message_rows.append(
                Message(
                    session=session,
                    turn=turn,
                    sequence=0,
                    role=MessageRole.USER,
                    mode=turn.mode,
                    content=turn.user_input,
                    created_at=turn.created_at,
                )
            )
            message_rows.append(
                Message(
                    session=session,
                    turn=turn,
                    sequence=1,
                    role=MessageRole.ASSISTANT,
                    agent=agent,
                    mode=turn.mode,
                    content=REPLY_TEXT.format(n=turn.turn_index),
                    created_at=turn.created_at + timedelta(seconds=1),
                )
            )
        Message.objects.bulk_create(message_rows, batch_size=4000)
        covered = turns - RECENT_TURNS
        if covered >= 1:
            SessionSummary.objects.create(
                session=session,
                last_turn_covered=covered,
                status=SummaryStatus.READY,
                summary_text=(
                    f"Over {covered} turns the team compared three EU launch markets and "
                    "agreed on the metrics for the first two weeks."
                ),
                key_facts=[{"text": "Support speaks German and French.", "turns": [1]}],
                decisions=[{"text": "Launch in Germany first.", "turns": [covered]}],
                open_questions=[{"text": "Which payment provider for France?", "turns": [2]}],
                action_items=[{"text": "Draft the rollout checklist.", "turns": [covered]}],
                model=AGENT_MODEL,
                completed_at=timezone.now(),
            )
        session.turn_counter = turns
        session.save(update_fields=["turn_counter", "updated_at"])
    return str(session.pk)


def seed(scale: float) -> dict[str, Any]:
    from rooms.models import TurnMode

    def n(base: int) -> int:
        # At least 32: scenario 1 runs 16 workers, each on sessions of its own.
        return max(32, int(base * scale))

    started = time.monotonic()
    owner, key = _user("bench-owner@bench.local", credits=10_000_000)
    single_room, single_agents = _room(owner, "Single agent", TurnMode.MANUAL, ["ada"])
    table_room, table_agents = _room(
        owner, "Round table", TurnMode.ROUND_TABLE, ["ada", "bo", "cy"]
    )
    history_room, history_agents = _room(owner, "History", TurnMode.MANUAL, ["ada"])
    data: dict[str, Any] = {
        "owner_key": key,
        "single": {
            "agent_handle": "ada",
            "sessions": _sessions(single_room, owner, n(150), "single"),
        },
        "round_table": {"sessions": _sessions(table_room, owner, n(40), "round table")},
        "streaming": {"sessions": _sessions(single_room, owner, n(40), "streaming")},
        "contention": {"session": _sessions(single_room, owner, 1, "contention")[0]},
        "history": {},
        "users": [],
    }
    for size in HISTORY_SIZES:
        data["history"][str(size)] = [
            _history(history_room, owner, history_agents[0], size, f"history {size} #{k}")
            for k in range(HISTORY_SESSIONS_PER_SIZE)
        ]
    for k in range(CONCURRENT_USERS):
        user, user_key = _user(f"bench-user{k}@bench.local", credits=1_000)
        room, _ = _room(user, "Mine", TurnMode.MANUAL, ["ada"])
        data["users"].append({"key": user_key, "session": _sessions(room, user, 1, "mine")[0]})
    data["seconds"] = round(time.monotonic() - started, 1)
    data["agents"] = {
        "single": [str(a.pk) for a in single_agents],
        "round_table": [str(a.pk) for a in table_agents],
    }
    data["credits_per_user"] = str(Decimal(10_000_000))
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    _django()
    data = seed(args.scale)
    with open(args.out, "w") as handle:
        json.dump(data, handle, indent=2)
    print(f"seeded in {data['seconds']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
