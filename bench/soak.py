"""Soak: a few thousand turns across many users on the production server command, then check
that nothing was lost, doubled or mis-billed, and that the web workers' memory stayed flat.

`bash bench/soak.sh [--turns 3000] [--users 100] [--concurrency 8]` — everything on 127.0.0.1:
a fresh `pantheon_soak` PostgreSQL database (dropped, created, migrated), Redis db 7, the stub
upstream, Pantheon under gunicorn with two UvicornWorkers, a Celery worker (the summaries the
turns request are written and billed, as in production), users seeded through the services.
Turns are spread over every user's sessions (single-agent JSON, single-agent streaming and
round-table turns); each load thread owns its sessions, so no turn meets a running one and
every answer must be a success. The resident memory of each web worker is sampled every second.

Pass criteria (the exit status is non-zero when one fails):
- every turn answered 201 (200 with `turn.completed` for a stream): no 5xx, no transport error;
- the database holds exactly those turns, all completed, turn indexes 1..n per session with no
  duplicate and no gap, `turn_counter` = n;
- `manage.py verify_ledger` is clean, no reservation is left active, and each user's balance is
  their grants minus the credits their call events burned (turns and summaries);
- both web workers served (each spent at least 10% of the server's CPU time over the load);
- memory is flat: each web worker's RSS at the end grew less than `--growth-limit-mib` (16 MiB)
  over its RSS when 25% of the turns were done. The first quarter is warm-up (imports, caches,
  connection pools, allocator arenas); a leak of ~15 KiB per turn or more fails the check.

Writes bench/results/soak-<UTC time>.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from bench import harness
from bench.run import (
    PG_URL,
    PYTHON,
    RESULTS,
    ROOT,
    VENV_BIN,
    log,
    machine,
    manage,
    recreate_database,
    server_env,
    start_gunicorn,
    start_stub,
)

DB_NAME = "pantheon_soak"
REDIS_URL = "redis://127.0.0.1:6379/7"
WEB_WORKERS = 2
STREAM_EVERY = 5  # every 5th turn on a single-agent session streams (SSE)
TABLE_EVERY_USERS = 4  # every 4th user also has a round-table session (3 agents)
GRANT_CREDITS = 1_000
REQUEST_TIMEOUT_S = 60.0
SUMMARY_DRAIN_TIMEOUT_S = 120.0
RSS_INTERVAL_S = 1.0
MIN_WORKER_SHARE = 0.1  # each web worker spends at least 10% of the server's CPU time


# --- seeding (runs in a subprocess, under the server's environment) ------------------------------


def seed(out: Path, users: int, sessions_per_user: int) -> None:
    """Users with a key and credits (every other user gets a second grant), a single-agent
    room with `sessions_per_user` sessions each, and a round-table room for every
    TABLE_EVERY_USERS-th user — all through the project's services."""
    from bench.seed import MICRO, _django

    _django()
    from bench.seed import _room, _sessions, _user
    from rooms.models import TurnMode
    from usage.services import credits_grant

    data: list[dict[str, Any]] = []
    for n in range(users):
        user, key = _user(f"soak-user{n}@bench.local", credits=GRANT_CREDITS)
        if n % 2:
            credits_grant(
                user=user,
                amount_micro=GRANT_CREDITS * MICRO // 2,
                note="soak top-up",
                idempotency_key=f"soak-top-up:{user.pk}",
            )
        room, _ = _room(user, "Mine", TurnMode.MANUAL, ["ada"])
        entry: dict[str, Any] = {
            "email": user.email,
            "key": key,
            "single": _sessions(room, user, sessions_per_user, "soak"),
            "table": [],
        }
        if n % TABLE_EVERY_USERS == 0:
            table, _ = _room(user, "Table", TurnMode.ROUND_TABLE, ["ada", "bo", "cy"])
            entry["table"] = _sessions(table, user, 1, "soak table")
        data.append(entry)
    out.write_text(json.dumps(data))


# --- the load ------------------------------------------------------------------------------------


class Plan:
    """Which session each load thread uses next. Thread w owns sessions[w::concurrency] and
    walks them round-robin, so a session never has two turns at once."""

    def __init__(self, users: list[dict[str, Any]], concurrency: int) -> None:
        sessions = [
            (u["key"], session, kind)
            for u in users
            for kind in ("single", "table")
            for session in u[kind]
        ]
        if len(sessions) < concurrency:
            raise ValueError("fewer sessions than load threads")
        self.slices = [sessions[w::concurrency] for w in range(concurrency)]
        self.used = [0] * concurrency
        self.turns_on: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.done = 0
        self._lock = threading.Lock()

    def next(self, worker: int) -> tuple[str, str, str]:
        own = self.slices[worker]
        key, session, kind = own[self.used[worker] % len(own)]
        self.used[worker] += 1
        self.turns_on[session] += 1
        if kind == "single" and self.turns_on[session] % STREAM_EVERY == 0:
            kind = "stream"
        return key, session, kind

    def finished(self, kind: str) -> None:
        with self._lock:
            self.done += 1
            self.kinds[kind] += 1


def turn_request(plan: Plan):  # type: ignore[no-untyped-def]
    def request(client: httpx.Client, worker: int, index: int) -> harness.Sample:
        key, session, kind = plan.next(worker)
        path = f"/api/v1/sessions/{session}/turns"
        # A new connection per turn, as from many clients: kept-alive connections would all
        # stay on the worker that accepted them, and one worker would serve the whole soak.
        headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
        try:
            if kind == "stream":
                return harness.timed_stream(
                    client,
                    path,
                    json_body={"input": f"@ada soak turn {index}, streamed"},
                    headers={**headers, "Accept": "text/event-stream"},
                    is_first_event=lambda event, data: event == "turn.completed",
                )
            text = f"@ada soak turn {index}" if kind == "single" else f"Round {index}: go on."
            return harness.timed_post(
                client, path, json_body={"input": text}, headers=headers, expect=201
            )
        finally:
            plan.finished(kind)

    return request


class RssSampler:
    """Every RSS_INTERVAL_S: (turns done, VmRSS MiB) of each watched process."""

    def __init__(self, pids: dict[str, int], plan: Plan) -> None:
        self.pids = pids
        self.plan = plan
        self.samples: dict[str, list[tuple[int, float]]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        done = self.plan.done
        for name, pid in self.pids.items():
            kib = harness.memory_kib(pid, "VmRSS")
            if kib is not None:
                self.samples[name].append((done, round(kib / 1024, 1)))

    def _run(self) -> None:
        while not self._stop.wait(RSS_INTERVAL_S):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def memory_verdict(
    samples: list[tuple[int, float]], turns: int, limit_mib: float
) -> dict[str, Any]:
    """RSS at the 25/50/75% marks and at the end; flat when end - 25% mark < limit_mib."""

    def at(fraction: float) -> float | None:
        return next((rss for done, rss in samples if done >= fraction * turns), None)

    marks = {f"{int(f * 100)}%": at(f) for f in (0.25, 0.5, 0.75)}
    start, end = samples[0][1] if samples else None, samples[-1][1] if samples else None
    growth = round(end - marks["25%"], 1) if end is not None and marks["25%"] else None
    return {
        "start_mib": start,
        **{f"at_{k}_mib": v for k, v in marks.items()},
        "end_mib": end,
        "peak_mib": max((rss for _, rss in samples), default=None),
        "growth_after_25pct_mib": growth,
        "limit_mib": limit_mib,
        "flat": growth is not None and growth < limit_mib,
        "samples": len(samples),
    }


# --- checks on the database ----------------------------------------------------------------------


def database_checks(turns_ok: int) -> dict[str, Any]:
    with psycopg.connect(f"{PG_URL}/{DB_NAME}", connect_timeout=5) as conn:

        def one(sql: str) -> Any:
            return conn.execute(sql).fetchone()[0]

        turns = one("SELECT count(*) FROM turns")
        by_status = dict(conn.execute("SELECT status, count(*) FROM turns GROUP BY 1").fetchall())
        duplicates = one(
            "SELECT count(*) FROM (SELECT session_id, turn_index FROM turns "
            "GROUP BY 1, 2 HAVING count(*) > 1) d"
        )
        gapped = one(
            "SELECT count(*) FROM sessions s LEFT JOIN (SELECT session_id, count(*) n, "
            "max(turn_index) top, min(turn_index) low FROM turns GROUP BY 1) t "
            "ON t.session_id = s.id WHERE coalesce(t.n, 0) <> s.turn_counter "
            "OR coalesce(t.top, 0) <> s.turn_counter OR coalesce(t.low, 1) <> 1"
        )
        active_reservations = one("SELECT count(*) FROM credit_reservations WHERE status='active'")
        balances = conn.execute(
            """
            SELECT u.email, a.balance_micro, a.reserved_micro,
                   (SELECT coalesce(sum(amount_micro), 0)::bigint FROM credit_ledger_entries e
                     WHERE e.account_id = a.id AND e.kind = 'grant') AS grants,
                   (SELECT coalesce(sum(credits_burned), 0)::bigint FROM llm_call_events c
                     WHERE c.user_id = a.user_id) AS burned,
                   (SELECT count(*) FROM llm_call_events c WHERE c.user_id = a.user_id) AS calls
              FROM credit_accounts a JOIN users u ON u.id = a.user_id
             WHERE u.email LIKE 'soak-user%'
            """
        ).fetchall()
        events = dict(
            conn.execute("SELECT purpose, count(*) FROM llm_call_events GROUP BY 1").fetchall()
        )
        summaries = dict(
            conn.execute("SELECT status, count(*) FROM session_summaries GROUP BY 1").fetchall()
        )
    wrong = [
        f"{email}: balance {balance} != grants {grants} - burned {burned}"
        + (f", reserved {reserved}" if reserved else "")
        for email, balance, reserved, grants, burned, calls in balances
        if balance != grants - burned or reserved != 0 or (calls and not burned)
    ]
    return {
        "turns_in_db": turns,
        "turns_by_status": by_status,
        "duplicate_turn_indexes": duplicates,
        "sessions_with_gap_or_counter_mismatch": gapped,
        "active_reservations": active_reservations,
        "call_events_by_purpose": events,
        "summaries_by_status": summaries,
        "users_checked": len(balances),
        "credits_burned_micro": sum(row[4] for row in balances),
        "balance_problems": wrong[:10],
        "balance_problem_count": len(wrong),
        "passed": turns == turns_ok
        and set(by_status) <= {"completed"}
        and duplicates == 0
        and gapped == 0
        and active_reservations == 0
        and not wrong
        and len(balances) > 0,
    }


def drain_summaries() -> dict[str, Any]:
    """Wait (bounded) until the Celery worker has finished every summary the turns asked for,
    so the ledger is checked at rest."""
    started = time.monotonic()
    left = -1
    while time.monotonic() - started < SUMMARY_DRAIN_TIMEOUT_S:
        with psycopg.connect(f"{PG_URL}/{DB_NAME}", connect_timeout=5) as conn:
            left = conn.execute(
                "SELECT count(*) FROM session_summaries WHERE status IN ('pending', 'running')"
            ).fetchone()[0]
        if left == 0:
            break
        time.sleep(1)
    return {"waited_s": round(time.monotonic() - started, 1), "unfinished": left}


# --- the run -------------------------------------------------------------------------------------


def start_celery(env: dict[str, str], workdir: Path) -> harness.Service:
    return harness.start_service(
        "celery",
        [
            str(VENV_BIN / "celery"),
            "-A",
            "pantheon",
            "worker",
            "-l",
            "info",
            "-Q",
            "default",
            "--prefetch-multiplier",
            "1",
            "--concurrency",
            "1",
            "-n",
            "soak@%h",
        ],
        env=env,
        cwd=ROOT,
        log_dir=workdir,
    )


def soak(args: argparse.Namespace, workdir: Path, results: dict[str, Any]) -> None:
    services: list[harness.Service] = []
    try:
        recreate_database(DB_NAME)
        redis.Redis.from_url(REDIS_URL).flushdb()
        stub, stub_base = start_stub(workdir)
        services.append(stub)
        env = server_env(f"{stub_base}/v1", args.settings, db_name=DB_NAME, redis_url=REDIS_URL)
        log(f"migrating {DB_NAME} ...")
        done = manage(env, "migrate", "--noinput")
        if done.returncode:
            raise RuntimeError(f"migrate failed:\n{done.stdout}\n{done.stderr}")
        harness.wait_until_up(stub, f"{stub_base}/health", timeout=30)
        log(f"seeding {args.users} users ...")
        seed_path = workdir / "seed.json"
        done = subprocess.run(  # noqa: S603  (fixed argv, no shell)
            [
                PYTHON,
                *("-m", "bench.soak", "--seed-into", str(seed_path)),
                *("--users", str(args.users), "--sessions-per-user", str(args.sessions_per_user)),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"seed failed:\n{done.stdout}\n{done.stderr}")
        users = json.loads(seed_path.read_text())
        celery = start_celery(env, workdir)
        services.append(celery)
        server, base, workers = start_gunicorn(env, workdir, workers=WEB_WORKERS)
        services.append(server)
        log(f"Pantheon up at {base} (workers {workers}); celery pid {celery.pid}")

        plan = Plan(users, args.concurrency)
        watched = {f"web worker {pid}": pid for pid in workers}
        sampler = RssSampler(watched, plan)
        sampler.start()
        log(f"soak: {args.turns} turns, concurrency {args.concurrency} ...")
        load = harness.run_load(
            "soak",
            turn_request(plan),
            base_url=base,
            requests=args.turns,
            concurrency=args.concurrency,
            time_cap_s=args.max_minutes * 60,
            cpu_probes=[
                harness.CpuProbe("server", lambda: workers),
                *(harness.CpuProbe(f"worker {pid}", lambda pid=pid: [pid]) for pid in workers),
            ],
            client_timeout_s=REQUEST_TIMEOUT_S,
        )
        sampler.stop()
        summary = load.summary()
        summary["turns_by_kind"] = dict(plan.kinds)
        summary["server_cpu_share"] = {
            str(pid): round(load.cpu_s[f"worker {pid}"] / load.cpu_s["server"], 3)
            if load.cpu_s["server"]
            else 0.0
            for pid in workers
        }
        summary["sessions"] = sum(len(s) for s in plan.slices)
        results["load"] = summary
        lat = summary["latency_ms"] or {}
        log(
            f"soak: {summary['requests_ok']}/{summary['requests_done']} ok in "
            f"{summary['wall_s']} s, statuses {summary['statuses']}, p50 {lat.get('p50')} ms, "
            f"p99 {lat.get('p99')} ms, errors {summary['errors'][:2]}"
        )
        results["memory"] = {
            name: memory_verdict(samples, args.turns, args.growth_limit_mib)
            for name, samples in sampler.samples.items()
        }
        celery_tree = harness.process_tree(celery.pid)
        results["memory"]["celery (all processes, not judged)"] = {
            "end_mib": round(
                sum(harness.memory_kib(p, "VmRSS") or 0 for p in celery_tree) / 1024, 1
            )
        }
        results["rss_samples"] = sampler.samples
        log(f"waiting for summaries (at most {SUMMARY_DRAIN_TIMEOUT_S:.0f} s) ...")
        results["summaries_drain"] = drain_summaries()
        done = manage(env, "verify_ledger")
        results["verify_ledger"] = {
            "exit_code": done.returncode,
            "output": (done.stdout.strip().splitlines() or [""])[-1],
            "problems": done.stderr.strip().splitlines()[:10],
        }
        results["database"] = database_checks(summary["requests_ok"])
    finally:
        for service in reversed(services):
            with contextlib.suppress(Exception):
                service.stop()


def verdict(results: dict[str, Any], turns: int) -> dict[str, bool]:
    load = results.get("load", {})
    statuses = load.get("statuses", {})
    return {
        "all_turns_answered_ok": load.get("requests_ok") == turns == load.get("requests_done"),
        "no_5xx_or_transport_error": not any(int(s) == 0 or int(s) >= 500 for s in statuses),
        "database_consistent": bool(results.get("database", {}).get("passed")),
        # Memory flatness means nothing for a worker that served nothing.
        "every_web_worker_served": bool(load.get("server_cpu_share"))
        and min(load["server_cpu_share"].values()) >= MIN_WORKER_SHARE,
        "verify_ledger_clean": results.get("verify_ledger", {}).get("exit_code") == 0,
        "summaries_settled": results.get("summaries_drain", {}).get("unfinished") == 0,
        "memory_flat": bool(results.get("memory"))
        and all(m["flat"] for name, m in results["memory"].items() if "flat" in m),
    }


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"# Soak {meta['started_at']}",
        "",
        f"{meta['turns']} turns, {meta['users']} users, concurrency {meta['concurrency']}; "
        f"{meta['server']}. Machine: {meta['machine']['cpus']} CPUs, load average "
        f"{' / '.join(meta['machine']['load_average_at_start'])} at start. "
        f"Total {meta.get('total_s')} s.",
        "",
    ]
    if results.get("failed"):
        lines += [f"**Run failed:** {results['failed']}", ""]
    load = results.get("load")
    if load:
        lat = load["latency_ms"] or {}
        lines += [
            "| load | value |",
            "|---|---|",
            f"| turns ok / sent | {load['requests_ok']} / {load['requests_done']} |",
            f"| by kind | {load['turns_by_kind']} |",
            f"| statuses | {load['statuses']} |",
            f"| sessions | {load['sessions']} |",
            f"| wall time | {load['wall_s']} s ({load['requests_per_s']} turns/s) |",
            f"| latency p50 / p99 | {lat.get('p50')} / {lat.get('p99')} ms |",
            f"| server CPU per turn | {load.get('cpu_ms_per_request_server')} ms |",
            f"| share of server CPU by worker | {load.get('server_cpu_share')} |",
            "",
        ]
    memory = results.get("memory", {})
    if memory:
        lines += [
            "| process | start | 25% | 50% | 75% | end | peak | end - 25% | flat |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, m in memory.items():
            if "flat" not in m:
                lines.append(f"| {name} | | | | | {m['end_mib']} | | | |")
                continue
            lines.append(
                f"| {name} | {m['start_mib']} | {m['at_25%_mib']} | {m['at_50%_mib']} | "
                f"{m['at_75%_mib']} | {m['end_mib']} | {m['peak_mib']} | "
                f"{m['growth_after_25pct_mib']} MiB (< {m['limit_mib']}) | "
                f"{'yes' if m['flat'] else '**no**'} |"
            )
        lines.append("")
    db = results.get("database")
    if db:
        lines += [
            "| database | value |",
            "|---|---|",
            f"| turns in db | {db['turns_in_db']} {db['turns_by_status']} |",
            f"| duplicate turn indexes | {db['duplicate_turn_indexes']} |",
            f"| sessions with a gap | {db['sessions_with_gap_or_counter_mismatch']} |",
            f"| call events | {db['call_events_by_purpose']} |",
            f"| summaries | {db['summaries_by_status']} |",
            f"| active reservations | {db['active_reservations']} |",
            f"| users with balance != grants - burns | {db['balance_problem_count']} of "
            f"{db['users_checked']} |",
            f"| verify_ledger | {results['verify_ledger']['output']} |",
            "",
        ]
    lines += ["| check | passed |", "|---|---|"]
    lines += [f"| {k} | {'yes' if v else '**no**'} |" for k, v in results["checks"].items()]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=3000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sessions-per-user", type=int, default=3)
    parser.add_argument(
        "--growth-limit-mib",
        type=float,
        default=16.0,
        help="largest RSS growth per web worker from the 25%% mark to the end",
    )
    parser.add_argument("--max-minutes", type=float, default=30.0, help="time cap of the load")
    parser.add_argument(
        "--settings",
        default="pantheon.settings",
        help="DJANGO_SETTINGS_MODULE for the server, worker and seed (on PYTHONPATH)",
    )
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument("--seed-into", help=argparse.SUPPRESS)  # internal: the seed subprocess
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seed_into:
        seed(Path(args.seed_into), args.users, args.sessions_per_user)
        return 0
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="pantheon-soak-"))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "meta": {
            "started_at": stamp,
            "turns": args.turns,
            "users": args.users,
            "concurrency": args.concurrency,
            "sessions_per_user": args.sessions_per_user,
            "settings": args.settings,
            "machine": machine(),
            "server": "gunicorn --preload -k uvicorn_worker.UvicornWorker "
            f"--workers {WEB_WORKERS}, Celery worker, DEBUG=false, PostgreSQL + Redis, "
            "stub upstream",
        }
    }
    log(f"work directory (server logs): {workdir}")
    try:
        soak(args, workdir, results)
    except Exception as exc:  # report what was measured, then fail
        results["failed"] = f"{type(exc).__name__}: {exc}"
        log(f"FAILED: {results['failed']}")
    results["checks"] = verdict(results, args.turns)
    results["passed"] = not results.get("failed") and all(results["checks"].values())
    results["meta"]["total_s"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"soak-{stamp}.json"
    md_path = RESULTS / f"soak-{stamp}.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    markdown = render(results)
    md_path.write_text(markdown)
    print()
    print(markdown)
    log(f"results: {json_path.relative_to(ROOT)}, {md_path.relative_to(ROOT)}")
    if args.keep_workdir or not results["passed"]:
        log(f"server logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    log("PASSED" if results["passed"] else "FAILED")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
