"""Test-suite plumbing shared by every app.

The suite runs on PostgreSQL and Redis when they are reachable (the README's test command finds
them). Tests marked `postgres` or `redis` need the real service, and tests marked `browser` need
Debian's headless Chromium and its driver (`/usr/bin/chromium`, `/usr/bin/chromedriver`): without
them they are skipped, loudly — and under `CI=true` a missing service is a failure, never a skip.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from pantheon.process_cache import clear_process_caches
from testing import factories
from testing.celery_worker import worker  # noqa: F401  (a real Celery worker fixture)
from testing.clock import process_clock  # noqa: F401  (the clock the per-process caches read)
from testing.stub_llm import llm_stub  # noqa: F401  (the stub provider fixture)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _is_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def _redis_reachable() -> bool:
    url = settings.REDIS_URL or os.environ.get("CELERY_BROKER_URL", "")
    if not url:
        return False
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 0.5):
            return True
    except OSError:
        return False


def _browser_available() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return all(os.access(path, os.X_OK) for path in (CHROMIUM, CHROMEDRIVER))


_SKIPPED: dict[str, list[str]] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing: dict[str, str] = {}
    if not _is_postgres():
        missing["postgres"] = "DATABASE_URL is not PostgreSQL (row locks and concurrency untested)"
    if not _redis_reachable():
        missing["redis"] = "Redis is not reachable (REDIS_URL / CELERY_BROKER_URL)"
    if not _browser_available():
        missing["browser"] = (
            f"headless Chromium is missing ({CHROMIUM}, {CHROMEDRIVER} or selenium): "
            "apt-get install chromium chromium-driver"
        )
    if missing and IN_CI:
        raise pytest.UsageError(
            "CI=true but required services are missing: " + "; ".join(missing.values())
        )
    for item in items:
        for marker, reason in missing.items():
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=f"SKIPPED, {reason}"))
                _SKIPPED.setdefault(marker, []).append(item.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if not _SKIPPED:
        return
    tr = terminalreporter
    tr.section("SERVICES MISSING — TESTS SKIPPED", sep="!", red=True, bold=True)
    for marker, nodeids in _SKIPPED.items():
        tr.write_line(f"{len(nodeids)} tests need '{marker}' and did not run.", red=True)
    tr.write_line(
        "Start PostgreSQL and Redis (and install chromium and chromium-driver) and run the test "
        "command again for a full run."
    )


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """Close any connection pool opened before the test database exists (e.g. at collection):
    a pool keeps the name it was opened with, and the tests must run on test_<name>."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        conn.close()
        if hasattr(conn, "close_pool"):
            conn.close_pool()


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> None:
    """Every test starts with empty per-process caches (prices, catalog, API keys): what an
    earlier test loaded never answers for this one. A test that changes cached data after it
    was read moves `process_clock` past the cache's bound, as a running server would see it."""
    clear_process_caches()


@pytest.fixture(autouse=True)
def _generous_anonymous_rate(settings: Any) -> None:
    """The test client always comes from 127.0.0.1, and many tests send requests without
    credentials on purpose: the anonymous rate (per address) is raised for them. The tests of
    that throttle set their own rate."""
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**rates, "anon": "100000/min"},
    }


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def user(db):  # type: ignore[no-untyped-def]
    return factories.make_user()


@pytest.fixture
def owner_client(db) -> Iterator[tuple[APIClient, object]]:  # type: ignore[no-untyped-def]
    """A client authenticated as a fresh user with a real API key: (client, user)."""
    owner, key = factories.make_api_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    yield client, owner


@pytest.fixture
def other_client(db) -> Iterator[tuple[APIClient, object]]:  # type: ignore[no-untyped-def]
    """A second, unrelated user's authenticated client: (client, user)."""
    other, key = factories.make_api_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    yield client, other
