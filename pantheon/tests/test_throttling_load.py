"""Throttling holds across worker processes: gunicorn with two uvicorn workers sharing Redis,
one API key, more requests than the rate allows — exactly the allowed number pass and every
other answer is 429 `throttled` with `Retry-After`, whichever worker answered it. Both one
after the other and as a simultaneous burst (where a read-then-write counter lets them all
through).

Each request uses a new connection, and the worker that accepted it is identified from /proc
(the worker process holding the server side of that connection), so the test also proves
that both workers answered."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from pantheon.testing import factories
from usage.services import credits_grant

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
USER_RATE = 20
TURN_RATE = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _server_socket_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server side of the loopback connection from `client_port`."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if local_port == server_port and remote_port == client_port and fields[9] != "0":
                return fields[9]
    return None


def _owner_of_socket(inode: str, pids: list[int]) -> int | None:
    target = f"socket:[{inode}]"
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            for fd in fd_dir.iterdir():
                try:
                    if os.readlink(fd) == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


@dataclass
class Answer:
    status: int
    body: Any
    retry_after: str | None
    worker: int | None


@dataclass
class Server:
    port: int
    workers: list[int]

    def request(self, method: str, path: str, key: str, body: Any = None) -> Answer:
        """One request on a new connection; the worker is read while the connection is open."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {key}"}
            payload = None
            if body is not None:
                payload = json.dumps(body)
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            inode = _server_socket_inode(self.port, conn.sock.getsockname()[1])
            worker = _owner_of_socket(inode, self.workers) if inode else None
            return Answer(
                status=response.status,
                body=json.loads(raw) if raw else None,
                retry_after=response.getheader("Retry-After"),
                worker=worker,
            )
        finally:
            conn.close()


@pytest.fixture
def server(transactional_db: Any, llm_stub: Any) -> Iterator[Server]:
    """gunicorn + 2 uvicorn workers on this test database and Redis, with low rates."""
    db = settings.DATABASES["default"]
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DATABASE_CONN_MAX_AGE": "0",
        "REDIS_URL": settings.REDIS_URL,
        # Fresh counters for this server: nothing left over from another run counts.
        "CACHE_KEY_PREFIX": f"throttle-test-{uuid.uuid4().hex}",
        "PANTHEON_THROTTLE_USER": f"{USER_RATE}/min",
        "PANTHEON_THROTTLE_TURNS": f"{TURN_RATE}/min",
        "OPENROUTER_BASE_URL": llm_stub.url,
        "OPENROUTER_API_KEY": "sk-test",
        "DEBUG": "false",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    (ROOT / "artifacts").mkdir(exist_ok=True)
    log = open(ROOT / "artifacts" / "throttling-gunicorn.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "pantheon.asgi:application",
            "-k",
            "uvicorn_worker.UvicornWorker",
            "--workers",
            "2",
            "--bind",
            f"{HOST}:{port}",
            "--timeout",
            "60",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while time.monotonic() < deadline:
            assert process.poll() is None, "gunicorn exited: see artifacts/throttling-gunicorn.log"
            workers = _children(process.pid)
            if len(workers) == 2 and _health(port):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("gunicorn did not come up with 2 workers within 60 s")
        # Both workers answer health before the test starts (each imports the app lazily).
        yield Server(port=port, workers=workers)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        log.close()


def _health(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        conn.request("GET", "/api/v1/health")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def _assert_throttled(answer: Answer) -> None:
    assert answer.status == 429, answer
    assert answer.body["error"]["code"] == "throttled"
    assert set(answer.body["error"]) == {"code", "message", "details"}
    assert answer.retry_after is not None and int(answer.retry_after) >= 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_user_rate_holds_across_two_worker_processes(server: Server) -> None:
    _, key = factories.make_api_key()

    answers = [server.request("GET", "/api/v1/auth/me", key) for _ in range(2 * USER_RATE)]

    statuses = Counter(a.status for a in answers)
    assert statuses == {200: USER_RATE, 429: USER_RATE}, statuses
    # The first USER_RATE pass and every later one is refused: the counter is shared.
    assert [a.status for a in answers[:USER_RATE]] == [200] * USER_RATE
    for answer in answers[USER_RATE:]:
        _assert_throttled(answer)
    by_worker = Counter(a.worker for a in answers)
    assert set(by_worker) == set(server.workers), f"both workers must answer: {by_worker}"
    refused_by = {a.worker for a in answers[USER_RATE:]}
    passed_by = {a.worker for a in answers[:USER_RATE]}
    assert refused_by & passed_by, "a worker refused what the other one counted"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_turn_rate_holds_across_two_worker_processes(server: Server) -> None:
    user, key = factories.make_api_key()
    credits_grant(user=user, amount_micro=10_000_000, note="t", idempotency_key=f"thr-{user.pk}")
    room = factories.make_room(owner=user)
    factories.make_agent(room, handle="ada", name="Ada")
    session = factories.make_session(room)
    path = f"/api/v1/sessions/{session.id}/turns"

    answers = [
        server.request("POST", path, key, {"input": f"@ada question {n}"})
        for n in range(3 * TURN_RATE)
    ]

    assert [a.status for a in answers[:TURN_RATE]] == [201] * TURN_RATE, answers[:TURN_RATE]
    assert [a.body["turn_index"] for a in answers[:TURN_RATE]] == list(range(1, TURN_RATE + 1))
    for answer in answers[TURN_RATE:]:
        _assert_throttled(answer)
    # Reading is not a turn: the per-turn rate leaves GET alone (the user rate is not reached).
    listing = server.request("GET", path, key)
    assert listing.status == 200 and listing.body["count"] == TURN_RATE
    assert set(a.worker for a in answers) == set(server.workers), Counter(a.worker for a in answers)


def _burst(server: Server, jobs: list[tuple[str, str, Any]], key: str) -> list[Answer]:
    """Every request at the same instant, one thread and one connection each."""
    answers: list[Answer | None] = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def fire(n: int) -> None:
        method, path, body = jobs[n]
        barrier.wait()
        answers[n] = server.request(method, path, key, body)

    threads = [threading.Thread(target=fire, args=(n,)) for n in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(a is not None for a in answers), "a request of the burst did not finish"
    return [a for a in answers if a is not None]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_simultaneous_burst_cannot_exceed_the_user_rate(server: Server) -> None:
    _, key = factories.make_api_key()

    answers = _burst(server, [("GET", "/api/v1/auth/me", None)] * (2 * USER_RATE), key)

    statuses = Counter(a.status for a in answers)
    assert statuses == {200: USER_RATE, 429: USER_RATE}, (
        statuses,
        Counter(a.worker for a in answers),
    )
    for answer in answers:
        if answer.status == 429:
            _assert_throttled(answer)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_simultaneous_burst_cannot_exceed_the_turn_rate(server: Server) -> None:
    user, key = factories.make_api_key()
    credits_grant(user=user, amount_micro=10_000_000, note="t", idempotency_key=f"thr-{user.pk}")
    room = factories.make_room(owner=user)
    factories.make_agent(room, handle="ada", name="Ada")
    # One session per request: a second turn on a busy session would be a 409, not a throttle.
    jobs = [
        ("POST", f"/api/v1/sessions/{factories.make_session(room).id}/turns", {"input": "@ada hi"})
        for _ in range(3 * TURN_RATE)
    ]

    answers = _burst(server, jobs, key)

    statuses = Counter(a.status for a in answers)
    assert statuses == {201: TURN_RATE, 429: 2 * TURN_RATE}, statuses
    for answer in answers:
        if answer.status == 429:
            _assert_throttled(answer)
