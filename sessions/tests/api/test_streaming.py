"""Streaming turns over Server-Sent Events, against a real ASGI server (uvicorn serving
pantheon.asgi in a thread of this process, so it shares the test database and the stub provider)
and a real HTTP client that reads the stream line by line as it arrives."""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from rest_framework.test import APIClient

from sessions.models import Message, Turn
from sessions.tests.builders import FAILING, MANAGER, MINI, ledger_ok
from testing import db_faults, factories
from testing.stub_llm import StubReply
from usage.models import LlmCallEvent, Reservation
from usage.services import credits_grant

pytestmark = [
    pytest.mark.postgres,
    # The server's threads must see committed rows.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

SSE = {"Accept": "text/event-stream"}


# --- the server and the client ----------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """uvicorn (one process, its event loop in a background thread) serving the ASGI app."""
    from pantheon.asgi import application

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(application, lifespan="off", log_level="warning", access_log=False)
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(10)
    sock.close()
    # Each ASGI request ran its view in a thread of its own, now gone; with persistent
    # connections (CONN_MAX_AGE > 0) their database connections wait for the garbage collector,
    # and the test database cannot be dropped while they are open.
    gc.collect()


@dataclass
class Event:
    name: str
    data: Any
    id: str
    at: float  # time.monotonic() when its blank line arrived
    fields: list[str]  # the field names of its lines, in order


@dataclass
class Stream:
    status: int
    content_type: str
    events: list[Event] = field(default_factory=list)
    comments: list[tuple[str, float]] = field(default_factory=list)
    body: Any = None  # a JSON answer instead of a stream

    def names(self) -> list[str]:
        return [e.name for e in self.events]

    def first(self, name: str) -> Event:
        return next(e for e in self.events if e.name == name)

    def outline(self) -> list[str]:
        """Event names, each with its agent, consecutive deltas of one agent collapsed."""
        out: list[str] = []
        for e in self.events:
            label = f"{e.name}:{e.data['agent']}" if "agent" in e.data else e.name
            if not (out and label == out[-1] and e.name == "agent.delta"):
                out.append(label)
        return out


def read_stream(
    base: str,
    path: str,
    key: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    stop: Callable[[Event], bool] | None = None,
) -> Stream:
    """POST and parse the event stream as it arrives; `stop` drops the connection early."""
    with (
        httpx.Client(base_url=base, timeout=30) as client,
        client.stream(
            "POST",
            path,
            json=body,
            headers={"Authorization": f"Bearer {key}", **SSE, **(headers or {})},
        ) as response,
    ):
        stream = Stream(
            status=response.status_code,
            content_type=response.headers.get("content-type", ""),
        )
        if not stream.content_type.startswith("text/event-stream"):
            response.read()
            stream.body = response.json()
            return stream
        lines: list[tuple[str, str]] = []
        for line in response.iter_lines():
            now = time.monotonic()
            if line.startswith(":"):
                stream.comments.append((line, now))
                continue
            if line:
                name, _, value = line.partition(":")
                lines.append((name, value.removeprefix(" ")))
                continue
            if not lines:
                continue
            values = dict(lines)
            event = Event(
                name=values.get("event", ""),
                data=json.loads(values["data"]),
                id=values.get("id", ""),
                at=now,
                fields=[n for n, _ in lines],
            )
            lines = []
            stream.events.append(event)
            if stop is not None and stop(event):
                break  # leaving the block closes the connection mid-stream
    return stream


def _wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


class Room:
    """A user with credits, a room of @ada (mini), @bo (gpt-4o) and @cy (mini), sessions."""

    def __init__(
        self, mode: str = "round_table", credits_micro: int = 10_000_000_000, sessions: int = 1
    ) -> None:
        self.user, self.key = factories.make_api_key()
        credits_grant(
            user=self.user, amount_micro=credits_micro, idempotency_key=f"sse-{self.user.id}"
        )
        self.room = factories.make_room(
            owner=self.user, default_mode=mode, manager_model_id=MANAGER
        )
        for handle, model in (("ada", MINI), ("bo", FAILING), ("cy", MINI)):
            factories.make_agent(
                self.room,
                name=handle.capitalize(),
                handle=handle,
                system_prompt=f"You are {handle.capitalize()}.",
                model_id=model,
            )
        self.sessions = [factories.make_session(self.room) for _ in range(sessions)]
        self.session = self.sessions[0]

    def path(self, session: Any = None) -> str:
        return f"/api/v1/sessions/{(session or self.session).id}/turns"

    def stream(self, base: str, text: str, **kwargs: Any) -> Stream:
        session = kwargs.pop("session", None)
        headers = kwargs.pop("headers", None)
        stop = kwargs.pop("stop", None)
        return read_stream(
            base,
            self.path(session),
            self.key,
            {"input": text, **kwargs},
            headers=headers,
            stop=stop,
        )

    def get(self, base: str, path: str) -> httpx.Response:
        return httpx.get(base + path, headers={"Authorization": f"Bearer {self.key}"}, timeout=10)


# --- the stream --------------------------------------------------------------------------------


def test_deltas_arrive_as_they_are_generated(server: str, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="manual")
    words = "one two three four five six seven eight nine ten"
    llm_stub.enqueue(StubReply(text=words, chunk_delay=0.15, usage={"prompt_tokens": 30}))
    seen_at_first_delta: list[tuple[str, int]] = []

    def look(event: Event) -> bool:
        if event.name == "agent.delta" and not seen_at_first_delta:
            turn = Turn.objects.get(session=room.session)
            seen_at_first_delta.append((turn.status, Message.objects.filter(turn=turn).count()))
        return False

    stream = room.stream(server, "@ada count to ten", stop=look)

    assert stream.status == 200
    assert stream.content_type.startswith("text/event-stream")
    assert stream.outline() == [
        "turn.started",
        "agent.started:ada",
        "agent.delta:ada",
        "agent.completed:ada",
        "turn.completed",
    ]
    # Every event: an id line, an event line, one data line; ids count up from 1.
    assert all(e.fields == ["id", "event", "data"] for e in stream.events)
    assert [e.id for e in stream.events] == [str(n) for n in range(1, len(stream.events) + 1)]

    deltas = [e for e in stream.events if e.name == "agent.delta"]
    assert len(deltas) == 10
    assert "".join(e.data["text"] for e in deltas) == words
    # Tokens are not held back until the end: when the first one arrives the reply is still being
    # generated (the turn runs, only the user's message is stored), and measured from
    # turn.started the first delta comes well before the turn completes.
    assert seen_at_first_delta == [("running", 1)]
    opened = stream.first("turn.started").at
    first, done = deltas[0].at - opened, stream.first("turn.completed").at - opened
    assert first < 0.5 * done, (first, done)

    started = stream.first("turn.started").data
    turn = Turn.objects.get(session=room.session)
    assert started == {
        "turn_id": str(turn.id),
        "session_id": str(room.session.id),
        "turn_index": 1,
        "mode": "manual",
    }
    completed = stream.first("agent.completed").data
    message = Message.objects.get(turn=turn, role="assistant")
    assert completed["message_id"] == str(message.id) and completed["status"] == "ok"
    assert completed["error"] is None
    assert completed["usage"]["input_tokens"] == 30
    assert completed["usage"]["usage_source"] == "provider"
    # turn.completed is the very body a JSON client gets for this turn.
    body = stream.first("turn.completed").data
    assert body == room.get(server, f"{room.path()}/1").json()
    assert body["status"] == "completed" and body["assistant_output"] == f"Ada: {words}"
    assert message.content == words and message.status == "ok"
    assert LlmCallEvent.objects.get(turn_id=turn.id).usage_source == "provider"
    ledger_ok()


def _script_replies(stub) -> None:  # type: ignore[no-untyped-def]
    stub.enqueue(StubReply(text="Ada says yes.", chunk_delay=0.01), model=MINI, times=2)
    stub.enqueue(StubReply(text="Bo builds it.", chunk_delay=0.01), model=FAILING)


def test_event_order_manual(server: str, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="manual")
    _script_replies(llm_stub)
    stream = room.stream(server, "@bo first, then @ada")
    assert stream.outline() == [
        "turn.started",
        "agent.started:bo",
        "agent.delta:bo",
        "agent.completed:bo",
        "agent.started:ada",
        "agent.delta:ada",
        "agent.completed:ada",
        "turn.completed",
    ]
    assert stream.first("turn.completed").data["status"] == "completed"
    assert "routing" not in stream.names()


def test_event_order_round_table(server: str, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="round_table")
    _script_replies(llm_stub)
    stream = room.stream(server, "Should we ship?")
    assert stream.outline() == [
        "turn.started",
        "agent.started:ada",
        "agent.delta:ada",
        "agent.completed:ada",
        "agent.started:bo",
        "agent.delta:bo",
        "agent.completed:bo",
        "agent.started:cy",
        "agent.delta:cy",
        "agent.completed:cy",
        "turn.completed",
    ]
    body = stream.first("turn.completed").data
    assert body["mode"] == "round_table" and body["status"] == "completed"
    assert [m["agent"]["handle"] for m in body["messages"][1:]] == ["ada", "bo", "cy"]
    ledger_ok()


def test_event_order_orchestrator(server: str, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="orchestrator")
    llm_stub.enqueue(
        StubReply(json={"agents": ["cy", "ada"], "reason": "Cy then Ada."}), model=MANAGER
    )
    _script_replies(llm_stub)
    stream = room.stream(server, "Review the plan.")
    assert stream.outline() == [
        "turn.started",
        "routing",
        "agent.started:cy",
        "agent.delta:cy",
        "agent.completed:cy",
        "agent.started:ada",
        "agent.delta:ada",
        "agent.completed:ada",
        "turn.completed",
    ]
    routing = stream.first("routing").data
    assert routing == {
        "selected": ["cy", "ada"],
        "reason": "Cy then Ada.",
        "fallback_used": False,
        "fallback_reason": None,
    }
    body = stream.first("turn.completed").data
    assert body["routing"] == routing
    ledger_ok()


def test_round_table_agent_failing_mid_stream(server: str, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="round_table")
    llm_stub.enqueue(StubReply(text="Ada is fine.", chunk_delay=0.01), model=MINI, times=2)
    llm_stub.enqueue(
        StubReply(text="Bo starts and is cut off", chunk_delay=0.01, cut_after_chunks=2),
        model=FAILING,
    )
    stream = room.stream(server, "Plan the launch.")
    assert stream.outline() == [
        "turn.started",
        "agent.started:ada",
        "agent.delta:ada",
        "agent.completed:ada",
        "agent.started:bo",
        "agent.delta:bo",
        "agent.failed:bo",
        "agent.started:cy",
        "agent.delta:cy",
        "agent.completed:cy",
        "turn.completed",
    ]
    bo_deltas = [
        e.data["text"] for e in stream.events if e.name == "agent.delta" and e.data["agent"] == "bo"
    ]
    assert "".join(bo_deltas) == "Bo starts "
    failed = stream.first("agent.failed").data
    assert failed["status"] == "error"
    assert failed["error"]["code"] == "llm_provider_error"
    body = stream.first("turn.completed").data
    assert body["status"] == "partial"
    assert [m["status"] for m in body["messages"][1:]] == ["ok", "error", "ok"]
    assert body["messages"][2]["id"] == failed["message_id"]
    assert body["messages"][2]["content"] == ""  # a failed reply is never content
    assert body["assistant_output"] == "Ada: Ada is fine.\n\nCy: Ada is fine."
    ledger_ok()


def test_heartbeats_during_silence(server: str, llm_stub, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SSE_HEARTBEAT_SECONDS = 0.2
    room = Room(mode="manual")
    llm_stub.enqueue(StubReply(text="finally", delay=1.2))
    stream = room.stream(server, "@ada take your time")
    first_delta = stream.first("agent.delta").at
    beats = [at for line, at in stream.comments if line == ": keep-alive" and at < first_delta]
    assert len(beats) >= 2
    assert stream.first("turn.completed").data["status"] == "completed"


# --- the client goes away ---------------------------------------------------------------------


def test_client_disconnect_interrupts_and_bills(server: str, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="round_table")
    long_text = " ".join(f"word{n}" for n in range(40))
    llm_stub.enqueue(StubReply(text=long_text, chunk_delay=0.1, no_usage=True), model=MINI)
    stream = room.stream(server, "Talk for a while.", stop=lambda e: e.name == "agent.delta")
    assert stream.names()[-1] == "agent.delta"

    # The provider's connection is closed long before the reply would have ended (4 s).
    _wait_for(lambda: llm_stub.disconnects >= 1, timeout=3)
    assert llm_stub.requests[0].disconnected
    _wait_for(lambda: Turn.objects.get(session=room.session).status != "running")

    turn = Turn.objects.get(session=room.session)
    assert turn.status == "interrupted"
    replies = list(Message.objects.filter(turn=turn, role="assistant"))
    assert len(replies) == 1  # Bo and Cy never spoke
    ada = replies[0]
    assert ada.status == "interrupted" and ada.agent.handle == "ada"
    assert ada.content and long_text.startswith(ada.content) and ada.content != long_text
    assert len(llm_stub.requests) == 1
    event = LlmCallEvent.objects.get(turn_id=turn.id)
    assert event.status == "cancelled" and event.usage_source == "estimated"
    assert event.input_tokens > 0 and event.output_tokens > 0 and event.credits_burned > 0
    assert not Reservation.objects.filter(turn_id=turn.id, status="active").exists()
    ledger_ok()


def test_client_gone_before_the_response_starts_cancels_the_turn(server: str, llm_stub) -> None:  # type: ignore[no-untyped-def]
    # The client hangs up while its turn is being admitted, before any byte of the answer: the
    # view's thread never learns it from the stream (its body is never read), so without the
    # disconnect watch the turn would run to its end and be billed in full. The session row is
    # held locked meanwhile, so the hang-up lands exactly in that window.
    room = Room(mode="round_table")
    llm_stub.enqueue(StubReply(hang=True), model=MINI)
    body = json.dumps({"input": "Nobody will read this."}).encode()
    host, port = server.removeprefix("http://").split(":")
    request = (
        f"POST {room.path()} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {room.key}\r\nAccept: text/event-stream\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    dbname = db_faults.database_name()
    with db_faults.connect(dbname) as locker:
        locker.execute("BEGIN")
        locker.execute("SELECT 1 FROM sessions WHERE id = %s FOR UPDATE", (room.session.id,))
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(request)
            # The request waits for the session's lock: admission has begun.
            db_faults.wait_for(lambda: db_faults.backends(dbname, waiting_on_lock=True), 10)
        time.sleep(0.3)  # the server notices the hang-up
        locker.execute("COMMIT")
    _wait_for(lambda: Turn.objects.filter(session=room.session).exists(), timeout=5)
    _wait_for(lambda: Turn.objects.get(session=room.session).status != "running", timeout=5)

    turn = Turn.objects.get(session=room.session)
    assert turn.status == "interrupted"
    assert llm_stub.requests == []  # no provider call was started for nobody
    assert not Message.objects.filter(turn=turn, role="assistant").exists()
    assert not LlmCallEvent.objects.filter(turn_id=turn.id).exists()
    assert not Reservation.objects.filter(turn_id=turn.id, status="active").exists()
    ledger_ok()


def test_a_fault_mid_stream_closes_turn_and_stream(server: str, llm_stub, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sessions import sql as sessions_sql

    room = Room(mode="round_table")
    original = sessions_sql.call_write
    seen = {"n": 0}

    def faulty(*args: Any, **kwargs: Any) -> Any:
        seen["n"] += 1
        if seen["n"] == 2:  # Bo's write, after Ada's reply was stored and streamed
            raise RuntimeError("injected")
        return original(*args, **kwargs)

    monkeypatch.setattr(sessions_sql, "call_write", faulty)
    stream = room.stream(server, "Go round.")
    assert stream.status == 200
    assert stream.names()[-1] == "turn.completed"
    assert "agent.failed" in stream.names()  # Bo's reply, cut off by the fault
    final = stream.first("turn.completed").data
    assert final["status"] == "failed"
    turn = Turn.objects.get(session=room.session)
    assert turn.status == "failed" and turn.error_code == "internal_error"
    assert not Reservation.objects.filter(turn_id=turn.id, status="active").exists()
    assert LlmCallEvent.objects.filter(turn_id=turn.id).count() == len(llm_stub.requests) == 2
    ledger_ok()

    monkeypatch.undo()
    after = room.stream(server, "And now?")
    assert after.first("turn.completed").data["status"] == "completed"


# --- many streams at once --------------------------------------------------------------------


def test_twenty_concurrent_streams_all_progress(server: str, llm_stub) -> None:  # type: ignore[no-untyped-def]
    # Round tables: each later speaker reserves credits (database) before its call, so twenty
    # streams also show that an open stream does not keep a database connection while it waits
    # for its provider (the pool is smaller than twenty).
    room = Room(mode="round_table", sessions=20)
    slow = StubReply(text="a b c d e f", chunk_delay=0.2)
    llm_stub.enqueue(slow, model=MINI, times=40)
    llm_stub.enqueue(slow, model=FAILING, times=20)
    barrier = threading.Barrier(20)
    streams: dict[int, Stream] = {}
    errors: list[BaseException] = []
    last_speaker_started: list[float] = []  # first delta of @cy, the last speaker, per stream
    all_in_last_speaker = threading.Event()
    lock = threading.Lock()

    def run(n: int) -> None:
        def watch(event: Event) -> bool:
            if event.name == "agent.delta" and event.data["agent"] == "cy":
                with lock:
                    if n not in seen:
                        seen.add(n)
                        last_speaker_started.append(event.at)
                        if len(seen) == 20:
                            all_in_last_speaker.set()
            return False

        try:
            barrier.wait()
            streams[n] = room.stream(server, "Go round.", session=room.sessions[n], stop=watch)
        except BaseException as exc:
            errors.append(exc)

    seen: set[int] = set()
    threads = [threading.Thread(target=run, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    assert all_in_last_speaker.wait(30), errors
    # While every stream is open, the same worker process still answers other requests.
    me = room.get(server, "/api/v1/auth/me")
    answered = time.monotonic()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert me.status_code == 200
    assert len(streams) == 20 and all(s.status == 200 for s in streams.values())
    completions = [s.first("turn.completed").at for s in streams.values()]
    # All twenty reached their last speaker before any of them completed: they ran together.
    assert max(last_speaker_started) < min(completions)
    assert answered < min(completions)
    assert all(s.first("turn.completed").data["status"] == "completed" for s in streams.values())
    assert Turn.objects.filter(session__room=room.room, status="completed").count() == 20
    ledger_ok()


# --- before the stream: plain JSON ---------------------------------------------------------------


def test_rejections_before_the_stream_are_json(server: str, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="manual")
    other = Room(mode="manual")

    def post(key: str, path: str, body: dict[str, Any]) -> Stream:
        return read_stream(server, path, key, body)

    cases = [
        (post(other.key, room.path(), {"input": "@ada hi"}), 404, "not_found"),
        (post(room.key, room.path(), {"input": "   "}), 400, "validation_error"),
        (post(room.key, room.path(), {"input": "@zed hi"}), 422, "unknown_agent"),
        (post("pan_bogus_key", room.path(), {"input": "@ada hi"}), 401, "not_authenticated"),
    ]
    for stream, status, code in cases:
        assert stream.status == status, (status, stream.body)
        assert stream.content_type.startswith("application/json")
        assert stream.body["error"]["code"] == code
    poor = Room(mode="manual", credits_micro=1_000)
    broke = read_stream(server, poor.path(), poor.key, {"input": "@ada hi"})
    assert broke.status == 402 and broke.body["error"]["code"] == "insufficient_credits"
    assert not Turn.objects.exists() and llm_stub.requests == []


def test_running_turn_is_409_json(server: str, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="manual")
    llm_stub.enqueue(StubReply(text="slow " * 10, chunk_delay=0.1))
    second: dict[str, Stream] = {}

    def on_first_delta(event: Event) -> bool:
        if event.name == "agent.delta" and not second:
            second["stream"] = room.stream(server, "@ada me too")
        return False

    first = room.stream(server, "@ada go", stop=on_first_delta)
    rejected = second["stream"]
    assert rejected.status == 409 and rejected.content_type.startswith("application/json")
    assert rejected.body["error"]["code"] == "turn_in_progress"
    assert first.first("turn.completed").data["status"] == "completed"
    assert Turn.objects.filter(session=room.session).count() == 1


def test_idempotent_replay_of_a_streamed_turn_is_its_json(server: str, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="manual")
    llm_stub.enqueue(StubReply(text="only once", chunk_delay=0.05))
    key = {"Idempotency-Key": "stream-1"}
    streamed = room.stream(server, "@ada once", headers=key)
    body = streamed.first("turn.completed").data
    calls = len(llm_stub.requests)

    replay = room.stream(server, "@ada once", headers=key)
    assert replay.status == 201 and replay.content_type.startswith("application/json")
    assert replay.body == body
    assert len(llm_stub.requests) == calls  # never a second generation
    assert Turn.objects.filter(session=room.session).count() == 1


# --- without an ASGI server ----------------------------------------------------------------------


@pytest.mark.django_db  # the test client, inside the test's own transaction
def test_the_wsgi_test_client_gets_the_same_events_at_once(llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="round_table")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {room.key}")
    response = client.post(
        room.path(), {"input": "Go round."}, format="json", HTTP_ACCEPT="text/event-stream"
    )
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    blocks = b"".join(response.streaming_content).decode().strip().split("\n\n")
    events = [dict(line.split(": ", 1) for line in block.split("\n")) for block in blocks]
    names = [e["event"] for e in events]
    assert names[0] == "turn.started" and names[-1] == "turn.completed"
    assert names.count("agent.completed") == 3
    body = json.loads(events[-1]["data"])
    assert body == client.get(f"{room.path()}/1").json()
    assert body["status"] == "completed"
