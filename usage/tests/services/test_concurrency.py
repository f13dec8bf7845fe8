"""Concurrent turns of one user never spend the same credits twice: real threads, real
PostgreSQL row locks."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.core.management import call_command
from django.db import connection

from testing.factories import make_user
from usage.models import CreditAccount, LedgerEntry, LlmCallEvent, Reservation
from usage.services import InsufficientCredits, credits_grant, credits_reserve
from usage.tests.builders import SONNET, grant, record

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def pricing_v1() -> None:
    """Transactional tests start from a flushed database: load the v1 prices exactly as the
    data migration does."""
    migration = importlib.import_module("usage.migrations.0002_pricing_v1")
    migration.load_v1(django_apps, None)


THREADS = 20
# Sonnet 4, 1,000 input / 500 output tokens: 1.1625 credits per reservation.
ONE_CALL = 1_162_500


def run_at_once(work: Callable[[int], Any], count: int = THREADS) -> list[Any]:
    """Run `work(i)` in `count` threads released together; each result or exception."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = work(i)
        except Exception as exc:  # collected and asserted on by the test
            results[i] = exc
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def reserve_one(user: Any) -> Callable[[int], Any]:
    def work(i: int) -> Any:
        return credits_reserve(
            user=user,
            model_id=SONNET,
            estimated_input_tokens=1_000,
            output_reserve=500,
            purpose="agent_reply",
        )

    return work


def test_twenty_concurrent_reservations_never_over_reserve() -> None:
    user = make_user()
    grant(user, ONE_CALL * 5 + ONE_CALL // 2)  # covers 5.5 reservations

    results = run_at_once(reserve_one(user))

    reserved = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if isinstance(r, InsufficientCredits)]
    assert len(reserved) == 5
    assert len(refused) == THREADS - 5
    account = CreditAccount.objects.get(user=user)
    assert account.reserved_micro == 5 * ONE_CALL
    assert account.available_micro == ONE_CALL // 2
    assert Reservation.objects.filter(account=account, status="active").count() == 5
    call_command("verify_ledger")


def test_concurrent_reserve_and_settle_keep_the_ledger_balanced() -> None:
    user = make_user()
    grant(user, 10_000_000)

    def work(i: int) -> Any:
        reservation = reserve_one(user)(i)
        return record(user, reservation=reservation, idempotency_key=f"concurrent:{i}")

    results = run_at_once(work)

    events = [r for r in results if isinstance(r, LlmCallEvent)]
    assert all(isinstance(r, LlmCallEvent | InsufficientCredits) for r in results), results
    account = CreditAccount.objects.get(user=user)
    assert account.reserved_micro == 0
    assert account.balance_micro == 10_000_000 - 3_090_000 * len(events)
    assert LedgerEntry.objects.filter(kind="burn").count() == len(events)
    # 10 credits admit at most 8 reservations of 1.1625 at once, and once calls settle at
    # 3.09 each the balance admits fewer, never more.
    assert 1 <= len(events) <= 8
    call_command("verify_ledger")


def test_the_same_call_recorded_concurrently_is_billed_once() -> None:
    user = make_user()
    grant(user, 10_000_000)

    results = run_at_once(lambda i: record(user, idempotency_key="one-call"), count=10)

    assert all(isinstance(r, LlmCallEvent) for r in results), results
    assert len({r.pk for r in results}) == 1
    assert LedgerEntry.objects.filter(kind="burn").count() == 1
    assert CreditAccount.objects.get(user=user).balance_micro == 10_000_000 - 3_090_000
    call_command("verify_ledger")


def test_concurrent_first_use_creates_one_account() -> None:
    user = make_user()

    results = run_at_once(
        lambda i: credits_grant(user=user, amount_micro=1_000_000, idempotency_key=f"g{i}"),
        count=10,
    )

    assert all(isinstance(r, LedgerEntry) for r in results), results
    account = CreditAccount.objects.get(user=user)
    assert account.balance_micro == 10_000_000
    assert sorted(e.balance_after_micro for e in results) == [n * 1_000_000 for n in range(1, 11)]
    call_command("verify_ledger")


def test_concurrent_refusals_for_a_user_without_account_raise_nothing_else() -> None:
    user = make_user()

    results = run_at_once(reserve_one(user), count=10)

    assert all(isinstance(r, InsufficientCredits) for r in results), results
