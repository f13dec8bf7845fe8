"""Values loaded once per process and reloaded after a number of seconds.

The turn's hot path reads data that changes rarely or never — prices, the model catalog and its
providers, API-key lookups. Reading it from the database on every request costs round trips and
ORM work for answers that are almost always the same, so each process keeps what it loaded and
reloads it once it is older than the bound its setting names (README, "Freshness of cached
data"). A setting of 0 turns that cache off: every read loads.

One implementation for every such cache:

- The age of a value is counted from *before* its load started, so however long the load took,
  a value is never served past its bound; and a slow load that finishes after a newer one never
  replaces it.
- Requests run in threads: entries are written under a lock and read as a single dictionary
  look-up. Two threads that find the same entry stale may both load it (the later load wins);
  that costs one extra query at most once per bound, where a load under the lock would make
  every miss of every key wait for the slowest one.
- Time is read from `monotonic()` alone, so tests move it forward (`testing.clock`) instead of
  sleeping, and a wall-clock jump never expires or prolongs a value.
- Keyed caches hold at most `max_entries` values: a stream of made-up keys (say, random API-key
  ids) cannot grow a process without bound.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.conf import settings

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_caches: weakref.WeakSet[ProcessCache[Any, Any]] = weakref.WeakSet()
_caches_lock = threading.Lock()


def monotonic() -> float:
    """The clock every per-process cache reads (seconds, only differences mean anything)."""
    return time.monotonic()


def clear_process_caches() -> None:
    """Forget every value of every per-process cache: the next read of each loads again."""
    with _caches_lock:
        caches = list(_caches)
    for cache in caches:
        cache.clear()


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    value: V
    loaded_at: float


class ProcessCache(Generic[K, V]):
    """Values by key, each loaded by `load(key)` and reloaded once older than the number of
    seconds in the setting `seconds_setting` (read at every call, so a test or an operator
    changing it needs no restart)."""

    def __init__(
        self,
        *,
        load: Callable[[K], V],
        seconds_setting: str,
        max_entries: int = 10_000,
    ) -> None:
        self._load = load
        self.seconds_setting = seconds_setting
        self._max_entries = max_entries
        self._entries: dict[K, _Entry[V]] = {}
        self._lock = threading.Lock()
        with _caches_lock:
            _caches.add(self)

    @property
    def seconds(self) -> float:
        """How old a value may be when it is served; 0 (or less) turns the cache off."""
        return float(getattr(settings, self.seconds_setting))

    def get(self, key: K) -> V:
        """The value for `key`, loaded now when it is missing or older than the bound."""
        seconds = self.seconds
        if seconds <= 0:
            return self._load(key)
        started = monotonic()
        entry = self._entries.get(key)
        if entry is not None and started - entry.loaded_at < seconds:
            return entry.value
        value = self._load(key)
        self._store(key, _Entry(value, started), seconds=seconds)
        return value

    def clear(self) -> None:
        """Forget every value."""
        with self._lock:
            self._entries.clear()

    def _store(self, key: K, entry: _Entry[V], *, seconds: float) -> None:
        with self._lock:
            current = self._entries.get(key)
            if current is not None and current.loaded_at > entry.loaded_at:
                return  # a load that started later already stored a fresher value
            if current is None and len(self._entries) >= self._max_entries:
                self._make_room(now=entry.loaded_at, seconds=seconds)
            self._entries[key] = entry

    def _make_room(self, *, now: float, seconds: float) -> None:
        """Drop the expired values; when none has expired, the oldest stored one."""
        expired = [key for key, old in self._entries.items() if now - old.loaded_at >= seconds]
        for key in expired:
            del self._entries[key]
        if not expired:
            del self._entries[next(iter(self._entries))]


class ProcessValue(Generic[V]):
    """One value (a whole table) loaded by `load()`: a `ProcessCache` with a single key."""

    def __init__(self, *, load: Callable[[], V], seconds_setting: str) -> None:
        self._cache: ProcessCache[None, V] = ProcessCache(
            load=lambda _key: load(), seconds_setting=seconds_setting, max_entries=1
        )

    @property
    def seconds(self) -> float:
        """How old the value may be when it is served; 0 (or less) turns the cache off."""
        return self._cache.seconds

    def get(self) -> V:
        """The value, loaded now when it is missing or older than the bound."""
        return self._cache.get(None)

    def clear(self) -> None:
        """Forget the value."""
        self._cache.clear()
