"""PostgreSQL faults for tests: backends killed, the database refusing connections.

Everything here goes through a separate psycopg connection to the server's `postgres` database
(never the test database itself), as an operator would: `pg_terminate_backend` for a killed
connection, `ALTER DATABASE … ALLOW_CONNECTIONS false` for a database nobody can reach until
it is allowed again. Only the backends of the given database are touched, so other test
databases on the same server are never disturbed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from django.conf import settings
from psycopg import sql


def database_name() -> str:
    """The database Django uses now (test_<name> under pytest)."""
    return settings.DATABASES["default"]["NAME"]


def connect(dbname: str = "postgres") -> psycopg.Connection[Any]:
    """An autocommit connection of our own, outside Django and its pool."""
    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"],
        password=db.get("PASSWORD") or None,
        dbname=dbname,
        autocommit=True,
        connect_timeout=5,
    )


def backends(
    dbname: str, *, waiting_on_lock: bool = False, exclude: tuple[int, ...] = ()
) -> list[int]:
    """Pids of the client backends connected to `dbname` (optionally: blocked on a lock)."""
    query = (
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'"
        " AND pid <> pg_backend_pid()"
    )
    if waiting_on_lock:
        query += " AND wait_event_type = 'Lock'"
    with connect() as admin:
        pids = [row[0] for row in admin.execute(query, (dbname,)).fetchall()]
    return [pid for pid in pids if pid not in exclude]


def terminate(pids: list[int]) -> int:
    """Kill these backends (their clients see the connection drop). Returns how many died."""
    if not pids:
        return 0
    with connect() as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,)
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def allow_connections(dbname: str, allowed: bool) -> None:
    with connect() as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(dbname), sql.Literal(allowed)
            )
        )


@contextmanager
def database_unreachable(dbname: str) -> Iterator[None]:
    """New connections to `dbname` are refused and every open one is killed, until the block
    ends (then connections are allowed again, whatever happened inside)."""
    allow_connections(dbname, False)
    try:
        terminate(backends(dbname))
        yield
    finally:
        allow_connections(dbname, True)


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll until `predicate()` is truthy; its value, or AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


class Background:
    """Run `target` in a thread while the test does something else; `result()` joins it (bounded)
    and re-raises its exception, so a fault that was never injected fails the test."""

    def __init__(self, target: Callable[[], Any]) -> None:
        self._target = target
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._target()
        except BaseException as exc:  # handed to the test thread by result()
            self._error = exc

    def result(self, timeout: float = 30.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the background fault did not finish in time"
        if self._error is not None:
            raise self._error
        return self._value
