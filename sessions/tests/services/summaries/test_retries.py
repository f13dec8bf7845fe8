"""A summary whose provider call fails: billed for what the provider reported, its reservation
settled (or released when no request was sent), its row back to `pending` — all committed
before the task asks for a retry — and then retried with backoff by a real Celery worker on the
real Redis broker, against the stub LLM over HTTP, until it is ready."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command

from llm.models import ModelConfig, Provider
from sessions.models import SessionSummary
from sessions.services.summaries import SummaryRetryable, summary_generate
from sessions.tasks import SUMMARY_MAX_RETRIES, retry_ceiling, retry_countdown, summarize_session
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
from testing.clock import ProcessClock
from testing.db_faults import wait_for
from testing.stub_llm import LlmStub, StubReply
from usage.models import CreditAccount, LedgerEntry, LlmCallEvent, Reservation

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(120)]

# The worker under test: one provider answer per call (no gateway retries), a short read timeout
# for the hung call, and a short retry backoff so the test waits well under a second.
RETRY_ENV = {
    "LLM_MAX_RETRIES": "0",
    "LLM_READ_TIMEOUT_SECONDS": "1.5",
    "SUMMARY_RETRY_BASE_SECONDS": "0.3",
}


def _pending_summary(s: Setup) -> SessionSummary:
    run_turns(s, 5)
    return SessionSummary.objects.create(
        session=s.session, last_turn_covered=1, status="pending", model=SUMMARY_MODEL
    )


def _summary_reservations(s: Setup) -> list[tuple[str, Any]]:
    reservations = Reservation.objects.filter(session_id=s.session.id, purpose="summary")
    return sorted((r.status, r.event_id) for r in reservations)


def _assert_ledger_ok() -> None:
    out = io.StringIO()
    call_command("verify_ledger", stdout=out)
    assert "ledger ok" in out.getvalue()


def _assert_failed_attempt_committed(
    s: Setup, summary: SessionSummary, status: str, code: str
) -> None:
    """While the retry's call is in flight: the failed attempt's event (unbilled: the provider
    reported no usage) and the settlement of its reservation are committed, and so was the row's
    return to `pending` — the retry could claim it (a running claim is only retaken after the
    360 s lease) and the failed attempt's error code is still on it."""
    (failed,) = LlmCallEvent.objects.filter(session_id=s.session.id, purpose="summary")
    assert (failed.status, failed.error_code) == (status, code)
    assert failed.credits_burned == 0
    assert not LedgerEntry.objects.filter(event=failed).exists()
    # Settled with the failed call's event; the other is the retry's own, for its call in flight.
    assert _summary_reservations(s) == sorted([("settled", failed.id), ("active", None)])
    summary.refresh_from_db()
    assert (summary.status, summary.attempts, summary.error_code) == ("running", 2, code)


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (StubReply(status=503), "error", "llm_provider_error"),
        (StubReply(hang=True), "timeout", "llm_timeout"),
    ],
    ids=["provider-5xx", "provider-timeout"],
)
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_failed_call_is_kept_and_the_worker_retry_finishes_the_summary(
    llm_stub: LlmStub, failure: StubReply, status: str, code: str
) -> None:
    s = single_agent(model_id=AGENT_MODEL)
    summary = _pending_summary(s)
    balance_before = CreditAccount.objects.get(user=s.user).balance_micro
    llm_stub.enqueue(failure, model=SUMMARY_MODEL)
    # The retry's answer is held a moment (within the read timeout), so the state between the
    # attempts can be read.
    llm_stub.enqueue(StubReply(json=GOOD_SUMMARY, delay=0.7), model=SUMMARY_MODEL)
    with celery_worker(llm_stub, env=RETRY_ENV):
        summarize_session.delay(str(summary.id))
        wait_for(lambda: len(summary_requests(llm_stub)) == 2, timeout=30)
        _assert_failed_attempt_committed(s, summary, status, code)
        wait_for(
            lambda: SessionSummary.objects.filter(pk=summary.pk, status="ready").exists(),
            timeout=30,
        )
    summary.refresh_from_db()
    assert summary.summary_text == GOOD_SUMMARY["summary_text"] and summary.error_code == ""
    assert len(summary_requests(llm_stub)) == 2  # the failure, then the retry that finished
    failed, ok = LlmCallEvent.objects.filter(session_id=s.session.id, purpose="summary").order_by(
        "created_at"
    )
    assert (failed.status, ok.status) == (status, "ok") and summary.call_event_id == ok.id
    assert ok.credits_burned > 0
    assert _summary_reservations(s) == sorted([("settled", failed.id), ("settled", ok.id)])
    account = CreditAccount.objects.get(user=s.user)
    assert account.reserved_micro == 0
    assert account.balance_micro == balance_before - ok.credits_burned
    _assert_ledger_ok()


def test_unusable_provider_releases_the_reservation_and_leaves_the_summary_pending(
    db: None, llm_stub: LlmStub, process_clock: ProcessClock
) -> None:
    s = single_agent(model_id=AGENT_MODEL)
    summary = _pending_summary(s)
    provider = Provider.objects.create(name="summarizer", base_url=llm_stub.url, is_active=False)
    ModelConfig.objects.filter(pk=SUMMARY_MODEL).update(provider=provider)
    with pytest.raises(SummaryRetryable):
        summary_generate(summary_id=summary.id)
    summary.refresh_from_db()
    assert (summary.status, summary.error_code) == ("pending", "llm_provider_error")
    assert not summary_requests(llm_stub)  # no request was sent: nothing recorded or billed
    assert not LlmCallEvent.objects.filter(purpose="summary").exists()
    assert _summary_reservations(s) == [("released", None)]
    assert CreditAccount.objects.get(user=s.user).reserved_micro == 0
    Provider.objects.filter(pk=provider.pk).update(is_active=True)  # the operator fixes it
    process_clock.advance(30)  # every worker sees it within CATALOG_CACHE_SECONDS
    llm_stub.enqueue(StubReply(json=GOOD_SUMMARY), model=SUMMARY_MODEL)
    assert summary_generate(summary_id=summary.id) == "ready"
    _assert_ledger_ok()


def test_backoff_first_retry_within_30s_and_every_one_below_the_visibility_timeout(
    settings: Any,
) -> None:
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    retries = range(SUMMARY_MAX_RETRIES + 1)
    settings.SUMMARY_RETRY_BASE_SECONDS = 5.0  # the production default
    ceilings = [retry_ceiling(n) for n in retries]
    assert ceilings[0] <= 30
    assert ceilings == sorted(ceilings) and ceilings[-1] > ceilings[0]  # it does back off
    assert all(c + settings.CELERY_TASK_TIME_LIMIT < visibility for c in ceilings)
    assert all(0 <= retry_countdown(0) <= ceilings[0] for _ in range(200))
    settings.SUMMARY_RETRY_BASE_SECONDS = 3600.0  # a misconfigured base breaks neither rule
    assert retry_ceiling(0) == 30
    assert all(retry_ceiling(n) + settings.CELERY_TASK_TIME_LIMIT < visibility for n in retries)
