"""Structured session summaries: a real Celery worker on the real Redis broker, the sweep after a
broker outage, duplicate deliveries, invalid output, and the backfill command."""

from __future__ import annotations

import io
import os
import time

import pytest
from django.core.management import call_command

from pantheon.celery import app as celery_app
from sessions.models import SessionSummary
from sessions.services.summaries import summary_generate
from sessions.tasks import summarize_session, sweep_pending_summaries
from sessions.tests.builders import (
    AGENT_MODEL,
    GOOD_SUMMARY,
    SUMMARY_MODEL,
    roles_and_contents,
    run_turns,
    single_agent,
)
from testing.server import ROOT
from testing.stub_llm import StubReply
from usage.models import LlmCallEvent

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def _wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


@pytest.fixture(autouse=True)
def _artifacts() -> None:
    (ROOT / "artifacts").mkdir(exist_ok=True)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_worker_writes_the_summary_and_the_next_prompt_uses_it(worker, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent(model_id=AGENT_MODEL)
    llm_stub.enqueue(StubReply(json=GOOD_SUMMARY), model=SUMMARY_MODEL)
    bodies = run_turns(s, 8)  # turn 8 crosses the mandatory summary trigger
    assert "summary_requested" in bodies[-1]["context"][0]["actions"]
    _wait_for(lambda: SessionSummary.objects.filter(session=s.session, status="ready").exists())
    summary = SessionSummary.objects.get(session=s.session)
    assert summary.last_turn_covered == 3
    assert summary.summary_text == GOOD_SUMMARY["summary_text"]
    assert summary.key_facts == GOOD_SUMMARY["key_facts"]
    assert summary.action_items == GOOD_SUMMARY["action_items"]
    assert summary.model == SUMMARY_MODEL
    event = LlmCallEvent.objects.get(pk=summary.call_event_id)
    assert event.purpose == "summary" and event.user_id == s.user.id
    assert event.session_id == s.session.id and event.credits_burned > 0
    summary_request = next(r for r in llm_stub.requests if r.model == SUMMARY_MODEL)
    assert summary_request.body["response_format"]["type"] == "json_schema"
    assert "question 3 about the launch" in str(summary_request.body["messages"])
    assert "question 4 about the launch" not in str(summary_request.body["messages"])

    response = s.post("question 9 about the launch")
    assert response.status_code == 201
    sent = roles_and_contents(llm_stub.requests[-1])
    assert sent[1][0] == "system" and GOOD_SUMMARY["summary_text"] in sent[1][1]
    contents = " ".join(c for _, c in sent)
    for covered in (1, 2, 3):
        assert f"question {covered} about" not in contents
    for kept in (4, 5, 6, 7, 8, 9):
        assert f"question {kept} about" in contents
    api = s.client.get(f"/api/v1/sessions/{s.session.id}/summary").json()
    assert api["status"] == "ready" and api["last_turn_covered"] == 3
    assert api["decisions"] == GOOD_SUMMARY["decisions"]


def _switch_broker(url: str) -> None:
    """Point this process's producer at another broker URL. Kombu keeps one connection pool per
    URL, so switching back finds the original pool again, still open. Celery reads the
    CELERY_BROKER_URL environment variable before its configuration, so both are set."""
    os.environ["CELERY_BROKER_URL"] = url
    celery_app.conf.broker_url = url
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_broker_down_at_commit_then_the_sweep_completes_it(worker, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent(model_id=AGENT_MODEL)
    llm_stub.enqueue(StubReply(json=GOOD_SUMMARY), model=SUMMARY_MODEL)
    run_turns(s, 7)
    real_url = celery_app.connection_for_write().as_uri(include_password=True)
    _switch_broker("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        started = time.monotonic()
        response = s.post("question 8 about the launch")
        assert response.status_code == 201
        assert time.monotonic() - started < 15  # a down broker never stalls a request
    finally:
        _switch_broker(real_url)
    time.sleep(3)  # a worker would have had time; nothing reached it
    summary = SessionSummary.objects.get(session=s.session)
    assert summary.status == "pending"
    SessionSummary.objects.filter(pk=summary.pk).update(
        updated_at=summary.updated_at.replace(year=2020)
    )
    assert sweep_pending_summaries() == 1
    _wait_for(lambda: SessionSummary.objects.filter(pk=summary.pk, status="ready").exists())


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_duplicate_delivery_writes_one_summary_and_one_bill(worker, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent(model_id=AGENT_MODEL)
    run_turns(s, 5)
    summary = SessionSummary.objects.create(
        session=s.session, last_turn_covered=1, status="pending", model=SUMMARY_MODEL
    )
    llm_stub.enqueue(StubReply(json=GOOD_SUMMARY, delay=0.5), model=SUMMARY_MODEL, times=2)
    summarize_session.delay(str(summary.id))
    summarize_session.delay(str(summary.id))
    _wait_for(lambda: SessionSummary.objects.filter(pk=summary.pk, status="ready").exists())
    time.sleep(2)  # let the duplicate be processed too
    assert SessionSummary.objects.filter(session=s.session).count() == 1
    assert LlmCallEvent.objects.filter(session_id=s.session.id, purpose="summary").count() == 1
    assert len([r for r in llm_stub.requests if r.model == SUMMARY_MODEL]) == 1


def test_invalid_output_twice_fails_and_never_reaches_a_prompt(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent(model_id=AGENT_MODEL)
    run_turns(s, 5)
    summary = SessionSummary.objects.create(
        session=s.session, last_turn_covered=1, status="pending", model=SUMMARY_MODEL
    )
    bad = {**GOOD_SUMMARY, "key_facts": [{"text": "From the future.", "turns": [42]}]}
    llm_stub.enqueue(StubReply(json=bad), model=SUMMARY_MODEL, times=2)
    assert summary_generate(summary_id=summary.id) == "failed"
    summary.refresh_from_db()
    assert summary.status == "failed" and summary.error_code == "invalid_structured_output"
    requests = [r for r in llm_stub.requests if r.model == SUMMARY_MODEL]
    assert len(requests) == 2
    assert "turns [42]" in requests[1].body["messages"][-1]["content"]  # the corrective re-prompt
    assert LlmCallEvent.objects.filter(session_id=s.session.id, purpose="summary").count() == 2
    # Nothing of it is prompt content; the full history is.
    assert s.post("question 6 about the launch").status_code == 201
    contents = " ".join(c for _, c in roles_and_contents(llm_stub.requests[-1]))
    assert "From the future" not in contents and GOOD_SUMMARY["summary_text"] not in contents
    assert "question 1 about the launch" in contents


def test_backfill_dry_run_changes_nothing_and_twice_does_the_work_once(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent(model_id=AGENT_MODEL)
    run_turns(s, 6)  # below the mandatory turn: no summary yet
    assert not SessionSummary.objects.exists()
    out = io.StringIO()
    call_command("backfill_summaries", "--dry-run", stdout=out)
    assert "would summarize session" in out.getvalue()
    assert not SessionSummary.objects.exists()
    llm_stub.enqueue(StubReply(json=GOOD_SUMMARY), model=SUMMARY_MODEL)
    call_command("backfill_summaries", stdout=io.StringIO())
    summary = SessionSummary.objects.get(session=s.session)
    assert summary.status == "ready" and summary.last_turn_covered == 2
    calls = LlmCallEvent.objects.filter(purpose="summary").count()
    out = io.StringIO()
    call_command("backfill_summaries", stdout=out)
    assert "summarized 0" in out.getvalue()
    assert LlmCallEvent.objects.filter(purpose="summary").count() == calls == 1


def test_summary_endpoint_is_404_before_any_summary(db, llm_stub, other_client) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    url = f"/api/v1/sessions/{s.session.id}/summary"
    response = s.client.get(url)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    SessionSummary.objects.create(session=s.session, last_turn_covered=1, status="pending")
    assert s.client.get(url).json()["status"] == "pending"
    other, _ = other_client
    assert other.get(url).status_code == 404
