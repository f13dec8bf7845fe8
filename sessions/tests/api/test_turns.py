"""The single-agent turn pipeline through HTTP, against the stub provider, on PostgreSQL."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from accounts.services import api_key_create
from llm import tokenizer
from llm.gateway import ChatMessage
from llm.models import ModelConfig
from sessions import selectors
from sessions.models import (
    Message,
    SessionSummary,
    Turn,
    TurnContextAudit,
    TurnStatus,
)
from sessions.tests.builders import Setup, roles_and_contents, single_agent
from testing import factories
from testing.stub_llm import StubReply
from usage.models import LlmCallEvent, ModelPrice, PricingVersion

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("write_path")]


@pytest.fixture
def setup(db, llm_stub) -> Setup:  # type: ignore[no-untyped-def]
    return single_agent()


# --- the happy path --------------------------------------------------------------------------


def test_turn_runs_end_to_end(setup: Setup, llm_stub) -> None:  # type: ignore[no-untyped-def]
    llm_stub.enqueue(
        StubReply(text="Hello from the stub.", usage={"prompt_tokens": 21, "completion_tokens": 5})
    )
    response = setup.post("What do you think?")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["turn_index"] == 1
    assert body["status"] == "completed"
    assert body["session_id"] == str(setup.session.id)
    assert body["user_input"] == "What do you think?"
    assert body["assistant_output"] == "Ada: Hello from the stub."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    reply = body["messages"][1]
    assert reply["agent"] == {"id": str(setup.agent.id), "handle": "ada", "name": "Ada"}
    assert reply["content"] == "Hello from the stub." and reply["status"] == "ok"
    assert reply["error"] is None
    assert "routing" not in body
    assert body["context"][0]["agent"] == "ada"
    assert body["context"][0]["input_budget"] == 128_000 - 2048
    assert body["usage"]["input_tokens"] == 21 and body["usage"]["output_tokens"] == 5
    assert float(body["usage"]["credits_burned"]) > 0

    assert roles_and_contents(llm_stub.requests[0]) == [
        ("system", "You are Ada."),
        ("user", "What do you think?"),
    ]
    event = LlmCallEvent.objects.get(turn_id=body["id"])
    assert (event.purpose, event.status, event.usage_source) == ("agent_reply", "ok", "provider")
    audit = TurnContextAudit.objects.get(turn_id=body["id"])
    assert audit.provider_prompt_tokens == 21
    assert audit.call_event_id == event.id
    expected = tokenizer.count_message_tokens(
        [ChatMessage("system", "You are Ada."), ChatMessage("user", "What do you think?")]
    )
    assert audit.estimated_tokens_final == expected


def test_only_the_accept_header_asks_for_the_stream(setup: Setup, llm_stub) -> None:  # type: ignore[no-untyped-def]
    # DRF's `?format=` override is not a second switch (the schema documents `Accept` only).
    url = f"{setup.url}?format=sse"
    response = setup.client.post(url, {"input": "hi"}, format="json")
    assert response.status_code == 201 and response["Content-Type"] == "application/json"
    response = setup.client.post(
        url, {"input": "again"}, format="json", HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 201


def test_second_turn_sends_history_in_order(setup: Setup, llm_stub) -> None:  # type: ignore[no-untyped-def]
    llm_stub.enqueue(StubReply(text="first answer"))
    llm_stub.enqueue(StubReply(text="second answer"))
    assert setup.post("first question").status_code == 201
    response = setup.post("second question")
    assert response.json()["turn_index"] == 2
    assert roles_and_contents(llm_stub.requests[1]) == [
        ("system", "You are Ada."),
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "second question"),
    ]


def test_prompt_uses_ready_summary_and_only_uncovered_history(setup: Setup, llm_stub) -> None:  # type: ignore[no-untyped-def]
    for i in range(1, 4):
        llm_stub.enqueue(StubReply(text=f"answer {i}"))
        assert setup.post(f"question {i}").status_code == 201
    SessionSummary.objects.create(
        session=setup.session,
        last_turn_covered=2,
        status="ready",
        summary_text="They asked two questions.",
        key_facts=[{"text": "Two questions were asked.", "turns": [1, 2]}],
    )
    llm_stub.enqueue(StubReply(text="answer 4"))
    body = setup.post("question 4").json()
    sent = roles_and_contents(llm_stub.requests[3])
    assert sent[0] == ("system", "You are Ada.")
    assert sent[1][0] == "system" and "They asked two questions." in sent[1][1]
    assert "Two questions were asked." in sent[1][1]
    assert sent[2:] == [
        ("user", "question 3"),
        ("assistant", "answer 3"),
        ("user", "question 4"),
    ]
    assert body["context"][0]["actions"] == ["summary_used"]


# --- the cascade through HTTP ---------------------------------------------------------------


@pytest.fixture
def tiny_model(db) -> ModelConfig:  # type: ignore[no-untyped-def]
    model = ModelConfig.objects.create(
        id="test/tiny-1k", context_window=1000, max_output_tokens=200, display_name="Tiny"
    )
    version = PricingVersion.objects.get(status="active")
    ModelPrice.objects.create(
        version=version, model_id=model.id, input=Decimal("1"), output=Decimal("2")
    )
    return model


def _words(n: int) -> str:
    return " ".join(["word"] * n)


def test_budget_overflow_is_rejected_with_details_and_audit(llm_stub, tiny_model) -> None:  # type: ignore[no-untyped-def]
    s = single_agent(model_id=tiny_model.id, max_output_tokens=200)
    response = s.post(_words(900))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "context_budget_exceeded"
    details = error["details"]
    assert details["input_budget"] == 800 and details["model_limit"] == 1000
    assert details["model"] == tiny_model.id and details["agent"] == "ada"
    expected = tokenizer.count_message_tokens(
        [ChatMessage("system", "You are Ada."), ChatMessage("user", _words(900))]
    )
    assert details["estimated_tokens"] == expected > 800
    assert not Turn.objects.filter(session=s.session).exists()
    assert not Message.objects.filter(session=s.session).exists()
    audit = TurnContextAudit.objects.get(session=s.session)
    assert audit.outcome == "rejected" and audit.turn_id is None
    assert audit.actions[-1] == "rejected"
    assert llm_stub.requests == []
    s.session.refresh_from_db()
    assert s.session.turn_counter == 0


def test_history_is_pruned_to_fit_and_the_prompt_shows_it(llm_stub, tiny_model) -> None:  # type: ignore[no-untyped-def]
    s = single_agent(model_id=tiny_model.id, max_output_tokens=200)
    # Seven turns of ~100 tokens each: the eighth prompt reaches the prune trigger (720).
    for i in range(1, 8):
        llm_stub.enqueue(StubReply(text=_words(45)))
        assert s.post(f"q{i} " + _words(45)).status_code == 201, i
    llm_stub.enqueue(StubReply(text="short"))
    body = s.post("q8 " + _words(45)).json()
    assert body["status"] == "completed"
    audit = TurnContextAudit.objects.get(turn_id=body["id"])
    assert "pruned" in audit.actions
    assert audit.estimated_tokens_initial >= 720
    assert audit.turns_pruned == [1, 2, 3]  # the last four completed turns are kept
    assert audit.estimated_tokens_final < audit.estimated_tokens_initial
    sent = [c for _, c in roles_and_contents(llm_stub.requests[-1])]
    assert not any(c.startswith(("q1 ", "q2 ", "q3 ")) for c in sent)
    assert sent[-1].startswith("q8 ")
    kept = [t for t in range(1, 8) if t not in audit.turns_pruned]
    assert [c.split()[0] for c in sent if c.startswith("q") and c != sent[-1]] == [
        f"q{t}" for t in kept
    ]


def test_mandatory_summary_request_at_turn_eight(setup: Setup, llm_stub) -> None:  # type: ignore[no-untyped-def]
    for i in range(1, 8):
        assert setup.post(f"question {i}").status_code == 201
    assert not SessionSummary.objects.filter(session=setup.session).exists()
    body = setup.post("question 8").json()
    assert "summary_requested" in body["context"][0]["actions"]
    summary = SessionSummary.objects.get(session=setup.session)
    assert summary.status == "pending" and summary.last_turn_covered == 3
    assert summary.requested_by_turn_id is not None
    # At most one pending: turn 16 does not add a second while this one is pending.
    for i in range(9, 17):
        assert setup.post(f"question {i}").status_code == 201
    assert SessionSummary.objects.filter(session=setup.session).count() == 1


# --- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (StubReply(status=500), "llm_provider_error"),
        (StubReply(hang=True), "llm_timeout"),
        (StubReply(malformed=True), "llm_invalid_response"),
    ],
)
def test_provider_failure_stores_failed_turn_and_answers_502(
    setup: Setup, llm_stub, reply, code
) -> None:  # type: ignore[no-untyped-def]
    for _ in range(5):
        llm_stub.enqueue(reply)
    started = time.monotonic()
    response = setup.post("hello?")
    assert time.monotonic() - started < 30  # bounded
    assert response.status_code == 502, response.content
    error = response.json()["error"]
    assert error["code"] == "llm_unavailable"
    turn = Turn.objects.get(pk=error["details"]["turn_id"])
    assert turn.status == TurnStatus.FAILED
    messages = list(turn.messages.order_by("sequence"))
    assert messages[0].role == "user" and messages[0].content == "hello?"
    assert messages[1].status == "error" and messages[1].error_code == code
    event = LlmCallEvent.objects.get(turn_id=turn.id)
    assert event.status in ("error", "timeout") and event.error_code == code
    assert event.credits_burned == 0
    # The session is free again.
    llm_stub.reset()
    assert setup.post("again").status_code == 201


def test_rate_limit_is_retried_then_succeeds(setup: Setup, llm_stub) -> None:  # type: ignore[no-untyped-def]
    llm_stub.enqueue(StubReply(status=429, headers={"Retry-After": "0"}))
    llm_stub.enqueue(StubReply(text="after the retry"))
    response = setup.post("hello")
    assert response.status_code == 201
    assert response.json()["messages"][1]["content"] == "after the retry"
    assert LlmCallEvent.objects.filter(turn_id=response.json()["id"]).count() == 1


# --- validation -----------------------------------------------------------------------------


def test_bad_requests_write_nothing(setup: Setup, other_client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.TURN_INPUT_MAX_CHARS = 50
    cases = [
        ({"input": ""}, "input"),
        ({"input": "   "}, "input"),
        ({}, "input"),
        ({"input": "x" * 51}, "input"),
        ({"input": "hi", "mode": "chaos"}, "mode"),
        ({"input": "hi", "agent_ids": ["not-a-uuid"]}, "agent_ids"),
        ({"input": 5}, None),
    ]
    for payload, field in cases:
        response = setup.client.post(setup.url, payload, format="json")
        assert response.status_code == 400, payload
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        if field:
            assert field in error["details"], payload
    assert setup.client.post(setup.url, {"input": "x" * 50}, format="json").status_code == 201
    other, _ = other_client
    assert other.post(setup.url, {"input": "hi"}, format="json").status_code == 404
    long_key = {"Idempotency-Key": "k" * 256}
    assert setup.post("hi", headers=long_key).status_code == 400
    assert Turn.objects.filter(session=setup.session).count() == 1


def test_deleted_session_is_404(setup: Setup) -> None:
    setup.session.deleted_at = timezone.now()
    setup.session.save(update_fields=["deleted_at"])
    assert setup.post("hi").status_code == 404


# --- idempotency -----------------------------------------------------------------------------


def test_idempotent_replay_and_reuse(setup: Setup, llm_stub) -> None:  # type: ignore[no-untyped-def]
    key = {"Idempotency-Key": "abc-1"}
    first = setup.post("hello", headers=key)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    replay = setup.post("hello", headers=key)
    assert replay.status_code == 201
    assert replay.json() == first.json()
    assert replay["Idempotent-Replayed"] == "true"
    assert len(llm_stub.requests) == 1
    assert LlmCallEvent.objects.filter(user=setup.user).count() == 1
    reused = setup.post("something else", headers=key)
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"


def test_idempotent_replay_of_a_failed_turn_is_the_same_502(setup: Setup, llm_stub) -> None:  # type: ignore[no-untyped-def]
    for _ in range(5):
        llm_stub.enqueue(StubReply(status=500))
    key = {"Idempotency-Key": "fail-1"}
    first = setup.post("hello", headers=key)
    assert first.status_code == 502
    assert "Idempotent-Replayed" not in first
    calls = len(llm_stub.requests)
    replay = setup.post("hello", headers=key)
    assert replay.status_code == 502 and replay.json() == first.json()
    assert replay["Idempotent-Replayed"] == "true"
    assert len(llm_stub.requests) == calls


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_idempotency_key_in_use_while_running(llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    llm_stub.enqueue(StubReply(text="slow", delay=1.5))
    key = {"Idempotency-Key": "running-1"}
    results: dict[str, Any] = {}

    def first() -> None:
        results["first"] = s.post("hello", headers=key)
        connections.close_all()

    thread = threading.Thread(target=first)
    thread.start()
    _wait_for(lambda: Turn.objects.filter(session=s.session, status="running").exists())
    second = s.post("hello", headers=key)
    thread.join()
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "idempotency_key_in_use"
    assert results["first"].status_code == 201


# --- concurrency -------------------------------------------------------------------------------


def _wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_twenty_simultaneous_posts_one_wins(llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    llm_stub.enqueue(StubReply(text="the only answer", delay=1.0))
    barrier = threading.Barrier(20)
    statuses: list[int] = []
    lock = threading.Lock()

    def fire() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=s.client._credentials["HTTP_AUTHORIZATION"])
        barrier.wait()
        response = client.post(s.url, {"input": "race"}, format="json")
        with lock:
            statuses.append(response.status_code)
            if response.status_code == 409:
                assert response.json()["error"]["code"] == "turn_in_progress"
                assert response.headers["Retry-After"]
        connections.close_all()

    threads = [threading.Thread(target=fire) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] + [409] * 19
    assert Turn.objects.filter(session=s.session).count() == 1
    assert Message.objects.filter(session=s.session).count() == 2
    assert LlmCallEvent.objects.filter(session_id=s.session.id).count() == 1
    s.session.refresh_from_db()
    assert s.session.turn_counter == 1


def test_thirty_sequential_turns_are_numbered_without_gaps(setup: Setup) -> None:
    for _ in range(30):
        assert setup.post("next").status_code == 201
    indexes = list(Turn.objects.filter(session=setup.session).values_list("turn_index", flat=True))
    assert sorted(indexes) == list(range(1, 31))


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_turns_on_two_sessions_do_not_wait_for_each_other(llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    other_session = factories.make_session(s.room)
    llm_stub.enqueue(StubReply(text="slow answer", delay=1.5))
    done = threading.Event()

    def slow() -> None:
        s.post("slow one")
        done.set()
        connections.close_all()

    thread = threading.Thread(target=slow)
    thread.start()
    _wait_for(lambda: len(llm_stub.requests) == 1)  # the slow call is at the provider
    response = s.client.post(
        f"/api/v1/sessions/{other_session.id}/turns", {"input": "fast one"}, format="json"
    )
    assert response.status_code == 201
    assert not done.is_set()  # the first session's turn is still running
    thread.join()
    assert done.is_set()


def test_stale_running_turn_does_not_lock_the_session(setup: Setup, settings) -> None:
    assert setup.post("one").status_code == 201
    stuck = Turn.objects.create(
        session=setup.session,
        turn_index=99,
        mode="manual",
        user_input="crashed",
        progress_at=timezone.now()
        - timezone.timedelta(seconds=settings.TURN_STALE_AFTER_SECONDS + 5),
    )
    response = setup.post("two")
    assert response.status_code == 201
    stuck.refresh_from_db()
    assert stuck.status == "failed" and stuck.error_code == "turn_stale"


# --- query counts -----------------------------------------------------------------------------


def _bulk_history(s: Setup, turns: int) -> None:
    """Prior turns written directly: the counts under test are the next turn's, not these."""
    turn_rows = [
        Turn(session=s.session, turn_index=i, mode="manual", user_input=f"q{i}", status="completed")
        for i in range(1, turns + 1)
    ]
    Turn.objects.bulk_create(turn_rows)
    messages = []
    for t in turn_rows:
        messages.append(
            Message(session=s.session, turn=t, sequence=0, role="user", content=t.user_input)
        )
        messages.append(
            Message(
                session=s.session, turn=t, sequence=1, role="assistant", agent=s.agent, content="a"
            )
        )
    Message.objects.bulk_create(messages)
    # Everything but the last four turns is covered by a ready summary.
    SessionSummary.objects.create(
        session=s.session, last_turn_covered=turns - 4, status="ready", summary_text="so far"
    )
    s.session.turn_counter = turns
    s.session.save(update_fields=["turn_counter"])


def _queries_for_one_turn(s: Setup) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = s.post("and now?")
    assert response.status_code == 201, response.content
    return len(ctx.captured_queries)


def test_query_count_is_the_same_at_5_and_200_prior_turns(db, llm_stub, write_path) -> None:  # type: ignore[no-untyped-def]
    small, large = single_agent(), single_agent()
    _bulk_history(small, 5)
    _bulk_history(large, 200)
    _queries_for_one_turn(small)  # warm per-process caches (API key, prices, catalog)
    _queries_for_one_turn(large)
    at_5, at_200 = _queries_for_one_turn(small), _queries_for_one_turn(large)
    assert at_5 == at_200
    # The API key and both prices come from the per-process caches: no query. Pre-flight 4
    # (session + room, agents, summaries, history). With the ORM: admission 9 (BEGIN, session
    # lock with its running turn, counter, turn, account lock, reservation, account, user
    # message, COMMIT) + the spending limits that apply (none); the call 11 (BEGIN, reply,
    # account lock, earlier events, event, settlement, burn, spending totals, account, audit,
    # COMMIT); the close 1. With the one-statement writes:
    # the opening 1, the call's write 1, the close 1. The 201 body is rendered from what the
    # turn wrote. bench/ records the figure.
    assert at_5 == {"one statement": 7, "orm": 26}[write_path], at_5


# --- reads -------------------------------------------------------------------------------------


def test_turn_and_message_reads(setup: Setup, other_client) -> None:
    for i in range(3):
        assert setup.post(f"question {i}").status_code == 201
    listing = setup.client.get(setup.url).json()
    assert [t["turn_index"] for t in listing["results"]] == [1, 2, 3]
    one = setup.client.get(f"{setup.url}/2").json()
    assert one["turn_index"] == 2 and one["user_input"] == "question 1"
    assert setup.client.get(f"{setup.url}/9").status_code == 404
    messages_url = f"/api/v1/sessions/{setup.session.id}/messages"
    page = setup.client.get(messages_url, {"limit": 4}).json()
    assert len(page["results"]) == 4 and page["next"]
    rest = setup.client.get(page["next"]).json()
    assert len(rest["results"]) == 2 and rest["next"] is None
    contents = [m["content"] for m in page["results"] + rest["results"]]
    assert contents[0] == "question 0"
    other, _ = other_client
    assert other.get(setup.url).status_code == 404
    assert other.get(messages_url).status_code == 404


def test_a_key_issued_mid_session_sees_the_same_turns(setup: Setup) -> None:
    assert setup.post("hello").status_code == 201
    second_key = api_key_create(user=setup.user, name="second").key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {second_key}")
    assert len(client.get(setup.url).json()["results"]) == 1


# --- the plain rendering -------------------------------------------------------------------------


def test_turn_body_renders_what_the_turn_serializer_describes(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    # `turn_body` renders every turn; `TurnSerializer` is what the schema says it is: one
    # turn of each mode, with a failed speaker and an orchestrator's routing, rendered by both.
    from sessions.api.serializers import TurnSerializer, turn_body
    from sessions.tests.builders import FAILING, Room, script_routing

    room = Room(mode="round_table")
    llm_stub.enqueue(StubReply(status=500), model=FAILING, times=3)
    assert room.post("Everyone?").status_code == 201
    assert room.post("@cy and you?", mode="manual").status_code == 201
    script_routing(llm_stub, {"agents": ["ada"], "reason": "Ada knows."})
    assert room.post("Who?", mode="orchestrator").status_code == 201
    turns = selectors.turns_with_details(selectors.turns_for_session(session_id=room.session.id))
    assert [t.status for t in turns] == ["partial", "completed", "completed"]
    for turn in turns:
        # Compared as the client gets them: rendered to JSON.
        assert JSONRenderer().render(turn_body(turn)) == JSONRenderer().render(
            TurnSerializer(turn).data
        )
