"""Operator commands of the sessions app: backfill_usage, summarize_pending."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from sessions.models import Message, SessionSummary, Turn
from sessions.tests.builders import GOOD_SUMMARY, SUMMARY_MODEL, single_agent
from testing.stub_llm import StubReply
from usage.models import LedgerEntry, LlmCallEvent

pytestmark = pytest.mark.postgres


def _unmetered_turn(s) -> Turn:  # type: ignore[no-untyped-def]
    """A turn as an earlier prototype left them, before its calls were metered: replies stored,
    no llm_call_events."""
    s.session.refresh_from_db()
    s.session.turn_counter += 1
    s.session.save(update_fields=["turn_counter"])
    turn = Turn.objects.create(
        session=s.session,
        turn_index=s.session.turn_counter,
        mode="manual",
        user_input="what now?",
        status="completed",
    )
    Message.objects.create(
        session=s.session, turn=turn, sequence=0, role="user", content="what now?"
    )
    Message.objects.create(
        session=s.session,
        turn=turn,
        sequence=1,
        role="assistant",
        agent=s.agent,
        content="a reply that was never metered",
    )
    return turn


def test_backfill_usage_meters_unmetered_turns_once(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    assert s.post("a metered turn").status_code == 201
    bare = [_unmetered_turn(s), _unmetered_turn(s)]
    metered_before = LlmCallEvent.objects.count()

    out = io.StringIO()
    call_command("backfill_usage", "--dry-run", stdout=out)
    assert "would write 2 events" in out.getvalue()
    assert LlmCallEvent.objects.count() == metered_before

    call_command("backfill_usage", "--batch-size", "1", stdout=io.StringIO())
    events = LlmCallEvent.objects.filter(turn_id__in=[t.id for t in bare])
    assert events.count() == 2
    assert {e.usage_source for e in events} == {"estimated"}
    assert all(e.credits_burned > 0 for e in events)
    assert LedgerEntry.objects.filter(kind="burn", event__in=events).count() == 2

    out = io.StringIO()
    call_command("backfill_usage", stdout=out)
    assert "wrote 0 events" in out.getvalue()
    out = io.StringIO()
    call_command("verify_ledger", stdout=out)
    assert out.getvalue().strip().splitlines()[-1] == "ledger ok"


def test_summarize_pending_runs_them_inline(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent(model_id="openai/gpt-4o")
    for i in range(3):
        assert s.post(f"question {i}").status_code == 201
    summary = SessionSummary.objects.create(
        session=s.session, last_turn_covered=2, status="pending", model=SUMMARY_MODEL
    )
    out = io.StringIO()
    call_command("summarize_pending", "--dry-run", stdout=out)
    assert f"would summarize {summary.id}" in out.getvalue()
    summary.refresh_from_db()
    assert summary.status == "pending"
    llm_stub.enqueue(StubReply(json=GOOD_SUMMARY), model=SUMMARY_MODEL)
    out = io.StringIO()
    call_command("summarize_pending", stdout=out)
    summary.refresh_from_db()
    assert summary.status == "ready"
    assert "ready 1" in out.getvalue()
