"""Where a turn's CPU goes: `python -m bench.profile_turn [--turns N]` after a bench run.

Runs single-agent turns in-process (Django test client, the bench database left by the last
`bench/run.sh`, a stub upstream started in a thread) under cProfile and prints the functions
with the most cumulative and own time. cProfile slows Python code down, so read shares, not
absolute times. Needs DATABASE_URL (and REDIS_URL) pointing at the bench's services, e.g.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/pantheon_bench \\
    REDIS_URL=redis://127.0.0.1:6379/8 .venv/bin/python -m bench.profile_turn
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import time

TURN_INPUT = "@ada which market should go first, and what do we measure in week one?"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--dump", help="also write the raw cProfile stats to this file")
    args = parser.parse_args(argv)

    from testing.stub_llm import LlmStub

    stub = LlmStub().start()
    os.environ["OPENROUTER_BASE_URL"] = stub.url
    os.environ["OPENROUTER_API_KEY"] = "x"
    os.environ.setdefault("PANTHEON_THROTTLE_USER", "1000000/min")
    os.environ.setdefault("PANTHEON_THROTTLE_TURNS", "1000000/min")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")
    import django

    django.setup()
    from django.test import Client

    from accounts.services import api_key_create
    from rooms.models import Room
    from sessions.services.sessions import session_create

    room = Room.objects.get(name="Single agent", owner__email="bench-owner@bench.local")
    key = api_key_create(user=room.owner, name="profile").key
    sessions = [
        str(session_create(room=room, user=room.owner, title=f"profile {n}").pk)
        for n in range(max(1, args.turns // 5))
    ]
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    def turn(n: int) -> None:
        response = client.post(
            f"/api/v1/sessions/{sessions[n % len(sessions)]}/turns",
            data=json.dumps({"input": TURN_INPUT}),
            content_type="application/json",
        )
        assert response.status_code == 201, response.content

    for n in range(5):  # warm up: imports, tokenizer, HTTP client
        turn(n)
    started = time.process_time()
    for n in range(args.turns):
        turn(n)
    cpu_ms = (time.process_time() - started) * 1000 / args.turns
    profiler = cProfile.Profile()
    profiler.enable()
    for n in range(args.turns):
        turn(n)
    profiler.disable()
    stub.stop()
    print(
        f"CPU per turn without the profiler (this process, stub thread included): "
        f"{cpu_ms:.1f} ms over {args.turns} turns\n"
    )
    if args.dump:
        profiler.dump_stats(args.dump)
    print("--- own time by package ---")
    print(by_package(pstats.Stats(profiler)))
    for sort in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(sort).print_stats(args.top)
        print(f"--- by {sort} ---")
        print(out.getvalue())


def by_package(stats: pstats.Stats, top: int = 25) -> str:
    """Own time summed by where the code lives: a third-party package, a project app, or the
    standard library — the shares a profile's long function list hides."""
    totals: dict[str, float] = {}
    for (filename, _line, _name), row in stats.stats.items():  # type: ignore[attr-defined]
        own = row[2]
        if "site-packages/" in filename:
            key = filename.split("site-packages/")[1].split("/")[0]
        elif filename.startswith(("~", "<")):
            key = "(built-in)"
        elif "/lib/python3" in filename:
            key = "(stdlib) " + filename.rsplit("/", 1)[-1]
        else:
            key = "project: " + os.path.relpath(filename).split("/")[0]
        totals[key] = totals.get(key, 0.0) + own
    whole = sum(totals.values()) or 1.0
    rows = sorted(totals.items(), key=lambda item: -item[1])[:top]
    return "\n".join(f"{own / whole * 100:5.1f} %  {key}" for key, own in rows)


if __name__ == "__main__":
    main()
