"""A test clock for the per-process caches: time stands still until the test moves it.

The `process_clock` fixture freezes the clock the caches read (`pantheon.process_cache.monotonic`)
and Django's `timezone.now` at the moment the fixture starts; `advance(seconds)` moves both. So a
test says "31 seconds later" and the caches expire, prices come into force and keys expire,
without sleeping and without a race against the real clock at a boundary."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from pantheon import process_cache


class ProcessClock:
    """Frozen monotonic and wall clocks, moved together by `advance`."""

    def __init__(self) -> None:
        self._monotonic = time.monotonic()
        self._now = timezone.now()

    def monotonic(self) -> float:
        return self._monotonic

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass (a fraction of a second too)."""
        self._monotonic += seconds
        self._now += timedelta(seconds=seconds)


@pytest.fixture
def process_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProcessClock]:
    """A `ProcessClock` the caches and `timezone.now()` follow for the test's duration."""
    clock = ProcessClock()
    monkeypatch.setattr(process_cache, "monotonic", clock.monotonic)
    monkeypatch.setattr(timezone, "now", clock.now)
    yield clock
