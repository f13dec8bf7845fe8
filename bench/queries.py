"""Database queries (and time) per turn, measured in-process on the bench database.

`python -m bench.queries SEED.json OUT.json` — for a short-history session and for the history
sessions of 10, 1,000 and 10,000 prior messages, run turns through Django's test client (the
whole request: authentication, throttles, the pipeline, the response) under
`CaptureQueriesContext`, and separately the preparation of the first call's prompt (the
selectors and the budget cascade that `turn_run` runs before admitting the turn). The upstream
is the bench's stub (OPENROUTER_BASE_URL in the environment).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

TURNS_PER_SESSION = 2
TURN_INPUT = "@ada which market first, and what do we measure in week one?"


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")
    import django

    django.setup()


def _prepare(session_id: str) -> tuple[int, float, dict[str, Any]]:
    """Queries and seconds to prepare the first call's prompt, as `turn_run` does it."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from sessions.models import Session
    from sessions.services import turns

    session = Session.objects.select_related("room").get(pk=session_id)
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        preflight = turns.turn_preflight(
            session=session,
            user_input=TURN_INPUT,
            mode=session.room.default_mode,
            agent_ids=None,
        )
        prepared = preflight.first
        elapsed = time.perf_counter() - started
    detail = {
        "history_messages_in_prompt": len(preflight.context.history),
        "summary_boundary": preflight.context.summaries.boundary,
        "estimated_tokens": prepared.cascade.estimated_final,
        "actions": list(prepared.cascade.actions),
    }
    return len(queries), elapsed, detail


def _turn(client: Any, session_id: str) -> tuple[int, float, int, list[str]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.post(
            f"/api/v1/sessions/{session_id}/turns",
            data=json.dumps({"input": TURN_INPUT}),
            content_type="application/json",
        )
        elapsed = time.perf_counter() - started
    return len(queries), elapsed, response.status_code, [q["sql"] for q in queries]


def measure(seed: dict[str, Any]) -> dict[str, Any]:
    from django.db import connection
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Bearer {seed['owner_key']}")
    # Warm up (imports, tokenizer, HTTP client) on a session of its own.
    _turn(client, seed["single"]["sessions"][-1])
    groups: dict[str, list[str]] = {"short": seed["single"]["sessions"][-4:-1]}
    for size, sessions in seed["history"].items():
        groups[size] = sessions
    results: dict[str, Any] = {}
    sample_sql: list[str] = []
    for name, sessions in groups.items():
        prepare_counts, prepare_ms, turn_counts, turn_ms, statuses = [], [], [], [], []
        details = []
        for session_id in sessions:
            for _ in range(TURNS_PER_SESSION):
                count, seconds, detail = _prepare(session_id)
                prepare_counts.append(count)
                prepare_ms.append(seconds * 1000)
                details.append(detail)
                count, seconds, status, sql = _turn(client, session_id)
                turn_counts.append(count)
                turn_ms.append(seconds * 1000)
                statuses.append(status)
                if name == "short" and not sample_sql:
                    sample_sql = sql
        results[name] = {
            "turns": len(turn_counts),
            "statuses": sorted(set(statuses)),
            "prepare_queries": sorted(set(prepare_counts)),
            "prepare_ms_median": round(statistics.median(prepare_ms), 2),
            "turn_queries": sorted(set(turn_counts)),
            "turn_ms_median": round(statistics.median(turn_ms), 2),
            "history_messages_in_prompt": sorted(
                {d["history_messages_in_prompt"] for d in details}
            ),
            "estimated_prompt_tokens_median": statistics.median(
                d["estimated_tokens"] for d in details
            ),
        }
    connection.close()
    return {"by_history": results, "sample_turn_sql": sample_sql}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("seed")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    _django()
    with open(args.seed) as handle:
        seed = json.load(handle)
    data = measure(seed)
    with open(args.out, "w") as handle:
        json.dump(data, handle, indent=2)


if __name__ == "__main__":
    main()
