"""Agent tools through the API, over real HTTP against the stub server that answers with tool
calls: each model call of a reply budgeted, reserved, audited and metered; each tool call
stored and shown; timeouts, unknown tools, the round limit, a budget that tool results push
over, a cancel during a tool round, HTTP tools and installed langchain-core tools."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import connections
from rest_framework.test import APIClient

from llm.models import HttpTool, ModelConfig
from sessions.models import Message, ToolCall, Turn, TurnContextAudit
from sessions.tests.builders import MINI, Room, Setup, ledger_ok, single_agent
from testing import factories
from testing.stub_llm import StubReply
from usage.models import LlmCallEvent, Reservation

pytestmark = pytest.mark.postgres

SAMPLE = "testing.tools_sample"


def _give(s: Setup | Room, agent: Any, tools: list[str]) -> None:
    url = f"/api/v1/rooms/{agent.room_id}/agents/{agent.id}"
    response = s.client.patch(url, {"tools": tools}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["tools"] == tools
    agent.refresh_from_db()


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def _tool_messages(request: Any) -> list[dict[str, Any]]:
    return [m for m in request.body["messages"] if m["role"] == "tool"]


def _reply(body: dict[str, Any], handle: str) -> dict[str, Any]:
    return next(m for m in body["messages"] if m["agent"] and m["agent"]["handle"] == handle)


# --- the API ---------------------------------------------------------------------------------


def test_tools_are_listed_and_agents_take_only_known_ones(db) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    listed = s.client.get("/api/v1/tools").json()["results"]
    names = [t["name"] for t in listed]
    assert {"calculator", "current_time", "session_search"} <= set(names)
    calculator = next(t for t in listed if t["name"] == "calculator")
    assert calculator["kind"] == "builtin" and calculator["parameters"]["type"] == "object"
    url = f"/api/v1/rooms/{s.room.id}/agents/{s.agent.id}"
    refused = s.client.patch(url, {"tools": ["calculator", "rm_rf"]}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["details"]["tools"][0].startswith("Unknown tool(s): rm_rf")
    assert s.client.patch(url, {"tools": "calculator"}, format="json").status_code == 400
    _give(s, s.agent, ["calculator", "current_time"])
    created = s.client.post(
        f"/api/v1/rooms/{s.room.id}/agents",
        {"name": "Bo", "handle": "bo", "model": MINI, "system_prompt": "", "tools": ["calculator"]},
        format="json",
    )
    assert created.status_code == 201 and created.json()["tools"] == ["calculator"]


# --- one reply, two calls ----------------------------------------------------------------------


def test_a_reply_that_calls_the_calculator_then_answers(db, llm_stub, write_path) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    _give(s, s.agent, ["calculator"])
    llm_stub.enqueue(StubReply(tool_calls=[_call("calculator", expression="6*7")]))
    llm_stub.enqueue(StubReply(text="It is 42."))

    response = s.post("what is 6 times 7?")

    assert response.status_code == 201, response.content
    body = response.json()
    reply = _reply(body, "ada")
    assert reply["content"] == "It is 42." and reply["status"] == "ok"
    assert reply["tool_calls"] == [
        {
            "id": "call_stub_1",
            "name": "calculator",
            "arguments": {"expression": "6*7"},
            "status": "ok",
            "result": "42",
            "latency_ms": reply["tool_calls"][0]["latency_ms"],
        }
    ]
    first, second = llm_stub.requests[-2:]
    assert [t["function"]["name"] for t in first.body["tools"]] == ["calculator"]
    assert _tool_messages(second) == [
        {"role": "tool", "content": "42", "tool_call_id": "call_stub_1"}
    ]
    assistant = [m for m in second.body["messages"] if m["role"] == "assistant"][-1]
    assert assistant["tool_calls"][0]["function"]["name"] == "calculator"
    turn = Turn.objects.get(pk=body["id"])
    events = LlmCallEvent.objects.filter(turn_id=turn.id)
    assert events.count() == 2 and {e.purpose for e in events} == {"agent_reply"}
    assert body["usage"]["input_tokens"] == sum(e.input_tokens for e in events)
    assert TurnContextAudit.objects.filter(turn=turn).count() == 2
    stored = ToolCall.objects.get(turn=turn)
    assert (stored.name, stored.status, stored.result, stored.round) == (
        "calculator",
        "ok",
        "42",
        1,
    )
    assert stored.message_id == Message.objects.get(turn=turn, role="assistant").id
    assert not Reservation.objects.filter(status="active").exists()
    # The same turn read back, and in the message list.
    assert s.client.get(f"{s.url}/1").json()["messages"][1]["tool_calls"][0]["result"] == "42"
    listed = s.client.get(f"/api/v1/sessions/{s.session.id}/messages").json()["results"]
    assert listed[1]["tool_calls"][0]["name"] == "calculator"
    ledger_ok()


def test_a_round_table_where_one_agent_uses_a_tool_and_another_does_not(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room("round_table")
    _give(room, room.ada, ["current_time"])
    llm_stub.enqueue(StubReply(tool_calls=[_call("current_time")]), model=MINI)
    response = room.post("What time is it, and what do you think?")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "completed"
    assert [c["name"] for c in _reply(body, "ada")["tool_calls"]] == ["current_time"]
    assert _reply(body, "bo")["tool_calls"] == [] and _reply(body, "cy")["tool_calls"] == []
    # Bo and Cy were offered no tool.
    offered = [("tools" in r.body) for r in llm_stub.requests[-4:]]
    assert offered == [True, True, False, False]
    assert LlmCallEvent.objects.filter(turn_id=body["id"]).count() == 4
    ledger_ok()


# --- tools that fail ----------------------------------------------------------------------------


def test_a_tool_that_times_out_gives_the_model_an_error(db, llm_stub, settings) -> None:  # type: ignore[no-untyped-def]
    settings.PANTHEON_TOOLS = [f"{SAMPLE}:slow_echo"]
    settings.TOOL_TIMEOUT_SECONDS = 0.3
    s = single_agent()
    _give(s, s.agent, ["slow_echo"])
    llm_stub.enqueue(StubReply(tool_calls=[_call("slow_echo", text="hi", seconds=3)]))
    llm_stub.enqueue(StubReply(text="The tool was too slow."))
    started = time.monotonic()
    response = s.post("echo hi")
    assert time.monotonic() - started < 2.5
    reply = _reply(response.json(), "ada")
    assert reply["status"] == "ok" and reply["tool_calls"][0]["status"] == "error"
    assert ToolCall.objects.get().status == "timeout"
    told = json.loads(_tool_messages(llm_stub.requests[-1])[0]["content"])
    assert "error" in told
    ledger_ok()


def test_an_unknown_tool_asked_for_by_the_model_is_an_error_result(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    _give(s, s.agent, ["calculator"])
    llm_stub.enqueue(StubReply(tool_calls=[_call("delete_everything", path="/")]))
    llm_stub.enqueue(StubReply(text="I cannot do that."))
    response = s.post("clean up")
    assert response.status_code == 201
    call = _reply(response.json(), "ada")["tool_calls"][0]
    assert call["name"] == "delete_everything" and call["status"] == "error"
    assert "not available" in call["result"]
    assert ToolCall.objects.get().status == "error"


def test_the_last_round_offers_no_tool(db, llm_stub, settings) -> None:  # type: ignore[no-untyped-def]
    settings.TOOL_MAX_ROUNDS = 2
    s = single_agent()
    _give(s, s.agent, ["calculator"])
    llm_stub.enqueue(StubReply(tool_calls=[_call("calculator", expression="1+1")]), times=2)
    llm_stub.enqueue(StubReply(text="Done: 2."))
    response = s.post("add it up, again and again")
    assert response.status_code == 201
    requests = llm_stub.requests[-3:]
    assert ["tools" in r.body for r in requests] == [True, True, False]
    reply = _reply(response.json(), "ada")
    assert reply["content"] == "Done: 2." and len(reply["tool_calls"]) == 2
    assert [c.round for c in ToolCall.objects.order_by("created_at")] == [1, 2]
    assert LlmCallEvent.objects.filter(turn_id=response.json()["id"]).count() == 3
    ledger_ok()


def test_tool_results_that_overflow_the_budget_end_the_reply_cleanly(
    db, llm_stub, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.PANTHEON_TOOLS = [f"{SAMPLE}:big_text"]
    settings.TOOL_RESULT_MAX_CHARS = 400_000
    small = ModelConfig.objects.get(pk="openai/gpt-3.5-turbo")  # a 16,385-token window
    room = Room("round_table")
    for agent in (room.ada, room.bo, room.cy):
        agent.model = small
        agent.save(update_fields=["model"])
    _give(room, room.ada, ["big_text"])
    llm_stub.enqueue(StubReply(tool_calls=[_call("big_text", words=60_000)]), model=small.id)
    response = room.post("Fetch the whole log.")
    assert response.status_code == 201, response.content
    body = response.json()
    ada = _reply(body, "ada")
    assert ada["status"] == "error" and ada["error"]["code"] == "context_budget_exceeded"
    assert ada["tool_calls"][0]["status"] == "ok"
    assert _reply(body, "bo")["status"] == "ok"  # the turn goes on
    assert body["status"] == "partial"
    assert not Reservation.objects.filter(status="active").exists()
    ledger_ok()


# --- a cancel during a tool round ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_cancel_during_a_tool_round_stops_the_reply(llm_stub, settings) -> None:  # type: ignore[no-untyped-def]
    settings.PANTHEON_TOOLS = [f"{SAMPLE}:slow_echo"]
    s = single_agent()
    _give(s, s.agent, ["slow_echo"])
    llm_stub.enqueue(StubReply(tool_calls=[_call("slow_echo", text="hi", seconds=1.5)]))
    llm_stub.enqueue(StubReply(text="never asked"))
    answer: dict[str, Any] = {}

    def run() -> None:
        answer["response"] = s.post("echo slowly")
        connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while not ToolCall.objects.exists() and time.monotonic() < deadline:
        if LlmCallEvent.objects.exists():  # the first call is recorded: the tool runs now
            break
        time.sleep(0.05)
    cancel = s.client.post(f"{s.url}/1/cancel")
    assert cancel.status_code == 202, cancel.content
    thread.join(15)
    body = answer["response"].json()
    assert body["status"] == "interrupted"
    reply = _reply(body, "ada")
    assert reply["status"] == "interrupted" and reply["tool_calls"][0]["name"] == "slow_echo"
    assert len(llm_stub.requests) == 1  # no call after the tool round
    assert LlmCallEvent.objects.count() == 1
    ledger_ok()


# --- HTTP tools and installed tools ---------------------------------------------------------------


class _Weather(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        _Weather.seen.append(
            {"body": json.loads(self.rfile.read(length)), "secret": self.headers.get("X-Key")}
        )
        payload = json.dumps({"city": "Lyon", "celsius": 21}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def weather_server() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Weather)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Weather.seen = []
    yield server
    server.shutdown()


def _weather_tool(port: int) -> HttpTool:
    tool = HttpTool(
        name="weather",
        description="The weather in a city.",
        parameters={
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        url=f"http://127.0.0.1:{port}/weather",
        method="POST",
        secret_header_name="X-Key",
        timeout_seconds=5,
        enabled=True,
    )
    tool.secret_header_value = "s3cret"
    tool.save()
    return tool


def test_an_http_tool_is_called_and_a_disallowed_host_is_refused(
    db, llm_stub, settings, weather_server
) -> None:  # type: ignore[no-untyped-def]
    settings.TOOL_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.CATALOG_CACHE_SECONDS = 0
    _weather_tool(weather_server.server_address[1])
    s = single_agent()
    _give(s, s.agent, ["weather"])
    llm_stub.enqueue(StubReply(tool_calls=[_call("weather", city="Lyon")]))
    llm_stub.enqueue(StubReply(text="21 °C in Lyon."))
    response = s.post("weather in Lyon?")
    call = _reply(response.json(), "ada")["tool_calls"][0]
    assert call["status"] == "ok" and json.loads(call["result"])["celsius"] == 21
    assert _Weather.seen[0] == {"body": {"city": "Lyon"}, "secret": "s3cret"}

    # The host is no longer allowed: refused before any request leaves.
    settings.TOOL_HTTP_ALLOWED_HOSTS = ["api.example.com"]
    llm_stub.enqueue(StubReply(tool_calls=[_call("weather", city="Paris")]))
    llm_stub.enqueue(StubReply(text="I could not look it up."))
    again = s.post("and in Paris?")
    refused = _reply(again.json(), "ada")["tool_calls"][0]
    assert refused["status"] == "error"
    assert len(_Weather.seen) == 1
    ledger_ok()


def test_a_langchain_tool_installed_by_import_path(db, llm_stub, settings) -> None:  # type: ignore[no-untyped-def]
    settings.PANTHEON_TOOLS = [f"{SAMPLE}:word_count"]
    s = single_agent()
    assert "word_count" in [t["name"] for t in s.client.get("/api/v1/tools").json()["results"]]
    _give(s, s.agent, ["word_count"])
    llm_stub.enqueue(StubReply(tool_calls=[_call("word_count", text="one two three")]))
    llm_stub.enqueue(StubReply(text="Three words."))
    reply = _reply(s.post("count these words").json(), "ada")
    assert reply["tool_calls"][0]["result"] == "3"


# --- session_search, owner-scoped ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_session_search_finds_this_sessions_messages_only(llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    assert s.post("Our launch codename is Bluebird.").status_code == 201
    other = single_agent()  # another user says the same word elsewhere
    assert other.post("Bluebird is my cat.").status_code == 201
    elsewhere = factories.make_session(s.room)  # and another session of the same room
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=s.client._credentials["HTTP_AUTHORIZATION"])
    client.post(
        f"/api/v1/sessions/{elsewhere.id}/turns", {"input": "bluebird again"}, format="json"
    )
    _give(s, s.agent, ["session_search"])
    llm_stub.enqueue(StubReply(tool_calls=[_call("session_search", query="bluebird")]))
    llm_stub.enqueue(StubReply(text="It was Bluebird."))
    reply = _reply(s.post("what was the codename?").json(), "ada")
    hits = json.loads(reply["tool_calls"][0]["result"])
    # This session's user message and the stub's echo of it; never the other user's, nor the
    # other session's.
    assert {(h["turn"], h["from"], h["content"]) for h in hits} == {
        (1, "user", "Our launch codename is Bluebird."),
        (1, "ada", "stub reply to: Our launch codename is Bluebird."),
    }


# --- streaming ----------------------------------------------------------------------------------


def test_the_stream_shows_tool_events(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    _give(s, s.agent, ["calculator"])
    llm_stub.enqueue(StubReply(tool_calls=[_call("calculator", expression="2**10")]))
    llm_stub.enqueue(StubReply(text="1024."))
    response = s.client.post(
        s.url, {"input": "2 to the 10th?"}, format="json", HTTP_ACCEPT="text/event-stream"
    )
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    events = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")]
    assert (
        events.index("tool.started")
        < events.index("tool.completed")
        < events.index("agent.completed")
    )
    completed = next(
        json.loads(block.split("data: ", 1)[1])
        for block in text.split("\n\n")
        if "event: tool.completed" in block
    )
    assert completed == {
        "agent": "ada",
        "id": "call_stub_1",
        "name": "calculator",
        "status": "ok",
        "result": "1024",
    }


def test_a_model_asking_for_too_many_calls_gets_errors_for_the_rest(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    from sessions.services.turns.tools import CALLS_PER_ROUND_MAX

    s = single_agent()
    _give(s, s.agent, ["calculator"])
    many = [_call("calculator", expression=f"{i}+1") for i in range(CALLS_PER_ROUND_MAX + 4)]
    llm_stub.enqueue(StubReply(tool_calls=many))
    llm_stub.enqueue(StubReply(text="Done."))
    response = s.post("add one to everything")
    assert response.status_code == 201
    calls = _reply(response.json(), "ada")["tool_calls"]
    assert len(calls) == CALLS_PER_ROUND_MAX + 4
    assert [c["status"] for c in calls] == ["ok"] * CALLS_PER_ROUND_MAX + ["error"] * 4
    # Every call got its result back: the provider accepts the next request.
    assert len(_tool_messages(llm_stub.requests[-1])) == CALLS_PER_ROUND_MAX + 4


def test_a_tool_the_agent_was_not_given_never_runs(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    _give(s, s.agent, ["calculator"])
    # As a prompt injection would have it: a tool that exists, but not this agent's.
    llm_stub.enqueue(StubReply(tool_calls=[_call("session_search", query="secrets")]))
    llm_stub.enqueue(StubReply(text="I cannot search."))
    reply = _reply(s.post("search everything").json(), "ada")
    call = reply["tool_calls"][0]
    assert call["status"] == "error" and "not available to this agent" in call["result"]
    assert call["arguments"] == {"query": "secrets"}
