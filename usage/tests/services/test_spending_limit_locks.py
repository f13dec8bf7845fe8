"""Spending limits under real PostgreSQL locks: every writer of the running totals takes the
account's lock first (two orders would deadlock), and a reservation made before midnight still
counts after it."""

from __future__ import annotations

import importlib
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.db import connection, transaction
from django.utils import timezone

from pantheon import sql
from testing.factories import make_user
from usage import sql as usage_sql
from usage.models import LlmCallEvent, SpendingLimit, SpendTotal
from usage.services import (
    CallRecord,
    SpendingLimitReached,
    account_for_update,
    call_event_build,
    call_event_record,
    credits_reserve,
)
from usage.services.limits import spend_totals_add
from usage.tests.builders import SONNET, grant

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def pricing_v1() -> None:
    """Transactional tests start from a flushed database: load the v1 prices as the data
    migration does."""
    migration = importlib.import_module("usage.migrations.0002_pricing_v1")
    migration.load_v1(django_apps, None)


def _call(key: str, tokens: int = 1_000) -> CallRecord:
    return CallRecord(
        purpose="agent_reply",
        provider="test",
        model_id=SONNET,
        status="ok",
        started_at=timezone.now(),
        latency_ms=1,
        time_to_first_token_ms=1,
        prompt_tokens=tokens,
        completion_tokens=tokens,
        usage_source="provider",
        generation_id=None,
        idempotency_key=key,
    )


def test_the_one_statement_write_and_an_orm_writer_never_deadlock() -> None:
    user = make_user()
    grant(user, 10**10)
    first = call_event_record(user=user, reservation=None, call=_call("first"))  # rows exist
    errors: list[BaseException] = []
    holding = threading.Event()

    def orm_writer() -> None:
        # As a summary's record or a refund does: the account's lock, then the totals.
        try:
            with transaction.atomic():
                account_for_update(user)
                holding.set()
                time.sleep(0.5)  # the statement below starts meanwhile
                spend_totals_add(event=first, amount_micro=1)
        except BaseException as exc:  # collected, asserted on below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=orm_writer)
    thread.start()
    assert holding.wait(5)
    event = call_event_build(user_id=user.pk, call=_call("second"))
    try:
        # A turn's one-statement write of a call of the same user, while the lock is held.
        sql.run(
            usage_sql.record_ctes(event=event, reservation_id=None, now=timezone.now()), "SELECT 1"
        )
    except BaseException as exc:
        errors.append(exc)
    thread.join(10)
    assert errors == []
    day = SpendTotal.objects.get(scope="user", window="day")
    assert day.burned_micro == first.credits_burned + 1 + event.credits_burned
    assert LlmCallEvent.objects.count() == 2


def test_a_reservation_made_before_midnight_still_counts_after_it(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    grant(user, 10**10)
    before_midnight = datetime(2026, 12, 4, 23, 59, 59, tzinfo=UTC)
    monkeypatch.setattr(timezone, "now", lambda: before_midnight)
    held = credits_reserve(
        user=user,
        model_id=SONNET,
        estimated_input_tokens=1_000,
        output_reserve=500,
        purpose="agent_reply",
    )
    SpendingLimit.objects.create(
        user=user, scope="user", window="day", limit_micro=held.amount_micro * 3 // 2
    )
    after = before_midnight + timedelta(seconds=2)
    monkeypatch.setattr(timezone, "now", lambda: after)
    # Its call may burn in the new day: the new day's check counts it.
    with pytest.raises(SpendingLimitReached) as refused:
        credits_reserve(
            user=user,
            model_id=SONNET,
            estimated_input_tokens=1_000,
            output_reserve=500,
            purpose="agent_reply",
        )
    details: dict[str, Any] = refused.value.details
    assert details["spent"] == "0.000000"
    assert details["reserved"] == f"{held.amount_micro / 1e6:.6f}"
    assert details["resets_at"] == "2026-12-06T00:00:00Z"
