"""Cancelling a running turn from any process.

A cancel is asked for through the API, which may reach any web process while another one runs
the turn. The request records it on the turn's row (when and by whom: staff see it) and, when
Redis is the cache (`REDIS_URL`), under a short-lived key. The process running the turn watches
with a timer — one thread per process for all the turns it runs, never a query per delta —
polling the keys (one Redis MGET per tick) or, without Redis, the rows (one query per tick, only
while turns run here). When it sees the cancel it calls the turn's `cancel()`, which closes the
provider connection itself: a provider that has not sent its first byte is stopped too.

A cancel counts for the run that was going when it was asked: a retry that runs the turn again
clears it first (`turn_cancel_clear`), so an old one never stops it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from sessions.models import Turn, TurnStatus

logger = logging.getLogger(__name__)

# How often the watch looks: the cancel stops a call within about a second.
POLL_SECONDS_REDIS = 0.25
POLL_SECONDS_DATABASE = 0.5
# With Redis, the rows are read too every this many ticks (2 s): a cancel asked while Redis did
# not answer is recorded on the row only.
ROWS_TOO_EVERY_TICKS = 8


def _key(turn_id: UUID) -> str:
    return f"turn-cancel:{turn_id}"


def _redis_shared() -> bool:
    """Whether the cache is Redis, shared by every process (else each has its own memory)."""
    return bool(settings.REDIS_URL)


def turn_cancel_request(*, turn: Turn, by: str) -> bool:
    """Ask the process running `turn` to stop it. False when the turn is not running (it ended
    meanwhile); the ask is recorded on the row either way it succeeds."""
    now = timezone.now()
    asked = Turn.objects.filter(pk=turn.pk, status=TurnStatus.RUNNING).update(
        cancel_requested_at=now, cancel_requested_by=by[:200]
    )
    if not asked:
        return False
    turn.cancel_requested_at, turn.cancel_requested_by = now, by[:200]
    if _redis_shared():
        try:
            cache.set(_key(turn.pk), now.timestamp(), timeout=settings.TURN_STALE_AFTER_SECONDS)
        except Exception:  # Redis down: the row carries it, polled only as a fallback
            logger.warning("could not publish the cancel of turn %s to Redis", turn.pk)
    return True


def turn_cancel_clear(turn: Turn) -> None:
    """Forget a cancel of the turn's previous run (in the caller's transaction, with the row the
    caller saves): a retry starts a new run."""
    turn.cancel_requested_at, turn.cancel_requested_by = None, ""
    if _redis_shared():
        try:
            cache.delete(_key(turn.pk))
        except Exception:  # Redis down: nothing there can be polled either
            logger.warning("could not clear the cancel of turn %s in Redis", turn.pk)


class CancelWatch:
    """The process's watch over the turns it runs (started on first use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._turns: dict[UUID, Callable[[], None]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, turn_id: UUID, on_cancel: Callable[[], None]) -> None:
        with self._lock:
            self._turns[turn_id] = on_cancel
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="turn-cancel-watch", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def remove(self, turn_id: UUID) -> None:
        with self._lock:
            self._turns.pop(turn_id, None)

    def _run(self) -> None:
        tick = 0
        while True:
            with self._lock:
                watched = dict(self._turns)
            if not watched:
                self._wake.wait(timeout=5.0)
                self._wake.clear()
                continue
            tick += 1
            try:
                # In Redis mode the rows are read too now and then: a cancel asked while Redis
                # did not answer is only on the row, and Redis may be back since.
                rows_too = tick % ROWS_TOO_EVERY_TICKS == 0
                for turn_id in _cancelled(list(watched), rows_too=rows_too):
                    self.remove(turn_id)
                    watched[turn_id]()
            except Exception:  # keep watching: a failed poll is retried on the next tick
                logger.exception("the cancel watch could not poll")
            finally:
                connection.close()  # a polled row's connection goes back to the pool
            time.sleep(POLL_SECONDS_REDIS if _redis_shared() else POLL_SECONDS_DATABASE)


def _cancelled(turn_ids: list[UUID], *, rows_too: bool = False) -> list[UUID]:
    """The turns asked to stop: through Redis when it is the cache (and answers), else — and
    with `rows_too` — their rows."""
    asked = _asked_in_redis(turn_ids) if _redis_shared() else None
    if asked is None:
        return _asked_in_rows(turn_ids)
    if rows_too:
        return list(dict.fromkeys([*asked, *_asked_in_rows(turn_ids)]))
    return asked


def _asked_in_redis(turn_ids: list[UUID]) -> list[UUID] | None:
    try:
        found: dict[str, Any] = cache.get_many([_key(t) for t in turn_ids])
    except Exception:  # Redis down: the rows tell
        return None
    return [t for t in turn_ids if _key(t) in found]


def _asked_in_rows(turn_ids: list[UUID]) -> list[UUID]:
    return list(
        Turn.objects.filter(pk__in=turn_ids, cancel_requested_at__isnull=False).values_list(
            "pk", flat=True
        )
    )


_watch = CancelWatch()


@contextlib.contextmanager
def cancel_watch(turn_id: UUID, on_cancel: Callable[[], None]) -> Iterator[None]:
    """Within the block, a cancel asked for `turn_id` calls `on_cancel` (once)."""
    _watch.add(turn_id, on_cancel)
    try:
        yield
    finally:
        _watch.remove(turn_id)
