"""`bash scripts/run.sh` as a new user runs it: from a fresh copy of the project (no .env, no
database, no demo credentials), on SQLite, on a free loopback port. Eight turns through the API
with the printed key, and the demo session's summary becomes `ready` with no other command —
written by the supervised Celery worker when Redis answers, in the web process when it does not.
Ctrl-C (SIGINT) stops everything cleanly (every process exits 0, no traceback, no error line),
and a restart keeps the printed key.

The copy holds the working tree's tracked and new files (`git ls-files -co --exclude-standard`),
so uncommitted changes are what runs. Its `.venv` is a link to this one (already installed:
run.sh skips the install when the stamp matches), and PYTHONPATH points at the copy, because this
venv's editable install points at the working tree: the copy's own venv would point at the copy.
Slow by nature (each start migrates and seeds): about a minute for both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.server import ROOT, free_port

pytestmark = pytest.mark.timeout(300)

START_TIMEOUT_S = 120.0  # migrate and seed a new SQLite database, then boot every process
SUMMARY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0  # honcho itself SIGKILLs what is still running 5 s after its SIGTERM
REQUEST_TIMEOUT_S = 30.0
TURNS = 8  # CONTEXT_MANDATORY_SUMMARY_TURN: turn 8 asks for a summary of turns 1-3
# Said on a stop by nobody who stopped cleanly.
ALARMING = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|\bWARNING\b|SIGKILL|rc=(?!0\))")


# --- a fresh copy, and run.sh in it ------------------------------------------------------------


@pytest.fixture
def fresh_copy(tmp_path: Path) -> Path:
    venv = Path(sys.prefix)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamps = {(venv / name).read_text().strip() for name in _STAMPS if (venv / name).exists()}
    if digest not in stamps:  # run.sh would `pip install -e` the copy into this venv
        pytest.fail(f"{venv} is not installed for this pyproject.toml: run scripts/test.sh")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    copy = tmp_path / "pantheon"
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is skipped
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    (copy / ".venv").symlink_to(venv)
    return copy


_STAMPS = (".pantheon-installed", ".pantheon-installed-dev")


class RunSh:
    """One `bash scripts/run.sh` in `copy`, its output in artifacts/<log_name>.log."""

    def __init__(self, copy: Path, env: dict[str, str], log_name: str) -> None:
        self.copy = copy
        self.env = env
        self.port = int(env["PORT"])
        self.base = f"http://127.0.0.1:{self.port}/api/v1"
        (ROOT / "artifacts").mkdir(exist_ok=True)
        self.log_path = ROOT / "artifacts" / f"{log_name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                ["bash", "scripts/run.sh"],
                cwd=self.copy,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"run.sh exited early:\n{self.output[-3000:]}"
            if self.request("GET", "/health", timeout=2)[0] == 200:
                return
            time.sleep(0.5)
        raise AssertionError(f"run.sh did not serve within {START_TIMEOUT_S} s: {self.log_path}")

    def printed(self, name: str) -> str:
        """A `NAME=value` line of the banner's shell lines."""
        match = re.search(rf"^  {name}=(\S+)$", self.output, re.MULTILINE)
        assert match, self.output[-3000:]
        return match.group(1)

    def request(
        self, method: str, path: str, key: str = "", body: Any = None, timeout: float = 30
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
        except OSError:
            return 0, None

    def stop(self) -> str:
        """Ctrl-C: SIGINT to run.sh (by then honcho, which it exec'd). Returns what the stop
        printed."""
        assert self.process is not None
        before = len(self.output)
        self.process.send_signal(signal.SIGINT)
        returncode = self.process.wait(timeout=STOP_TIMEOUT_S)
        printed = self.output[before:]
        # honcho's code after SIGINT is 128 + 2, the shell's "stopped by Ctrl-C".
        assert returncode == 130, (returncode, printed)
        return printed

    def kill(self) -> None:
        """After a failure: SIGKILL to run.sh and everything under it (honcho starts each
        process in a session of its own, out of reach of a process-group kill)."""
        if self.process is None or self.process.poll() is not None:
            return
        for pid in [*_descendants(self.process.pid), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


@pytest.fixture
def run_sh(fresh_copy: Path) -> Iterator[Any]:
    started: list[RunSh] = []

    def make(broker_url: str, log_name: str) -> RunSh:
        env = {
            # A new user's shell: nothing of this test run's configuration leaks in.
            **{k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ},
            "PYTHONPATH": str(fresh_copy),
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "CELERY_BROKER_URL": broker_url,
            "WEB_CONCURRENCY": "1",  # lean: one web worker, one Celery child
            "CELERY_WORKER_CONCURRENCY": "1",
        }
        runner = RunSh(fresh_copy, env, log_name)
        started.append(runner)
        return runner

    yield make
    for runner in started:
        runner.kill()


# --- the first run ----------------------------------------------------------------------------


def _eight_turns_then_a_ready_summary(run: RunSh) -> str:
    """The printed key and session: eight turns, then the summary, with nothing else run."""
    key, session = run.printed("KEY"), run.printed("SESSION")
    assert run.printed("API") == run.base
    for n in range(1, TURNS + 1):
        status, body = run.request(
            "POST",
            f"/sessions/{session}/turns",
            key,
            {"input": f"Question {n}: what should we build first?"},
            timeout=REQUEST_TIMEOUT_S,
        )
        assert status == 201, (status, body)
    deadline = time.monotonic() + SUMMARY_TIMEOUT_S
    summary: Any = None
    while time.monotonic() < deadline:
        status, summary = run.request("GET", f"/sessions/{session}/summary", key)
        if status == 200 and summary["status"] == "ready":
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"no ready summary in {SUMMARY_TIMEOUT_S} s: {summary}")
    assert summary["last_turn_covered"] == TURNS - 1 - 4  # all but the last 4 turns before 8
    assert summary["summary_text"]
    return key


def _assert_clean_stop(printed: str, processes: list[str]) -> None:
    for name in processes:
        assert f"{name}.1 stopped (rc=0)" in printed, printed
    alarming = [line for line in printed.splitlines() if ALARMING.search(line)]
    assert alarming == [], printed


@pytest.mark.redis
def test_with_redis_the_supervised_worker_writes_the_summary(run_sh: Any, tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (the `redis` marker promises it)")
    redis_port = free_port()
    redis = subprocess.Popen(  # a private Redis: no other test's keys
        [
            "redis-server",
            *("--port", str(redis_port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        run = run_sh(f"redis://127.0.0.1:{redis_port}/0", "firstrun-redis")
        run.start()
        assert "Running web, worker (writes the summaries) and beat" in run.output
        assert run.request("GET", "/health")[1]["broker"] == "ok"

        _eight_turns_then_a_ready_summary(run)
        assert "summarize_session" in run.output  # the worker's log: it was there

        printed = run.stop()
        _assert_clean_stop(printed, ["web", "worker", "beat"])
        assert "Traceback" not in run.output
    finally:
        redis.kill()
        redis.wait(timeout=10)


def test_without_redis_summaries_run_in_process_and_a_restart_keeps_the_key(
    run_sh: Any,
) -> None:
    closed = free_port()  # nothing listens there
    run = run_sh(f"redis://127.0.0.1:{closed}/0", "firstrun-no-broker")
    run.start()
    assert f"Broker: no answer at redis://127.0.0.1:{closed}/0." in run.output
    assert "Running web only" in run.output
    assert "worker.1" not in run.output and "beat.1" not in run.output
    assert run.request("GET", "/health")[1] == {
        "status": "ok",
        "database": "ok",
        "broker": "unavailable",
    }

    key = _eight_turns_then_a_ready_summary(run)
    _assert_clean_stop(run.stop(), ["web"])
    assert "Traceback" not in run.output
    credentials = run.copy / ".pantheon-demo.json"
    assert credentials.stat().st_mode & 0o777 == 0o600

    run.start()  # the same copy: its .env, db.sqlite3 and .pantheon-demo.json
    assert run.printed("KEY") == key
    assert "stay the same across restarts" in run.output
    status, me = run.request("GET", "/auth/me", key)
    assert status == 200 and me["email"] == "demo@pantheon.local"
    _assert_clean_stop(run.stop(), ["web"])
