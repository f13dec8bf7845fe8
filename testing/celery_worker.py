"""A real `celery worker` process for tests: the real Redis broker, this test database, the stub
LLM. `celery_worker()` starts one (in a process group of its own, so a test can kill the whole
worker with `os.killpg`) and stops it afterwards; the `worker` fixture is the common case (the
solo pool). Tests that use it must be `transaction=True`: the worker is another process and only
sees committed rows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from pantheon.celery import app as celery_app
from testing.db_faults import wait_for
from testing.stub_llm import LlmStub

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def celery_worker(
    stub: LlmStub, *, pool: str = "solo", env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a worker on the `default` queue (pool `solo`, or `prefork` with one child), wait
    until it answers a ping, and stop it at the end (SIGTERM, then SIGKILL to its group)."""
    db = settings.DATABASES["default"]
    worker_env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "OPENROUTER_BASE_URL": stub.url,
        "OPENROUTER_API_KEY": "sk-test",
        "LLM_READ_TIMEOUT_SECONDS": "5",
        "DATABASE_CONN_MAX_AGE": "0",
        **(env or {}),
    }
    celery_app.control.purge()
    (ROOT / "artifacts").mkdir(exist_ok=True)
    log = open(ROOT / "artifacts" / "celery-worker.log", "ab")  # noqa: SIM115
    pool_args = ["--pool", pool] + (["--concurrency", "1"] if pool == "prefork" else [])
    process = subprocess.Popen(  # noqa: S603  (our own command line)
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "pantheon",
            "worker",
            "-Q",
            "default",
            *pool_args,
            "-l",
            "info",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"test-{os.getpid()}-{pool}@%h",
        ],
        cwd=ROOT,
        env=worker_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: killpg reaches the pool children too
    )
    try:
        wait_for(lambda: bool(celery_app.control.ping(timeout=0.5)), timeout=60, interval=0.1)
        yield process
    finally:
        _stop(process)
        log.close()
        connection.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # pool children of a killed main process
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def worker(llm_stub: LlmStub, transactional_db: None) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker` process (solo pool) on the real broker, this database and stub."""
    with celery_worker(llm_stub) as process:
        yield process
