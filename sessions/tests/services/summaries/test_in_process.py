"""No broker (an empty CELERY_BROKER_URL, the zero-setup first run): `summary_enqueue` writes the
summary in this process, in a thread of its own started after the commit — never inside the
transaction that wrote the pending row, never on the turn's time — and nothing touches a broker.
The summarizer is the stub LLM over real HTTP; the thread's database connection is its own, and
is closed when it ends, error or not."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from django.db import connections, transaction

from pantheon.celery import app as celery_app
from sessions.models import SessionSummary
from sessions.services.summaries import requests as summary_requests_module
from sessions.services.summaries import summary_enqueue
from sessions.tests.builders import (
    AGENT_MODEL,
    GOOD_SUMMARY,
    SUMMARY_MODEL,
    run_turns,
    single_agent,
    summary_requests,
)
from testing.stub_llm import StubReply

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.timeout(60),
]

SUMMARIZER_DELAY_S = 2.0  # the summarizer answers this late: the turn must not wait for it


@pytest.fixture
def no_broker(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.CELERY_BROKER_URL = ""
    settings.CELERY_TASK_ALWAYS_EAGER = False

    def no_connection(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("no broker: nothing may connect to one")

    monkeypatch.setattr(celery_app, "connection_for_write", no_connection)
    monkeypatch.setattr(celery_app, "send_task", no_connection)


def _summary_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("summary-")]


def _join_summary_threads() -> None:
    for thread in _summary_threads():
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_the_eighth_turn_answers_at_once_and_the_summary_follows(no_broker, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent(model_id=AGENT_MODEL)
    llm_stub.enqueue(StubReply(json=GOOD_SUMMARY, delay=SUMMARIZER_DELAY_S), model=SUMMARY_MODEL)
    bodies = run_turns(s, 8)  # turn 8 asks for a summary of turns 1-3

    assert "summary_requested" in bodies[-1]["context"][0]["actions"]
    # The turn has answered while the summarizer is still thinking: not on the turn's time.
    summary = SessionSummary.objects.get(session=s.session)
    assert summary.status in {"pending", "running"}
    assert [t.is_alive() for t in _summary_threads()] == [True]

    _join_summary_threads()
    summary.refresh_from_db()
    assert summary.status == "ready" and summary.last_turn_covered == 3
    assert summary.summary_text == GOOD_SUMMARY["summary_text"]
    assert len(summary_requests(llm_stub)) == 1
    api = s.client.get(f"/api/v1/sessions/{s.session.id}/summary").json()
    assert api["status"] == "ready" and api["decisions"] == GOOD_SUMMARY["decisions"]


def test_nothing_starts_inside_the_transaction_only_after_its_commit(no_broker, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent(model_id=AGENT_MODEL)
    run_turns(s, 2)
    llm_stub.enqueue(StubReply(json=GOOD_SUMMARY), model=SUMMARY_MODEL)

    with transaction.atomic():
        # As in a turn: the pending row and its enqueue in one transaction. A thread started
        # now would look for a row that its own connection cannot see yet.
        summary = SessionSummary.objects.create(
            session=s.session, last_turn_covered=1, status="pending", model=SUMMARY_MODEL
        )
        assert summary_enqueue(summary.id) is True
        assert _summary_threads() == []
        assert summary_requests(llm_stub) == []

    assert len(_summary_threads()) <= 1  # started by the commit (it may have finished already)
    _join_summary_threads()
    summary.refresh_from_db()
    assert summary.status == "ready"
    assert len(summary_requests(llm_stub)) == 1


def test_a_rolled_back_transaction_starts_nothing(no_broker, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent(model_id=AGENT_MODEL)
    run_turns(s, 2)

    with pytest.raises(RuntimeError), transaction.atomic():
        summary = SessionSummary.objects.create(
            session=s.session, last_turn_covered=1, status="pending", model=SUMMARY_MODEL
        )
        summary_enqueue(summary.id)
        raise RuntimeError("the turn failed")

    assert _summary_threads() == []
    assert not SessionSummary.objects.exists()
    assert summary_requests(llm_stub) == []


def test_an_error_in_the_thread_is_logged_and_its_connection_closed(  # type: ignore[no-untyped-def]
    no_broker, llm_stub, monkeypatch, caplog
) -> None:
    s = single_agent(model_id=AGENT_MODEL)
    run_turns(s, 2)
    summary = SessionSummary.objects.create(
        session=s.session, last_turn_covered=1, status="pending", model=SUMMARY_MODEL
    )
    seen: dict[str, Any] = {}

    def broken_generate(*, summary_id: Any) -> str:
        # The thread's own connection (Django's are per thread), opened by a query.
        seen["connection"] = connections["default"]
        seen["main"] = threading.current_thread() is threading.main_thread()
        SessionSummary.objects.filter(pk=summary_id).exists()
        raise RuntimeError("summarizer bug")

    escaped: list[Any] = []
    monkeypatch.setattr(summary_requests_module, "summary_generate", broken_generate)
    monkeypatch.setattr(threading, "excepthook", escaped.append)

    with caplog.at_level(logging.ERROR, logger="sessions.services.summaries.requests"):
        assert summary_enqueue(summary.id) is True  # outside a transaction: at once
        _join_summary_threads()

    assert seen["main"] is False
    assert seen["connection"] is not connections["default"]
    if seen["connection"].vendor != "sqlite":  # an in-memory SQLite test database never closes
        assert seen["connection"].connection is None
    assert escaped == []
    assert f"summary {summary.id} failed in-process" in caplog.text
    summary.refresh_from_db()
    assert summary.status == "pending"  # the durable record: summarize_pending picks it up


def test_health_reports_no_broker_as_unavailable_without_connecting(no_broker, api_client) -> None:  # type: ignore[no-untyped-def]
    response = api_client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "unavailable"}
