"""Turn control through the API: cancelling a running turn from another web process, and
retrying or regenerating the replies of the latest turn.

The cancels run against the production server (gunicorn, two uvicorn workers) on the test
database, with the stub provider over HTTP: the turn runs in one worker, the cancel is served by
the other (the first is paused with SIGSTOP while the cancel is asked, so the kernel cannot hand
it the cancel's connection), and the turn must stop within about a second of it running again.
Both ways a cancel travels are covered: Redis (`REDIS_URL` set) and the turn's row (no Redis).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sessions.models import Message, Turn
from sessions.tests.builders import FAILING, MINI, Room, ledger_ok
from testing.server import Server, gunicorn_server, server_env
from testing.stub_llm import LlmStub, StubReply
from usage.models import LlmCallEvent, Reservation

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

STOPPED_WITHIN_S = 1.5  # "within about a second", with room for a loaded CI machine


# --- cancelling from another process ------------------------------------------------------------


@pytest.fixture(params=["redis", "row"])
def two_workers(request: Any, llm_stub: LlmStub) -> Iterator[Server]:
    """The production server with two workers; the cancel signal through Redis or the row."""
    if request.param == "redis":
        request.applymarker(pytest.mark.redis)
        redis_url = server_env()["REDIS_URL"]
    else:
        redis_url = ""  # each process has its own memory cache: the row carries the cancel
    env = server_env(
        REDIS_URL=redis_url,
        CELERY_BROKER_URL="",
        OPENROUTER_BASE_URL=llm_stub.url,
        OPENROUTER_API_KEY="sk-test",
        LLM_READ_TIMEOUT_SECONDS="30",
        PANTHEON_THROTTLE_TURNS="1000/min",
    )
    with gunicorn_server(env, log_name=f"turn-control-{request.param}") as server:
        yield server


class _Turn(threading.Thread):
    """A turn POSTed on a connection of its own, read to its end in this thread."""

    def __init__(self, server: Server, room: Room, key: str, *, stream: bool) -> None:
        super().__init__(daemon=True)
        self.server, self.room, self.key, self.stream = server, room, key, stream
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        self.status: int | None = None
        self.body = b""
        self.ended_at: float | None = None

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        if self.stream:
            headers["Accept"] = "text/event-stream"
        payload = json.dumps({"input": "Everyone, talk for a while.", "mode": "round_table"})
        self.conn.request(
            "POST", f"/api/v1/sessions/{self.room.session.id}/turns", payload, headers
        )
        response = self.conn.getresponse()
        self.status = response.status
        self.body = response.read()
        self.ended_at = time.monotonic()

    def worker(self) -> int:
        return self.server.worker_of(self.conn.sock.getsockname()[1]) or 0

    def events(self) -> list[tuple[str, Any]]:
        out = []
        for block in self.body.decode().strip().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" in fields:
                out.append((fields["event"], json.loads(fields["data"])))
        return out


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _cancel_from_the_other_worker(server: Server, turn: _Turn) -> float:
    """Pause the turn's worker, ask the cancel (served by the other one), resume: returns when
    the turn's worker could run again."""
    busy = turn.worker()
    assert busy in server.workers
    path = f"/api/v1/sessions/{turn.room.session.id}/turns/1/cancel"
    os.kill(busy, signal.SIGSTOP)
    try:
        answer = server.request("POST", path, turn.key)
    finally:
        os.kill(busy, signal.SIGCONT)
    resumed = time.monotonic()
    assert answer.status == 202, answer
    assert answer.body["status"] == "cancelling"
    assert answer.worker not in (None, busy)  # the other process carried it
    return resumed


def _assert_stopped_after_ada(room: Room, stub: LlmStub) -> Turn:
    turn = Turn.objects.get(session=room.session)
    assert turn.status == "interrupted"
    assert turn.cancel_requested_at is not None and turn.cancel_requested_by.startswith("api key")
    replies = list(Message.objects.filter(turn=turn, role="assistant"))
    assert [(m.agent.handle, m.status) for m in replies] == [("ada", "interrupted")]
    assert len(stub.requests) == 1 and stub.requests[0].disconnected  # Bo and Cy never called
    event = LlmCallEvent.objects.get(turn_id=turn.id)
    assert event.status == "cancelled" and event.credits_burned > 0  # what was consumed
    assert not Reservation.objects.filter(turn_id=turn.id, status="active").exists()
    ledger_ok()
    return turn


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_cancel_stops_a_provider_that_has_not_answered(two_workers: Server, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="round_table")
    key = room.key
    llm_stub.enqueue(StubReply(hang=True), model=MINI)
    turn = _Turn(two_workers, room, key, stream=False)
    turn.start()
    _wait_for(lambda: len(llm_stub.requests) == 1)

    resumed = _cancel_from_the_other_worker(two_workers, turn)
    turn.join(timeout=10)

    assert turn.ended_at is not None and turn.ended_at - resumed < STOPPED_WITHIN_S
    assert turn.status == 201  # the waiting client gets the interrupted turn
    assert json.loads(turn.body)["status"] == "interrupted"
    _assert_stopped_after_ada(room, llm_stub)
    again = two_workers.request("POST", f"/api/v1/sessions/{room.session.id}/turns/1/cancel", key)
    assert again.status == 409 and again.body["error"]["code"] == "turn_not_running"
    assert again.body["error"]["details"]["status"] == "interrupted"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_cancel_stops_a_streamed_turn_mid_reply(two_workers: Server, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="round_table")
    key = room.key
    words = " ".join(f"word{n}" for n in range(60))
    llm_stub.enqueue(StubReply(text=words, chunk_delay=0.1), model=MINI)
    turn = _Turn(two_workers, room, key, stream=True)
    turn.start()
    _wait_for(lambda: Message.objects.filter(session=room.session).exists())
    time.sleep(0.5)  # a few deltas are out

    resumed = _cancel_from_the_other_worker(two_workers, turn)
    turn.join(timeout=10)

    assert turn.ended_at is not None and turn.ended_at - resumed < STOPPED_WITHIN_S
    assert turn.status == 200
    names = [name for name, _ in turn.events()]
    assert names[-1] == "turn.completed" and "agent.delta" in names
    assert turn.events()[-1][1]["status"] == "interrupted"
    stopped = _assert_stopped_after_ada(room, llm_stub)
    ada = Message.objects.get(turn=stopped, role="assistant")
    assert ada.content and words.startswith(ada.content) and ada.content != words  # kept


# --- retry and regenerate ------------------------------------------------------------------------


def _retry(
    room: Room, index: int = 1, *, headers: dict[str, str] | None = None, **body: Any
) -> Any:
    return room.client.post(
        f"/api/v1/sessions/{room.session.id}/turns/{index}/retry",
        body,
        format="json",
        headers=headers or {},
    )


@pytest.mark.django_db
def test_retry_after_a_partial_round_table_calls_only_the_failed_agent(llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="round_table")
    llm_stub.enqueue(StubReply(status=500), model=FAILING, times=3)  # Bo fails, retries used up
    first = room.post("What do you think?")
    assert first.json()["status"] == "partial"
    bo_failed = Message.objects.get(turn_id=first.json()["id"], agent=room.bo)
    events_before = LlmCallEvent.objects.filter(turn_id=first.json()["id"]).count()
    calls_before = len(llm_stub.requests)
    llm_stub.enqueue(
        StubReply(text="Bo, at last.", usage={"prompt_tokens": 40, "completion_tokens": 4}),
        model=FAILING,
    )

    response = _retry(room)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "completed"
    assert [m["agent"]["handle"] for m in body["messages"][1:]] == ["ada", "bo", "cy"]
    assert body["messages"][2]["content"] == "Bo, at last."
    assert "Bo: Bo, at last." in body["assistant_output"]
    new_requests = llm_stub.requests[calls_before:]
    assert [r.model for r in new_requests] == [FAILING]  # only Bo was called again
    # Bo saw Ada's reply, as it stands, and not its own failure.
    assert any("[Ada]" in m["content"] for m in new_requests[0].body["messages"])
    events = LlmCallEvent.objects.filter(turn_id=first.json()["id"])
    assert events.count() == events_before + 1  # billed: that one call
    bo_failed.refresh_from_db()
    assert bo_failed.status == "superseded"
    # The turn's usage counts every call it ever made, the superseded ones included.
    assert body["usage"]["input_tokens"] == sum(e.input_tokens for e in events)
    assert not Reservation.objects.filter(turn_id=first.json()["id"], status="active").exists()
    messages = room.client.get(f"/api/v1/sessions/{room.session.id}/messages").json()
    assert "superseded" not in [m["status"] for m in messages["results"]]
    everything = room.client.get(
        f"/api/v1/sessions/{room.session.id}/messages", {"include_superseded": "true"}
    ).json()
    assert "superseded" in [m["status"] for m in everything["results"]]
    ledger_ok()


@pytest.mark.django_db
def test_a_regenerated_reply_replaces_the_old_one_in_later_prompts(llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="manual")
    llm_stub.enqueue(StubReply(text="The first answer."), model=MINI)
    assert room.post("@ada hello").status_code == 201
    llm_stub.enqueue(StubReply(text="The second answer."), model=MINI)

    regenerated = _retry(room, agent_ids=[str(room.ada.id)])
    assert regenerated.status_code == 200, regenerated.content
    assert regenerated.json()["messages"][1]["content"] == "The second answer."
    # The regenerated call's prompt did not hold the answer it replaces.
    assert "The first answer." not in json.dumps(llm_stub.requests[-1].body["messages"])

    assert room.post("@ada and now?").status_code == 201
    prompt = json.dumps(llm_stub.requests[-1].body["messages"])
    assert "The second answer." in prompt and "The first answer." not in prompt


@pytest.mark.django_db
def test_retry_refusals(llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="manual")
    assert room.post("@ada one").status_code == 201
    assert room.post("@ada two").status_code == 201
    old = _retry(room, 1)
    assert old.status_code == 422 and old.json()["error"]["code"] == "turn_not_latest"
    nothing = _retry(room, 2)  # every reply ok and no agent_ids
    assert nothing.status_code == 422 and nothing.json()["error"]["code"] == "no_agent_selected"
    stranger = _retry(room, 2, agent_ids=[str(room.bo.id)])  # Bo did not speak in turn 2
    assert stranger.status_code == 422 and stranger.json()["error"]["code"] == "unknown_agent"
    missing = _retry(room, 9)
    assert missing.status_code == 404
    Turn.objects.filter(session=room.session, turn_index=2).update(status="running")
    running = _retry(room, 2, agent_ids=[str(room.ada.id)])
    assert running.status_code == 409 and running.json()["error"]["code"] == "turn_in_progress"
    typo = _retry(room, 2, agnet_ids=[])
    assert typo.status_code == 400 and "agnet_ids" in typo.json()["error"]["details"]


@pytest.mark.django_db
def test_an_idempotent_retry_replays(llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="manual")
    assert room.post("@ada hi").status_code == 201
    headers = {"Idempotency-Key": "retry-1"}
    first = _retry(room, agent_ids=[str(room.ada.id)], headers=headers)
    assert first.status_code == 200
    calls = len(llm_stub.requests)
    replay = _retry(room, agent_ids=[str(room.ada.id)], headers=headers)
    assert replay.status_code == 200 and replay.json() == first.json()
    assert replay["Idempotent-Replayed"] == "true"
    assert len(llm_stub.requests) == calls  # nothing generated or billed again


@pytest.mark.django_db
def test_a_failed_single_speaker_retry_is_502(llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="manual")
    llm_stub.enqueue(StubReply(status=500), model=FAILING, times=3)
    assert room.post("@bo hi").status_code == 502
    llm_stub.enqueue(StubReply(status=500), model=FAILING, times=3)
    again = _retry(room)
    assert again.status_code == 502 and again.json()["error"]["code"] == "llm_unavailable"
    turn = Turn.objects.get(session=room.session)
    assert turn.status == "failed"
    assert Message.objects.filter(turn=turn, agent=room.bo, status="superseded").count() == 1
    ledger_ok()


@pytest.mark.django_db
def test_cancel_of_an_ended_turn_is_409(llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="manual")
    assert room.post("@ada hi").status_code == 201
    answer = room.client.post(f"/api/v1/sessions/{room.session.id}/turns/1/cancel")
    assert answer.status_code == 409
    assert answer.json()["error"]["details"]["status"] == "completed"
    assert room.client.post(f"/api/v1/sessions/{room.session.id}/turns/7/cancel").status_code == 404


@pytest.mark.django_db
def test_a_retry_streams_like_a_turn(llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room(mode="round_table")
    llm_stub.enqueue(StubReply(status=500), model=FAILING, times=3)
    assert room.post("Go round.").json()["status"] == "partial"
    response = room.client.post(
        f"/api/v1/sessions/{room.session.id}/turns/1/retry",
        {},
        format="json",
        HTTP_ACCEPT="text/event-stream",
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    blocks = b"".join(response.streaming_content).decode().strip().split("\n\n")
    events = [dict(line.split(": ", 1) for line in block.splitlines()) for block in blocks]
    names = [e["event"] for e in events]
    assert names[0] == "turn.started" and names[-1] == "turn.completed"
    assert [json.loads(e["data"])["agent"] for e in events if e["event"] == "agent.started"] == [
        "bo"
    ]
    assert json.loads(events[-1]["data"])["status"] == "completed"
