"""A Celery worker killed (SIGKILL) while the summarizer call is in flight, on a real worker,
the real Redis broker and the stub LLM holding the answer.

- The pool's child killed: the main process requeues the message (acks_late +
  reject_on_worker_lost); the redelivery finds the claim still running, waits out the claim's
  lease (SUMMARY_CLAIM_LEASE_SECONDS, short here) and retakes it.
- The whole worker killed: its message stays unacknowledged in Redis (until the broker's
  visibility timeout); once the lease has passed, the sweep (`manage.py summarize_pending`,
  the beat's job) retakes the summary.

Either way: one ready summary; the killed call reported no usage, so it is not billed — its
reservation is released when the claim is retaken — and the call that succeeded is billed
once; the ledger verifies clean.
"""

from __future__ import annotations

import io
import os
import signal
from typing import Any

import pytest
from django.core.management import call_command

from pantheon.celery import app as celery_app
from sessions.models import SessionSummary
from sessions.services.summaries import summaries_due
from sessions.tasks import summarize_session
from sessions.tests.builders import (
    AGENT_MODEL,
    GOOD_SUMMARY,
    SUMMARY_MODEL,
    Setup,
    run_turns,
    single_agent,
    summary_requests,
)
from testing.celery_worker import celery_worker
from testing.db_faults import wait_for
from testing.server import children
from testing.stub_llm import LlmStub, StubReply
from usage.models import CreditAccount, LedgerEntry, LlmCallEvent, Reservation

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(120)]

LEASE_S = 3  # the claim lease in these tests: a killed worker's summary is retaken after it


def _pending_summary(s: Setup) -> SessionSummary:
    run_turns(s, 5)
    return SessionSummary.objects.create(
        session=s.session, last_turn_covered=1, status="pending", model=SUMMARY_MODEL
    )


def _kill_once_the_call_is_in_flight(stub: LlmStub, pid: int, *, group: bool) -> None:
    wait_for(lambda: summary_requests(stub), timeout=30)
    if group:
        os.killpg(pid, signal.SIGKILL)
    else:
        os.kill(pid, signal.SIGKILL)


def _assert_ready_once_billed_once(s: Setup, summary: SessionSummary, balance_before: int) -> None:
    summary.refresh_from_db()
    assert summary.status == "ready" and summary.summary_text == GOOD_SUMMARY["summary_text"]
    assert summary.attempts == 2  # the killed claim, then the one that finished
    assert SessionSummary.objects.filter(session=s.session).count() == 1
    events = list(LlmCallEvent.objects.filter(session_id=s.session.id, purpose="summary"))
    assert [e.id for e in events] == [summary.call_event_id]  # the killed call: no event
    burns = list(LedgerEntry.objects.filter(event=events[0], kind="burn"))
    assert [b.amount_micro for b in burns] == [-events[0].credits_burned]
    reservations = Reservation.objects.filter(session_id=s.session.id, purpose="summary")
    assert sorted(r.status for r in reservations) == ["released", "settled"]
    account = CreditAccount.objects.get(user=s.user)
    assert account.balance_micro == balance_before - events[0].credits_burned
    assert account.reserved_micro == 0
    out = io.StringIO()
    call_command("verify_ledger", stdout=out)
    assert "ledger ok" in out.getvalue()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_pool_child_killed_mid_summary_the_redelivery_finishes_it_once(
    llm_stub: LlmStub,
) -> None:
    s = single_agent(model_id=AGENT_MODEL)
    summary = _pending_summary(s)
    balance_before = CreditAccount.objects.get(user=s.user).balance_micro
    llm_stub.enqueue(StubReply(hang=True), model=SUMMARY_MODEL)  # held until the child dies
    llm_stub.enqueue(StubReply(json=GOOD_SUMMARY), model=SUMMARY_MODEL)
    env = {"SUMMARY_CLAIM_LEASE_SECONDS": str(LEASE_S)}
    with celery_worker(llm_stub, pool="prefork", env=env) as process:
        summarize_session.delay(str(summary.id))
        (child,) = wait_for(lambda: children(process.pid))
        _kill_once_the_call_is_in_flight(llm_stub, child, group=False)
        wait_for(
            lambda: SessionSummary.objects.filter(pk=summary.pk, status="ready").exists(),
            timeout=60,
        )
        assert process.poll() is None  # the worker itself lived on, with a new child
    first, second = summary_requests(llm_stub)
    assert first.disconnected  # the killed child's call, cut off
    assert not second.disconnected
    _assert_ready_once_billed_once(s, summary, balance_before)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_whole_worker_killed_mid_summary_the_sweep_retakes_it_after_the_lease(
    llm_stub: LlmStub, settings: Any
) -> None:
    settings.SUMMARY_CLAIM_LEASE_SECONDS = LEASE_S
    s = single_agent(model_id=AGENT_MODEL)
    summary = _pending_summary(s)
    balance_before = CreditAccount.objects.get(user=s.user).balance_micro
    llm_stub.enqueue(StubReply(hang=True), model=SUMMARY_MODEL)
    llm_stub.enqueue(StubReply(json=GOOD_SUMMARY), model=SUMMARY_MODEL)
    with celery_worker(llm_stub, pool="prefork") as process:
        summarize_session.delay(str(summary.id))
        _kill_once_the_call_is_in_flight(llm_stub, process.pid, group=True)
        assert process.wait(timeout=10) == -signal.SIGKILL
    summary.refresh_from_db()
    assert summary.status == "running"  # claimed by a worker that no longer exists
    wait_for(lambda: summaries_due(older_than_seconds=0), timeout=LEASE_S + 10, interval=0.2)
    out = io.StringIO()
    call_command("summarize_pending", stdout=out)
    assert "ready 1" in out.getvalue()
    first, second = summary_requests(llm_stub)
    assert first.disconnected
    assert not second.disconnected
    _assert_ready_once_billed_once(s, summary, balance_before)
    celery_app.control.purge()
