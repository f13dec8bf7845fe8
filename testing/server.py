"""A real Pantheon server for tests that need what only processes show: gunicorn with uvicorn
workers on the test database and Redis, answering plain HTTP on 127.0.0.1.

In-process test clients share one Python process and one connection per thread, so they cannot
show a counter shared across workers, or two workers racing for the same row. `gunicorn_server`
starts the production server command against the current test database (the caller's test must
be `transaction=True`, so the rows it writes are committed and visible to the server), waits
until every worker answers, and stops the whole process group afterwards.

`Server.request` opens a new connection per request and names the worker process that accepted
it (read from /proc while the connection is open); `burst` sends requests at the same instant.
"""

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    """Direct children of `pid` (gunicorn's workers), from /proc."""
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

    def worker_of(self, client_port: int) -> int | None:
        """The worker serving the open connection from `client_port` (None once it closed)."""
        inode = _server_socket_inode(self.port, client_port)
        return _owner_of_socket(inode, self.workers) if inode else None

    def request(
        self, method: str, path: str, key: str, body: Any = None, *, timeout: float = 30
    ) -> Answer:
        """One request on a new connection; the worker is read while the connection is open."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            headers = {"Authorization": f"Bearer {key}"}
            payload = None
            if body is not None:
                payload = json.dumps(body)
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            worker = self.worker_of(conn.sock.getsockname()[1])
            return Answer(
                status=response.status,
                body=json.loads(raw) if raw else None,
                retry_after=response.getheader("Retry-After"),
                worker=worker,
            )
        finally:
            conn.close()


Job = tuple[str, str, str, Any]
"""(method, path, bearer key, JSON body or None)."""


def burst(server: Server, jobs: list[Job], *, timeout: float = 60) -> list[Answer]:
    """Every request at the same instant (released by a barrier), one thread and one connection
    each; answers in job order. Fails if a request has not finished within `timeout`."""
    answers: list[Answer | None] = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def fire(n: int) -> None:
        method, path, key, body = jobs[n]
        barrier.wait()
        answers[n] = server.request(method, path, key, body, timeout=timeout)

    threads = [threading.Thread(target=fire, args=(n,), daemon=True) for n in range(len(jobs))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + 5
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert all(a is not None for a in answers), "a request of the burst did not finish"
    return [a for a in answers if a is not None]


def health(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        conn.request("GET", "/api/v1/health")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def server_env(**overrides: str) -> dict[str, str]:
    """The environment of a server on this test run's database and Redis, with a fresh cache
    key prefix (no throttle counter left over from another run counts) and `overrides`."""
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DATABASE_CONN_MAX_AGE": "0",
        "REDIS_URL": settings.REDIS_URL,
        "CACHE_KEY_PREFIX": f"server-test-{uuid.uuid4().hex}",
        "DEBUG": "false",
        **overrides,
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


@contextmanager
def gunicorn_server(env: dict[str, str], *, log_name: str, workers: int = 2) -> Iterator[Server]:
    """`gunicorn pantheon.asgi:application --preload -k uvicorn_worker.UvicornWorker` (the
    production command) with `workers` workers, its output in artifacts/<log_name>.log; yields
    once every worker is up and the server answers health, stops the process group on exit."""
    port = free_port()
    (ROOT / "artifacts").mkdir(exist_ok=True)
    log_path = ROOT / "artifacts" / f"{log_name}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(  # noqa: S603  (fixed argv, no shell)
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "pantheon.asgi:application",
            "--preload",
            "-k",
            "uvicorn_worker.UvicornWorker",
            "--workers",
            str(workers),
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
        deadline = time.monotonic() + START_TIMEOUT_S
        found: list[int] = []
        while time.monotonic() < deadline:
            assert process.poll() is None, f"gunicorn exited: see {log_path}"
            found = children(process.pid)
            if len(found) == workers and health(port):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"gunicorn did not come up with {workers} workers in time")
        yield Server(port=port, workers=found)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        log.close()
