"""Run the five scenarios of performance.md and write bench/results/.

`bash bench/run.sh [--with-litellm] [--scale S]` — everything on 127.0.0.1: a fresh
`pantheon_bench` PostgreSQL database (dropped, created, migrated, seeded), Redis db 8, the stub
upstream, Pantheon under gunicorn with one UvicornWorker, the load generator, and optionally a
LiteLLM proxy. Each load is bounded by a request count and a time cap. Every Pantheon figure is
measured next to the same load sent straight to the stub in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from bench import harness, litellm_proxy, report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python")
PG_URL = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
DB_NAME = os.environ.get("BENCH_DATABASE", "pantheon_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
MODEL = "openai/gpt-4o-mini"
# Throttles are not what is measured: set far above the bench's rate (they still run).
THROTTLE = "1000000/min"
TIME_CAP_S = 45.0
# The memory step: servers with these worker counts, each worker warmed by turns until it has
# spent this much CPU on them (a few turns; at most the cap per worker).
MEMORY_WORKER_COUNTS = (2, 4)
WARM_CPU_S = 0.3
WARM_TURNS_PER_WORKER = 25

TURN_INPUT = "@ada which market should go first, and what do we measure in week one?"
TABLE_INPUT = "Which market should go first, and what do we measure in week one?"
SYSTEM_PROMPT = (
    "You are Ada, the analyst. Break the question down, state your assumptions and back every "
    "claim with reasoning or numbers. Be concise."
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- setup -------------------------------------------------------------------------------------


def recreate_database(name: str = DB_NAME) -> None:
    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def manage(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603  (fixed argv, no shell)
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def server_env(
    stub_url: str, settings_module: str, *, db_name: str = DB_NAME, redis_url: str = REDIS_URL
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PANTHEON_", "DJANGO_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": settings_module,
            "PANTHEON_ENV": "development",
            "DEBUG": "false",
            "DATABASE_URL": f"{PG_URL}/{db_name}",
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "OPENROUTER_BASE_URL": stub_url,
            "OPENROUTER_API_KEY": "x",
            "PANTHEON_THROTTLE_USER": THROTTLE,
            "PANTHEON_THROTTLE_TURNS": THROTTLE,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_stub(workdir: Path) -> tuple[harness.Service, str]:
    """The stub upstream on a free port (not yet waited for): the service and its base URL."""
    port = harness.free_port()
    stub = harness.start_service(
        "stub",
        [PYTHON, "-m", "testing.stub_llm", "--port", str(port)],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "pantheon.settings"},
        cwd=ROOT,
        log_dir=workdir,
    )
    return stub, f"http://{harness.LOOPBACK}:{port}"


def start_gunicorn(
    env: dict[str, str], workdir: Path, *, workers: int, name: str = "gunicorn"
) -> tuple[harness.Service, str, list[int]]:
    """Pantheon as in production (gunicorn --preload + UvicornWorker) on a free port, up and
    answering: the service, its base URL and its worker pids."""
    port = harness.free_port()
    server = harness.start_service(
        name,
        [
            str(VENV_BIN / "gunicorn"),
            "pantheon.asgi:application",
            "--preload",
            "-k",
            "uvicorn_worker.UvicornWorker",
            "--workers",
            str(workers),
            "--bind",
            f"{harness.LOOPBACK}:{port}",
            "--timeout",
            "120",
            "--graceful-timeout",
            "30",
            "--keep-alive",
            "5",
        ],
        env=env,
        cwd=ROOT,
        log_dir=workdir,
    )
    base = f"http://{harness.LOOPBACK}:{port}"
    try:
        harness.wait_until_up(server, f"{base}/api/v1/health", timeout=60)
        # Workers boot one by one: wait until all of them are there.
        deadline = time.monotonic() + 30
        found = harness.children_of(server.pid)
        while len(found) != workers and time.monotonic() < deadline:
            time.sleep(0.2)
            found = harness.children_of(server.pid)
        if len(found) != workers:
            raise RuntimeError(f"expected {workers} gunicorn worker(s), found {found}")
    except Exception:
        server.stop()
        raise
    return server, base, found


def server_memory(master: int, workers: list[int]) -> dict[str, Any]:
    """RSS, PSS and USS of a gunicorn master and each of its workers (harness.process_memory),
    and the PSS of the whole server divided by its workers: what one more worker costs on
    average, the preloaded master's share included."""
    master_memory = harness.process_memory(master)
    rows = [m for m in (harness.process_memory(pid) for pid in workers) if m is not None]
    total = sum(m["pss_mib"] or 0 for m in [master_memory or {"pss_mib": 0}, *rows])
    return {
        "master": master_memory,
        "workers": rows,
        "pss_total_mib": round(total, 1),
        "pss_per_worker_mib": round(total / len(rows), 1) if rows else None,
    }


def warm_workers(base: str, workers: list[int], key: str, sessions: list[str]) -> dict[str, Any]:
    """Turns, two per worker at a time on fresh connections (so the kernel spreads them over
    the workers), until every worker has spent `WARM_CPU_S` of CPU time since the start, within
    `WARM_TURNS_PER_WORKER` turns per worker and `TIME_CAP_S`. Each batch uses distinct
    sessions (no 409)."""
    started = {pid: harness.cpu_seconds([pid]) for pid in workers}
    batch = 2 * len(workers)
    assert len(sessions) >= batch, "fewer sessions than turns in a batch"
    headers = {"Authorization": f"Bearer {key}"}

    def turn(session: str) -> int:
        try:
            return httpx.post(
                f"{base}/api/v1/sessions/{session}/turns",
                json={"input": TURN_INPUT},
                headers=headers,
                timeout=30,
            ).status_code
        except httpx.HTTPError:
            return 0

    statuses: Counter[str] = Counter()
    deadline = time.monotonic() + TIME_CAP_S
    spent: dict[int, float] = dict.fromkeys(workers, 0.0)
    with ThreadPoolExecutor(batch) as pool:
        while sum(statuses.values()) < WARM_TURNS_PER_WORKER * len(workers):
            spent = {pid: harness.cpu_seconds([pid]) - started[pid] for pid in workers}
            if min(spent.values()) >= WARM_CPU_S or time.monotonic() > deadline:
                break
            statuses.update(str(status) for status in pool.map(turn, sessions[:batch]))
    return {
        "turns": sum(statuses.values()),
        "statuses": dict(statuses),
        "cpu_s": {str(pid): round(seconds, 2) for pid, seconds in spent.items()},
        "all_warm": min(spent.values()) >= WARM_CPU_S,
    }


def db_backend_pids() -> list[int]:
    """PostgreSQL backends serving the bench database (their process title names it)."""
    return harness.pids_with_cmdline(f" {DB_NAME} ")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    with psycopg.connect(f"{PG_URL}/postgres", connect_timeout=5) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
    return {
        "load_average_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "postgresql": pg,
        "git_commit": git,
    }


# --- request shapes ------------------------------------------------------------------------------


def upstream_body(*, stream: bool) -> dict[str, Any]:
    """What Pantheon sends the provider for a single-agent turn, near enough."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": TURN_INPUT},
        ],
        "temperature": 0.7,
        "max_tokens": 512,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def direct_request(  # type: ignore[no-untyped-def]
    *, stream: bool, calls: int = 1, headers: dict[str, str] | None = None
):
    """`calls` upstream calls in a row (a round table's agents speak one after the other)."""
    body = upstream_body(stream=stream)

    def request(client: httpx.Client, worker: int, index: int) -> harness.Sample:
        total = 0.0
        sample = harness.Sample(latency_s=0.0, status=0, ok=False)
        for _ in range(calls):
            sample = harness.timed_post(
                client, "/v1/chat/completions", json_body=body, headers=headers
            )
            total += sample.latency_s
            if not sample.ok:
                break
        sample.latency_s = total
        return sample

    return request


class SessionPool:
    """Each worker thread owns its own sessions, so no two requests of a load ever run on
    the same session at once (which would be a 409, not a measurement)."""

    def __init__(self, sessions: list[str], concurrency: int) -> None:
        assert len(sessions) >= concurrency, "fewer sessions than workers"
        self.slices = [sessions[w::concurrency] for w in range(concurrency)]
        self.used = [0] * concurrency

    def next(self, worker: int) -> str:
        own = self.slices[worker]
        session = own[self.used[worker] % len(own)]
        self.used[worker] += 1
        return session


def turn_request(key: str, sessions: list[str], concurrency: int, text: str):  # type: ignore[no-untyped-def]
    pool = SessionPool(sessions, concurrency)
    headers = {"Authorization": f"Bearer {key}"}

    def request(client: httpx.Client, worker: int, index: int) -> harness.Sample:
        path = f"/api/v1/sessions/{pool.next(worker)}/turns"
        return harness.timed_post(
            client, path, json_body={"input": text}, headers=headers, expect=201
        )

    return request


def _delta_has_text(data: str) -> bool:
    try:
        chunk = json.loads(data)
        return bool(chunk["choices"][0]["delta"].get("content"))
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def stream_turn_request(key: str, sessions: list[str], concurrency: int):  # type: ignore[no-untyped-def]
    pool = SessionPool(sessions, concurrency)
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}

    def request(client: httpx.Client, worker: int, index: int) -> harness.Sample:
        path = f"/api/v1/sessions/{pool.next(worker)}/turns"
        return harness.timed_stream(
            client,
            path,
            json_body={"input": TURN_INPUT},
            headers=headers,
            is_first_event=lambda event, data: event == "agent.delta",
        )

    return request


def direct_stream_request():  # type: ignore[no-untyped-def]
    body = upstream_body(stream=True)

    def request(client: httpx.Client, worker: int, index: int) -> harness.Sample:
        return harness.timed_stream(
            client,
            "/v1/chat/completions",
            json_body=body,
            headers={"Accept": "text/event-stream"},
            is_first_event=lambda event, data: _delta_has_text(data),
        )

    return request


# --- the run -------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.scale = args.scale
        self.services: list[harness.Service] = []
        self.results: dict[str, Any] = {"scenarios": {}, "notes": []}
        self.seed: dict[str, Any] = {}
        self.env: dict[str, str] = {}
        self.stub_base = ""
        self.server_base = ""
        self.worker_pid = 0
        self.server_pid = 0
        self.stub: harness.Service | None = None

    def n(self, count: int) -> int:
        return max(1, int(count * self.scale))

    # setup

    def setup(self) -> None:
        log(f"work directory (server logs): {self.workdir}")
        started = time.monotonic()
        recreate_database()
        redis.Redis.from_url(REDIS_URL).flushdb()
        self.stub, self.stub_base = start_stub(self.workdir)
        self.services.append(self.stub)
        self.env = server_env(f"{self.stub_base}/v1", self.args.settings)
        log(f"migrating {DB_NAME} ...")
        done = manage(self.env, "migrate", "--noinput")
        if done.returncode:
            raise RuntimeError(f"migrate failed:\n{done.stdout}\n{done.stderr}")
        harness.wait_until_up(self.stub, f"{self.stub_base}/health", timeout=30)
        log("seeding (services + bulk history) ...")
        seed_path = self.workdir / "seed.json"
        done = subprocess.run(  # noqa: S603
            [PYTHON, "-m", "bench.seed", str(seed_path), "--scale", str(self.scale)],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"seed failed:\n{done.stdout}\n{done.stderr}")
        self.seed = json.loads(seed_path.read_text())
        # Fresh statistics, as autovacuum would have them on a live database: without them
        # the planner guesses from an empty table and the history figures mean nothing.
        with psycopg.connect(f"{PG_URL}/{DB_NAME}", autocommit=True, connect_timeout=5) as conn:
            conn.execute("ANALYZE")
        self.seed_path = seed_path
        server, self.server_base, workers = start_gunicorn(self.env, self.workdir, workers=1)
        self.services.append(server)
        self.server_pid = server.pid
        self.worker_pid = workers[0]
        self.results["setup_s"] = round(time.monotonic() - started, 1)
        self.results["seed_s"] = self.seed["seconds"]
        log(
            f"Pantheon up at {self.server_base} (worker pid {self.worker_pid}), stub at "
            f"{self.stub_base}; setup {self.results['setup_s']} s"
        )

    def probes(self, *, server: bool = True) -> list[harness.CpuProbe]:
        assert self.stub is not None
        stub_pid = self.stub.pid
        found = [harness.CpuProbe("stub", lambda: [stub_pid])]
        if server:
            worker = self.worker_pid
            found += [
                harness.CpuProbe("server", lambda: [worker]),
                harness.CpuProbe("db", db_backend_pids),
            ]
        return found

    def load(
        self,
        label: str,
        request,
        *,
        base: str,
        requests: int,
        concurrency: int,  # type: ignore[no-untyped-def]
        warmup: int = 5,
        server: bool = True,
        probes: list[harness.CpuProbe] | None = None,
    ) -> dict[str, Any]:
        result = harness.run_load(
            label,
            request,
            base_url=base,
            requests=requests,
            concurrency=concurrency,
            time_cap_s=TIME_CAP_S,
            warmup=warmup,
            cpu_probes=probes if probes is not None else self.probes(server=server),
        )
        summary = result.summary()
        lat = summary["latency_ms"] or {}
        log(
            f"{label}: {summary['requests_ok']}/{summary['requests_done']} ok, "
            f"p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, {summary['requests_per_s']} req/s"
            + (f", statuses {summary['statuses']}" if len(summary["statuses"]) > 1 else "")
            + (f", errors {summary['errors'][:2]}" if summary["errors"] else "")
        )
        return summary

    def rss(self) -> dict[str, float | None]:
        hwm = harness.memory_kib(self.worker_pid, "VmHWM")
        now = harness.memory_kib(self.worker_pid, "VmRSS")
        return {
            "peak_mib": round(hwm / 1024, 1) if hwm else None,
            "current_mib": round(now / 1024, 1) if now else None,
        }

    def server_memory(self) -> dict[str, Any]:
        return server_memory(self.server_pid, harness.children_of(self.server_pid))

    # scenarios

    def scenario_1(self) -> None:
        log("scenario 1: single-agent turn, short history, concurrency 1 and 16")
        key = self.seed["owner_key"]
        sessions = self.seed["single"]["sessions"]
        litellm: tuple[harness.Service, str, str] | None = None
        litellm_info: dict[str, Any] = {"requested": self.args.with_litellm}
        if self.args.with_litellm:
            try:
                log("LiteLLM: installing into bench/.venv-litellm (once) and starting ...")
                litellm = litellm_proxy.start(
                    stub_url=f"{self.stub_base}/v1", model=MODEL, log_dir=self.workdir
                )
                self.services.append(litellm[0])
                litellm_info.update({"available": True, "version": litellm_proxy.version()})
            except litellm_proxy.Unavailable as exc:
                litellm_info.update({"available": False, "skipped": str(exc)[:500]})
                log(f"LiteLLM skipped: {exc}")
        out: dict[str, Any] = {"litellm": litellm_info}
        for concurrency, requests in ((1, self.n(300)), (16, self.n(600))):
            row: dict[str, Any] = {}
            row["direct_json"] = self.load(
                f"s1 c{concurrency} direct JSON",
                direct_request(stream=False),
                base=self.stub_base,
                requests=requests,
                concurrency=concurrency,
                server=False,
            )
            row["direct_stream"] = self.load(
                f"s1 c{concurrency} direct stream",
                direct_request(stream=True),
                base=self.stub_base,
                requests=requests,
                concurrency=concurrency,
                server=False,
            )
            row["pantheon"] = self.load(
                f"s1 c{concurrency} Pantheon",
                turn_request(key, sessions, concurrency, TURN_INPUT),
                base=self.server_base,
                requests=requests,
                concurrency=concurrency,
                warmup=10,
            )
            if litellm is not None:
                litellm_pid = litellm[0].pid
                row["litellm"] = self.load(
                    f"s1 c{concurrency} LiteLLM",
                    direct_request(stream=False, headers={"Authorization": f"Bearer {litellm[2]}"}),
                    base=litellm[1],
                    requests=requests,
                    concurrency=concurrency,
                    warmup=10,
                    probes=[
                        harness.CpuProbe(
                            "server", lambda pid=litellm_pid: harness.process_tree(pid)
                        ),
                        *self.probes(server=False),
                    ],
                )
            out[f"c{concurrency}"] = row
        out["rss_after"] = self.rss()
        out["memory_after"] = self.server_memory()
        if litellm is not None:
            hwm = sum(
                harness.memory_kib(p, "VmHWM") or 0 for p in harness.process_tree(litellm[0].pid)
            )
            out["litellm"]["peak_rss_mib"] = round(hwm / 1024, 1)
            litellm[0].stop()
        self.results["scenarios"]["1"] = out

    def memory_by_workers(self) -> None:
        """Per-worker memory of preloaded servers with 2 and 4 workers, each worker warmed by a
        few turns first: RSS, PSS and USS of every process (see `server_memory`)."""
        log(f"memory: servers with {' and '.join(map(str, MEMORY_WORKER_COUNTS))} workers")
        out: dict[str, Any] = {}
        for count in MEMORY_WORKER_COUNTS:
            server, base, workers = start_gunicorn(
                self.env, self.workdir, workers=count, name=f"gunicorn-{count}-workers"
            )
            try:
                warm = warm_workers(
                    base, workers, self.seed["owner_key"], self.seed["single"]["sessions"]
                )
                time.sleep(1.0)  # let the last responses and their threads finish
                row = {**server_memory(server.pid, workers), "warm_up": warm}
            finally:
                server.stop()
            out[str(count)] = row
            log(
                f"  {count} workers: per worker RSS "
                f"{[w['rss_mib'] for w in row['workers']]} MiB, PSS "
                f"{[w['pss_mib'] for w in row['workers']]} MiB; master PSS "
                f"{(row['master'] or {}).get('pss_mib')} MiB; PSS per worker, master's share "
                f"included: {row['pss_per_worker_mib']} MiB; warm-up turns "
                f"{warm['turns']} ({warm['statuses']}), worker CPU s {warm['cpu_s']}"
            )
        self.results["memory"] = out

    def scenario_2(self) -> None:
        log("scenario 2: round-table turn, 3 agents")
        requests = self.n(150)
        out = {
            "agents": 3,
            "direct_stream_x3": self.load(
                "s2 direct 3 calls in a row",
                direct_request(stream=True, calls=3),
                base=self.stub_base,
                requests=requests,
                concurrency=1,
                server=False,
            ),
            "pantheon": self.load(
                "s2 Pantheon round table",
                turn_request(
                    self.seed["owner_key"], self.seed["round_table"]["sessions"], 1, TABLE_INPUT
                ),
                base=self.server_base,
                requests=requests,
                concurrency=1,
            ),
        }
        self.results["scenarios"]["2"] = out

    def scenario_3(self) -> None:
        log("scenario 3: streaming turn (Accept: text/event-stream)")
        sessions = self.seed["streaming"]["sessions"]
        request = stream_turn_request(self.seed["owner_key"], sessions, 1)
        with httpx.Client(base_url=self.server_base, timeout=30) as client:
            probe = request(client, 0, 0)
        if not probe.ok:
            reason = probe.error or f"HTTP {probe.status}: no agent.delta event"
            log(f"streaming not available: {reason}")
            self.results["scenarios"]["3"] = {"available": False, "reason": reason}
            return
        requests = self.n(150)
        self.results["scenarios"]["3"] = {
            "available": True,
            "direct_stream": self.load(
                "s3 direct stream",
                direct_stream_request(),
                base=self.stub_base,
                requests=requests,
                concurrency=1,
                server=False,
            ),
            "pantheon": self.load(
                "s3 Pantheon SSE",
                stream_turn_request(self.seed["owner_key"], sessions, 1),
                base=self.server_base,
                requests=requests,
                concurrency=1,
            ),
        }

    def scenario_4(self) -> None:
        log("scenario 4: history growth (10, 1,000, 10,000 prior messages)")
        out: dict[str, Any] = {}
        for size, sessions in self.seed["history"].items():
            out[size] = self.load(
                f"s4 {size} prior messages",
                turn_request(self.seed["owner_key"], sessions, 1, TURN_INPUT),
                base=self.server_base,
                requests=self.n(30),
                concurrency=1,
                warmup=0,
            )
        log("scenario 4: query counts, in-process (bench/queries.py)")
        queries_path = self.workdir / "queries.json"
        done = subprocess.run(  # noqa: S603
            [PYTHON, "-m", "bench.queries", str(self.seed_path), str(queries_path)],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode:
            out["queries"] = {"error": (done.stderr or done.stdout)[-2000:]}
            log(f"queries.py failed:\n{done.stderr[-2000:]}")
        else:
            out["queries"] = json.loads(queries_path.read_text())
            for name, row in out["queries"]["by_history"].items():
                log(
                    f"  {name}: turn queries {row['turn_queries']}, prepare queries "
                    f"{row['prepare_queries']} ({row['prepare_ms_median']} ms), "
                    f"history in prompt {row['history_messages_in_prompt']}"
                )
        self.results["scenarios"]["4"] = out

    def scenario_5(self) -> None:
        log("scenario 5: concurrency correctness (50 POSTs on one session; 50 users)")
        key = self.seed["owner_key"]
        session = self.seed["contention"]["session"]
        headers = {"Authorization": f"Bearer {key}"}
        path = f"/api/v1/sessions/{session}/turns"
        same = harness.concurrent_posts(
            self.server_base, [(path, {"input": TURN_INPUT}, headers)] * 50, timeout_s=60
        )
        with httpx.Client(base_url=self.server_base, timeout=30, headers=headers) as client:
            listing = client.get(f"{path}?limit=100").json()
        indexes = [t["turn_index"] for t in listing.get("results", [])]
        errors_409 = Counter(
            body.get("error", {}).get("code")
            for status, body in same
            if status == 409 and isinstance(body, dict)
        )
        one_session = {
            "statuses": dict(Counter(str(status) for status, _ in same)),
            "conflict_codes": dict(errors_409),
            "turn_indexes": indexes,
            "no_5xx": all(status < 500 and status != 0 for status, _ in same),
            "only_201_409": all(status in (201, 409) for status, _ in same),
            "no_duplicate_turn_index": len(indexes) == len(set(indexes)),
            "gap_free": sorted(indexes) == list(range(1, len(indexes) + 1)),
        }
        users = self.seed["users"]
        many = harness.concurrent_posts(
            self.server_base,
            [
                (
                    f"/api/v1/sessions/{u['session']}/turns",
                    {"input": TURN_INPUT},
                    {"Authorization": f"Bearer {u['key']}"},
                )
                for u in users
            ],
            timeout_s=60,
        )
        many_users = {
            "statuses": dict(Counter(str(status) for status, _ in many)),
            "all_201": all(status == 201 for status, _ in many),
            "turn_indexes": sorted(
                {body.get("turn_index") for s, body in many if s == 201 and isinstance(body, dict)}
            ),
        }
        done = manage(self.env, "verify_ledger")
        ledger = {
            "exit_code": done.returncode,
            "output": (done.stdout.strip().splitlines() or [""])[-1],
            "problems": done.stderr.strip().splitlines()[:10],
        }
        log(f"  one session: {one_session['statuses']}, indexes {indexes}")
        log(
            f"  50 users: {many_users['statuses']}; verify_ledger: {ledger['output']} "
            f"(exit {ledger['exit_code']})"
        )
        self.results["scenarios"]["5"] = {
            "one_session_50_posts": one_session,
            "fifty_users": many_users,
            "verify_ledger": ledger,
            "passed": one_session["no_5xx"]
            and one_session["only_201_409"]
            and one_session["no_duplicate_turn_index"]
            and one_session["gap_free"]
            and many_users["all_201"]
            and ledger["exit_code"] == 0,
        }

    def finish(self) -> None:
        self.results["server_rss_end"] = self.rss()
        for service in reversed(self.services):
            service.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--with-litellm",
        action="store_true",
        help="also run scenario 1 through a LiteLLM proxy (own virtualenv)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every request count (0.2 for a quick check)",
    )
    parser.add_argument(
        "--only",
        default="1,memory,2,3,4,5",
        help="scenarios to run, e.g. 1,4 ('memory': per-worker memory with 2 and 4 workers)",
    )
    parser.add_argument(
        "--settings",
        default="pantheon.settings",
        help="DJANGO_SETTINGS_MODULE for the server, seed and queries "
        "(to measure a settings change before making it; on PYTHONPATH)",
    )
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the temporary directory with the server logs",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="pantheon-bench-"))
    bench = Bench(args, workdir)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    bench.results["meta"] = {
        "started_at": stamp,
        "scale": args.scale,
        "settings": args.settings,
        "time_cap_s": TIME_CAP_S,
        "machine": machine(),
        "server": "gunicorn --preload -k uvicorn_worker.UvicornWorker --workers 1, DEBUG=false, "
        "PostgreSQL + Redis, throttles set to " + THROTTLE,
    }
    failed = None
    try:
        bench.setup()
        wanted = set(args.only.split(","))
        steps = {
            "1": bench.scenario_1,
            "memory": bench.memory_by_workers,
            "2": bench.scenario_2,
            "3": bench.scenario_3,
            "4": bench.scenario_4,
            "5": bench.scenario_5,
        }
        for name, step in steps.items():
            if name in wanted:
                step()
    except Exception as exc:  # report what was measured, then fail
        failed = f"{type(exc).__name__}: {exc}"
        log(f"FAILED: {failed}")
        bench.results["failed"] = failed
    finally:
        with contextlib.suppress(Exception):
            bench.finish()
    bench.results["meta"]["total_s"] = round(time.monotonic() - started, 1)
    bench.results["meta"]["machine"]["load_average_at_end"] = (
        Path("/proc/loadavg").read_text().split()[:3]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"{stamp}.json"
    md_path = RESULTS / f"{stamp}.md"
    json_path.write_text(json.dumps(bench.results, indent=2) + "\n")
    markdown = report.render(bench.results)
    md_path.write_text(markdown)
    (RESULTS / "latest.md").write_text(markdown)
    (RESULTS / "latest.json").write_text(json.dumps(bench.results, indent=2) + "\n")
    log(
        f"results: {json_path.relative_to(ROOT)}, {md_path.relative_to(ROOT)}, "
        f"bench/results/latest.md ({bench.results['meta']['total_s']} s in all)"
    )
    print()
    print(markdown)
    if args.keep_workdir or failed:
        log(f"server logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    s5 = bench.results["scenarios"].get("5")
    return 1 if failed or (s5 is not None and not s5["passed"]) else 0


if __name__ == "__main__":
    sys.exit(main())
