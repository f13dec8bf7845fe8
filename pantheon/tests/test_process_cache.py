"""The one implementation of "a value loaded per process and reloaded after N seconds"
(`pantheon.process_cache`), on the test clock: no sleeping, no database."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from pantheon.process_cache import ProcessCache, ProcessValue, clear_process_caches
from testing.clock import ProcessClock


@pytest.fixture
def loads(settings: Any) -> Counter[str]:
    settings.TEST_CACHE_SECONDS = 10
    return Counter()


def counting_cache(loads: Counter[str], **options: Any) -> ProcessCache[str, str]:
    def load(key: str) -> str:
        loads[key] += 1
        return f"{key}#{loads[key]}"

    return ProcessCache(load=load, seconds_setting="TEST_CACHE_SECONDS", **options)


def test_a_value_is_reloaded_once_older_than_the_bound(
    loads: Counter[str], process_clock: ProcessClock
) -> None:
    cache = counting_cache(loads)
    assert cache.get("a") == "a#1"
    process_clock.advance(9.99)
    assert cache.get("a") == "a#1"
    process_clock.advance(0.01)
    assert cache.get("a") == "a#2"
    assert cache.get("b") == "b#1"  # keys age apart


def test_zero_seconds_turns_the_cache_off(loads: Counter[str], settings: Any) -> None:
    settings.TEST_CACHE_SECONDS = 0
    cache = counting_cache(loads)
    assert [cache.get("a") for _ in range(3)] == ["a#1", "a#2", "a#3"]


def test_clearing_forgets_every_cache(loads: Counter[str]) -> None:
    def load_table() -> int:
        loads["table"] += 1
        return loads["table"]

    cache = counting_cache(loads)
    table = ProcessValue(load=load_table, seconds_setting="TEST_CACHE_SECONDS")
    assert (cache.get("a"), table.get(), table.get()) == ("a#1", 1, 1)
    clear_process_caches()
    assert (cache.get("a"), table.get()) == ("a#2", 2)


def test_a_keyed_cache_never_holds_more_than_its_bound(
    loads: Counter[str], process_clock: ProcessClock
) -> None:
    cache = counting_cache(loads, max_entries=3)
    for key in "abc":
        cache.get(key)
    cache.get("d")  # nothing expired: the oldest stored value ("a") makes room
    assert cache.get("b") == "b#1" and cache.get("a") == "a#2"
    process_clock.advance(10)
    cache.get("e")  # everything stored has expired: all of it goes at once
    assert cache.get("c") == "c#2"


def test_a_slow_load_never_replaces_a_fresher_value(
    loads: Counter[str], process_clock: ProcessClock
) -> None:
    """A load that started earlier but finished later keeps the fresher value in place."""
    slow_started, slow_may_finish = threading.Event(), threading.Event()
    values = iter(["old", "new"])

    def load(key: str) -> str:
        value = next(values)
        if value == "old":
            slow_started.set()
            slow_may_finish.wait(5)
        return value

    cache: ProcessCache[str, str] = ProcessCache(load=load, seconds_setting="TEST_CACHE_SECONDS")
    slow = threading.Thread(target=cache.get, args=("k",))
    slow.start()
    assert slow_started.wait(5)
    process_clock.advance(1)
    assert cache.get("k") == "new"  # started later, stored first
    slow_may_finish.set()
    slow.join(5)
    assert cache.get("k") == "new"


def test_threads_read_one_value_while_it_is_fresh(loads: Counter[str]) -> None:
    cache = counting_cache(loads)
    cache.get("a")
    seen: list[str] = []

    def read() -> None:
        seen.extend(cache.get("a") for _ in range(200))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert set(seen) == {"a#1"} and len(seen) == 1_600
    assert loads["a"] == 1
