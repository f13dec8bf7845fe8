"""Throttling holds across worker processes: gunicorn with two uvicorn workers sharing Redis,
one API key, more requests than the rate allows — exactly the allowed number pass and every
other answer is 429 `throttled` with `Retry-After`, whichever worker answered it. Both one
after the other and as a simultaneous burst (where a read-then-write counter lets them all
through).

Each request uses a new connection, and the worker that accepted it is identified from /proc
(the worker process holding the server side of that connection), so the test also proves
that both workers answered. In the one-after-the-other cases the kernel alone would pick the
worker (and may pick the same one every time), so the other worker is paused (SIGSTOP) while
one serves: the requests one worker counts are refused by the other."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from testing import factories
from testing.server import Answer, Server, burst, gunicorn_server, server_env
from usage.services import credits_grant

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

USER_RATE = 20
TURN_RATE = 5


@pytest.fixture
def server(transactional_db: Any, llm_stub: Any) -> Iterator[Server]:
    """gunicorn + 2 uvicorn workers on this test database and Redis, with low rates."""
    env = server_env(
        PANTHEON_THROTTLE_USER=f"{USER_RATE}/min",
        PANTHEON_THROTTLE_TURNS=f"{TURN_RATE}/min",
        OPENROUTER_BASE_URL=llm_stub.url,
        OPENROUTER_API_KEY="sk-test",
    )
    with gunicorn_server(env, log_name="throttling-gunicorn") as running:
        yield running


def _assert_throttled(answer: Answer) -> None:
    assert answer.status == 429, answer
    assert answer.body["error"]["code"] == "throttled"
    assert set(answer.body["error"]) == {"code", "message", "details"}
    assert answer.retry_after is not None and int(answer.retry_after) >= 1


@contextmanager
def _only(server: Server, worker: int) -> Iterator[None]:
    """Only `worker` accepts connections meanwhile: the others are paused (briefly: well
    within gunicorn's worker timeout)."""
    paused = [pid for pid in server.workers if pid != worker]
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_user_rate_holds_across_two_worker_processes(server: Server) -> None:
    _, key = factories.make_api_key()
    first, second = server.workers[:2]

    with _only(server, first):
        answers = [server.request("GET", "/api/v1/auth/me", key) for _ in range(USER_RATE)]
    with _only(server, second):
        answers += [server.request("GET", "/api/v1/auth/me", key) for _ in range(USER_RATE)]

    statuses = Counter(a.status for a in answers)
    assert statuses == {200: USER_RATE, 429: USER_RATE}, statuses
    # The first USER_RATE pass and every later one is refused: the counter is shared.
    assert [a.status for a in answers[:USER_RATE]] == [200] * USER_RATE
    for answer in answers[USER_RATE:]:
        _assert_throttled(answer)
    # The second worker refused everything: what the first one counted, it saw.
    assert {a.worker for a in answers[:USER_RATE]} == {first}
    assert {a.worker for a in answers[USER_RATE:]} == {second}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_turn_rate_holds_across_two_worker_processes(server: Server) -> None:
    user, key = factories.make_api_key()
    credits_grant(user=user, amount_micro=10_000_000, note="t", idempotency_key=f"thr-{user.pk}")
    room = factories.make_room(owner=user)
    factories.make_agent(room, handle="ada", name="Ada")
    session = factories.make_session(room)
    path = f"/api/v1/sessions/{session.id}/turns"

    first, second = server.workers[:2]

    with _only(server, first):
        answers = [
            server.request("POST", path, key, {"input": f"@ada question {n}"})
            for n in range(TURN_RATE)
        ]
    with _only(server, second):
        answers += [
            server.request("POST", path, key, {"input": f"@ada question {n}"})
            for n in range(TURN_RATE, 3 * TURN_RATE)
        ]

    assert [a.status for a in answers[:TURN_RATE]] == [201] * TURN_RATE, answers[:TURN_RATE]
    assert [a.body["turn_index"] for a in answers[:TURN_RATE]] == list(range(1, TURN_RATE + 1))
    for answer in answers[TURN_RATE:]:
        _assert_throttled(answer)
    # Reading is not a turn: the per-turn rate leaves GET alone (the user rate is not reached).
    listing = server.request("GET", path, key)
    assert listing.status == 200 and listing.body["count"] == TURN_RATE
    assert {a.worker for a in answers[:TURN_RATE]} == {first}
    assert {a.worker for a in answers[TURN_RATE:]} == {second}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_simultaneous_burst_cannot_exceed_the_user_rate(server: Server) -> None:
    _, key = factories.make_api_key()

    answers = burst(server, [("GET", "/api/v1/auth/me", key, None)] * (2 * USER_RATE))

    statuses = Counter(a.status for a in answers)
    assert statuses == {200: USER_RATE, 429: USER_RATE}, (
        statuses,
        Counter(a.worker for a in answers),
    )
    for answer in answers:
        if answer.status == 429:
            _assert_throttled(answer)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_simultaneous_burst_cannot_exceed_the_turn_rate(server: Server) -> None:
    user, key = factories.make_api_key()
    credits_grant(user=user, amount_micro=10_000_000, note="t", idempotency_key=f"thr-{user.pk}")
    room = factories.make_room(owner=user)
    factories.make_agent(room, handle="ada", name="Ada")
    # One session per request: a second turn on a busy session would be a 409, not a throttle.
    jobs = [
        (
            "POST",
            f"/api/v1/sessions/{factories.make_session(room).id}/turns",
            key,
            {"input": "@ada hi"},
        )
        for _ in range(3 * TURN_RATE)
    ]

    answers = burst(server, jobs)

    statuses = Counter(a.status for a in answers)
    assert statuses == {201: TURN_RATE, 429: 2 * TURN_RATE}, statuses
    for answer in answers:
        if answer.status == 429:
            _assert_throttled(answer)
