"""accounts.services under concurrency (real PostgreSQL row locks and unique constraints)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.services import api_key_create, api_key_rotate, user_get_or_create_for_subject
from pantheon.api.exceptions import http_status_of
from pantheon.errors import ApplicationError
from testing import factories


def run_concurrently(target: Callable[[], Any], times: int = 2) -> list[Any]:
    """Run `target` in `times` threads released together; each result or exception is kept."""
    barrier = threading.Barrier(times)
    results: list[Any] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait(5)
            outcome: Any = target()
        except Exception as exc:
            outcome = exc
        finally:
            connection.close()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_rotations_issue_exactly_one_successor() -> None:
    user = factories.make_user()
    api_key = api_key_create(user=user, name="shared").api_key

    results = run_concurrently(lambda: api_key_rotate(api_key=api_key, grace=timedelta(hours=1)))

    successes = [r for r in results if not isinstance(r, Exception)]
    failures = [r for r in results if isinstance(r, Exception)]
    assert len(successes) == 1
    assert len(failures) == 1 and isinstance(failures[0], ApplicationError)
    assert http_status_of(failures[0].code) == 409
    assert ApiKey.objects.filter(predecessor=api_key).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_first_sight_of_a_subject_creates_one_user() -> None:
    results = run_concurrently(
        lambda: user_get_or_create_for_subject(subject="sub-123", email="sub@example.com"),
        times=4,
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len({r.pk for r in results}) == 1
    assert User.objects.filter(auth_subject="sub-123").count() == 1


@pytest.mark.django_db
def test_a_key_cannot_be_born_expired() -> None:
    user = factories.make_user()
    with pytest.raises(ApplicationError) as caught:
        api_key_create(user=user, name="x", expires_at=timezone.now() - timedelta(seconds=1))
    assert http_status_of(caught.value.code) == 400
    assert "expires_at" in caught.value.details
    assert not ApiKey.objects.exists()
