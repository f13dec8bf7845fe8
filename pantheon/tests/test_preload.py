"""`gunicorn --preload` imports `pantheon.asgi` once, in the master, and forks the workers from
it. What the master holds then is what every worker starts with: the code and tables they share
(the URLconf, the tokenizer), and nothing that must not be shared — no database connection or
pool, no Redis or broker connection, no socket, no thread (a forked child has none of its
parent's threads, and two processes on one socket interleave their bytes).

The import runs in a fresh interpreter pointed at this test run's PostgreSQL and Redis, so a
connection made at import time would succeed, and show."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from testing.server import ROOT, server_env

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

# What the master holds after the import, as seen from inside it.
PROBE = r"""
import gc, json, os, sys, threading

import pantheon.asgi  # what gunicorn --preload imports

from django.conf import settings
from django.db import connections
from django.db.backends.postgresql.base import DatabaseWrapper

from llm import tokenizer

fds = []
for fd in os.listdir("/proc/self/fd"):
    try:
        fds.append(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        pass
print(json.dumps({
    "os_threads": len(os.listdir("/proc/self/task")),
    "python_threads": [t.name for t in threading.enumerate()],
    "sockets": [fd for fd in fds if fd.startswith("socket:")],
    "database_connections": [
        c.alias for c in connections.all(initialized_only=True) if c.connection is not None
    ],
    "database_pools": len(DatabaseWrapper._connection_pools),
    "urlconf_loaded": settings.ROOT_URLCONF in sys.modules,
    "tokenizer_loaded": tokenizer._encoding is not None,
    "frozen_objects": gc.get_freeze_count(),
}))
"""


@pytest.fixture(scope="module")
def master() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**server_env(), "DJANGO_SETTINGS_MODULE": "pantheon.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_master_shares_nothing_a_worker_must_own(master: dict) -> None:
    assert master["os_threads"] == 1, master
    assert master["python_threads"] == ["MainThread"]
    assert master["sockets"] == []
    assert master["database_connections"] == []
    assert master["database_pools"] == 0


def test_the_master_loads_what_every_worker_uses(master: dict) -> None:
    """Loaded once and shared copy-on-write, instead of once per worker on its first turns;
    and frozen out of the garbage collector, whose passes would otherwise copy them."""
    assert master["urlconf_loaded"]
    assert master["tokenizer_loaded"]
    assert master["frozen_objects"] > 100_000
