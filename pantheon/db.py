"""What to do when database connections are found lost (a server restart, a failover, a killed
backend). Imported by the settings (which connects the pool check below); Django's database
layer itself is imported only when used."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from django.db.backends.signals import connection_created
from psycopg_pool import ConnectionPool, PoolTimeout

if TYPE_CHECKING:
    from django.db.models import Model, QuerySet

logger = logging.getLogger(__name__)

# admin_shutdown (a killed backend), crash_shutdown, cannot_connect_now (starting or stopping).
_SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})


def pool_check(conn: psycopg.Connection[Any]) -> None:
    """The pool's check of a connection at checkout: one round trip.

    A dead idle connection rarely dies alone: after a restart every idle one is dead, and the
    pool's own check would find them one by one, backing off 1, 2, 4, 8 s between them, far
    longer than its checkout timeout. So the first dead one drains the pool: the others are
    replaced in the background and the request gets a fresh connection."""
    try:
        ConnectionPool.check_connection(conn)
    except Exception:
        logger.warning("a pooled database connection was found dead; draining the pool")
        _drain_pool()
        raise


def _install_pool_check(sender: Any, connection: Any, **kwargs: Any) -> None:
    """`connection_created` receiver: Django builds the pool with psycopg's stock check
    (CONN_HEALTH_CHECKS) and takes no other (OPTIONS["pool"]["check"] collides with its own
    argument), so ours replaces it once, on the pool's first connection."""
    pool = getattr(connection, "pool", None)
    if pool is not None and getattr(pool, "_check", None) is ConnectionPool.check_connection:
        pool._check = pool_check


connection_created.connect(_install_pool_check, dispatch_uid="pantheon.db.pool_check")


def connection_is_broken(exc: BaseException) -> bool:
    """`exc` (a database error) means the connection itself was lost: a killed backend, a
    server restart or shutdown, a network cut. Not a pool checkout timeout (the pool is busy,
    or cannot connect and is retrying on its own), a statement timeout, a deadlock or a
    serialization failure: those leave the connections usable."""
    from django.db import InterfaceError, connection

    raw = connection.connection
    if raw is not None and (raw.closed or raw.broken):
        return True
    cause = exc.__cause__ or exc
    if isinstance(cause, PoolTimeout):
        return False
    if isinstance(exc, InterfaceError):  # "connection already closed"
        return True
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate is None:  # no answer from the server at all: "server closed the connection"
        return isinstance(cause, psycopg.OperationalError)
    return sqlstate.startswith("08") or sqlstate in _SERVER_GONE


def connection_lost() -> None:
    """Give up this thread's broken connection and drain the pool of the idle ones that most
    likely died with it. Call it only when `connection_is_broken(exc)`: draining on an
    overload would make it worse."""
    from django.db import connection

    connection.close()  # a broken connection goes back to the pool, which discards it
    _drain_pool()


def _drain_pool() -> None:
    from django.db import connection

    pool = getattr(connection, "pool", None)  # None without a pool (SQLite, DATABASE_POOL off)
    if pool is not None:
        try:
            pool.drain()
        except Exception as exc:  # never turn an outage into another error
            logger.warning("could not drain the database pool: %s", type(exc).__name__)


_M = TypeVar("_M", bound="Model")


def pk_batches(queryset: QuerySet[_M], *, batch_size: int) -> Iterator[list[_M]]:
    """The rows of `queryset` in primary-key order, `batch_size` at a time, for backfills,
    checks and purges that walk a whole table.

    Each batch is one keyset query (`pk >` the previous batch's last pk), never OFFSET: a batch
    at the end of a large table costs what one at its start does, and deleting the rows already
    walked (a purge) shifts nothing. The queryset's own ordering is replaced; it must yield
    model instances (not `values()`). The next batch is read only once the caller asks for it."""
    last_pk = None
    while True:
        page = queryset.order_by("pk")
        if last_pk is not None:
            page = page.filter(pk__gt=last_pk)
        rows = list(page[:batch_size])
        if not rows:
            return
        yield rows
        last_pk = rows[-1].pk


class NetworkCallInTransaction(RuntimeError):
    """A network call (an LLM provider, a tool) was about to run inside a database transaction:
    it would hold row locks and a connection for seconds. A bug, never a client's fault."""


def refuse_network_call_in_transaction(what: str) -> None:
    """Raise NetworkCallInTransaction when this thread's connection is inside a transaction.
    The blocks Django's test cases open around each test (marked `_from_testcase`) do not count:
    they stand for the autocommit a real request runs in."""
    from django.db import connection

    if any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks):
        raise NetworkCallInTransaction(f"{what} inside a database transaction")
