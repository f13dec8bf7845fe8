"""Redis lost: a private `redis-server` is both the cache (throttle counters) and the Celery broker
of a real gunicorn + uvicorn server on the test database; the test kills it (SIGKILL) and later
starts it again on the same port.

While it is down (as the README documents):
- throttling fails open: every request is served — turns answer 201, more of them than the turn
  rate allows — each within a bounded time, none 5xx; the worker logs one warning (per process,
  per minute) naming the error, never the URL's password;
- `/api/v1/health` stays 200 and reports `"broker": "unavailable"`;
- the turn that asks for a summary still succeeds; the summary cannot be enqueued and stays
  `pending` (the server logs that the sweep will retry).
Once it is back, throttling counts again (the turn rate is refused with 429 `throttled`), and
`manage.py summarize_pending` (the sweep's work) completes the pending summary, billed once; the
ledger verifies clean.

The in-process tests below pin the throttle's rule: only "Redis unreachable" (redis-py's
ConnectionError / TimeoutError) fails open; any other Redis error still raises.
"""

from __future__ import annotations

import io
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from django.core.management import call_command
from rest_framework.test import APIClient

from pantheon.api import throttling
from sessions.models import SessionSummary
from sessions.tests.builders import AGENT_MODEL, GOOD_SUMMARY, SUMMARY_MODEL, ledger_ok
from testing import factories
from testing.db_faults import wait_for
from testing.server import ROOT, Answer, Server, free_port, gunicorn_server, server_env
from testing.stub_llm import LlmStub, StubReply
from usage.models import CreditAccount, LedgerEntry, LlmCallEvent, Reservation
from usage.services import credits_grant

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(120)]

PASSWORD = "s3cret-redis-pw"  # must never reach a log line
TURN_RATE = 3  # per minute, per user
REQUEST_BOUND_S = 15.0  # a hang guard: the cache's socket timeouts are 1 s
TURNS_WHILE_DOWN = 7  # turns 2..8: more than TURN_RATE, and turn 8 asks for a summary


# --- a private Redis ---------------------------------------------------------------------------


class PrivateRedis:
    """`redis-server` on a port of its own, no persistence, password-protected."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=PASSWORD, socket_connect_timeout=1
        )

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(  # fixed argv, no shell
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--requirepass",
                PASSWORD,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(self._answers, timeout=10, interval=0.05)

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.exceptions.ConnectionError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        assert not self._answers()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    instance = PrivateRedis(free_port(), tmp_path)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


# --- helpers -----------------------------------------------------------------------------------


def _timed(server: Server, method: str, path: str, key: str, body: Any = None) -> Answer:
    """One request, bounded: a hang fails it (socket timeout) rather than stalling the test."""
    started = time.monotonic()
    answer = server.request(method, path, key, body, timeout=REQUEST_BOUND_S)
    assert time.monotonic() - started < REQUEST_BOUND_S
    assert answer.status < 500, answer
    return answer


# --- Redis down under a real server ----------------------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_redis_down_turns_still_run_then_throttling_and_summaries_come_back(
    llm_stub: LlmStub, private_redis: PrivateRedis
) -> None:
    user, key = factories.make_api_key()
    credits_grant(user=user, amount_micro=10_000_000_000, note="t", idempotency_key=f"r-{user.pk}")
    room = factories.make_room(owner=user)
    factories.make_agent(room, name="Ada", handle="ada", model_id=AGENT_MODEL)
    session = factories.make_session(room)
    turns = f"/api/v1/sessions/{session.id}/turns"
    balance_before = CreditAccount.objects.get(user=user).balance_micro

    env = server_env(
        REDIS_URL=private_redis.url(0),
        CELERY_BROKER_URL=private_redis.url(1),
        PANTHEON_THROTTLE_TURNS=f"{TURN_RATE}/min",
        PANTHEON_THROTTLE_USER="1000/min",
        OPENROUTER_BASE_URL=llm_stub.url,
        OPENROUTER_API_KEY="sk-test",
        LLM_READ_TIMEOUT_SECONDS="5",
        LOG_FORMAT="plain",
    )
    log_name = "faults-redis-gunicorn"
    answers: list[Answer] = []
    with gunicorn_server(env, log_name=log_name) as server:
        # Up: a turn, counted in the private Redis.
        answers.append(_timed(server, "POST", turns, key, {"input": "question 1"}))
        assert answers[-1].status == 201, answers[-1]
        assert any(b"throttle_turns" in k for k in private_redis.client().keys("*"))

        private_redis.kill()

        # Down: every turn is served (more than the turn rate: nothing counts them).
        for n in range(2, 2 + TURNS_WHILE_DOWN):
            answers.append(_timed(server, "POST", turns, key, {"input": f"question {n}"}))
            assert answers[-1].status == 201, answers[-1]
            assert answers[-1].body["status"] == "completed"
        assert "summary_requested" in answers[-1].body["context"][0]["actions"]
        me = _timed(server, "GET", "/api/v1/auth/me", key)
        assert me.status == 200
        health = _timed(server, "GET", "/api/v1/health", key)
        assert health.status == 200
        assert health.body == {"status": "ok", "database": "ok", "broker": "unavailable"}
        summary = SessionSummary.objects.get(session=session)
        assert summary.status == "pending"  # the row is the durable record

        private_redis.start()  # back, empty, on the same port

        # Throttling counts again: TURN_RATE turns pass, the next is refused.
        for n in range(TURN_RATE):
            answers.append(_timed(server, "POST", turns, key, {"input": f"again {n}"}))
            assert answers[-1].status == 201, answers[-1]
        refused = _timed(server, "POST", turns, key, {"input": "one too many"})
        assert refused.status == 429, refused
        assert refused.body["error"]["code"] == "throttled"
        assert refused.retry_after is not None and int(refused.retry_after) >= 1
        assert _timed(server, "GET", "/api/v1/health", key).body["broker"] == "ok"

    log = (ROOT / "artifacts" / f"{log_name}.log").read_text(errors="replace")
    assert f"could not enqueue summary {summary.id}" in log
    warnings = [line for line in log.splitlines() if "throttling skipped" in line]
    # Dozens of throttle checks failed open; each of the two workers warned at most once.
    assert 1 <= len(warnings) <= len(server.workers)
    assert all("ConnectionError" in line for line in warnings)
    assert PASSWORD not in log

    # Still pending after the outage; the sweep's work completes it, billed once.
    summary.refresh_from_db()
    assert summary.status == "pending"
    llm_stub.enqueue(StubReply(json=GOOD_SUMMARY), model=SUMMARY_MODEL)
    out = io.StringIO()
    call_command("summarize_pending", stdout=out)
    assert "ready 1" in out.getvalue()
    summary.refresh_from_db()
    assert summary.status == "ready" and summary.summary_text == GOOD_SUMMARY["summary_text"]
    event = LlmCallEvent.objects.get(session_id=session.id, purpose="summary")
    assert event.pk == summary.call_event_id and event.credits_burned > 0

    # The ledger: every answered turn billed once, the summary once, nothing left reserved.
    turns_answered = 1 + TURNS_WHILE_DOWN + TURN_RATE
    replies = LlmCallEvent.objects.filter(session_id=session.id, purpose="agent_reply")
    assert replies.count() == turns_answered
    events = list(LlmCallEvent.objects.filter(session_id=session.id))
    for e in events:
        burns = [b.amount_micro for b in LedgerEntry.objects.filter(event=e, kind="burn")]
        assert burns == [-e.credits_burned]
    account = CreditAccount.objects.get(user=user)
    assert account.balance_micro == balance_before - sum(e.credits_burned for e in events)
    assert account.reserved_micro == 0
    assert not Reservation.objects.filter(account=account, status="active").exists()
    ledger_ok()


# --- the throttle's rule, in process -----------------------------------------------------------


@pytest.fixture
def warnings_window_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttling, "_last_warning", None)


def test_an_unreachable_cache_serves_the_request_and_warns_once(
    db: None, settings: Any, caplog: pytest.LogCaptureFixture, warnings_window_reset: None
) -> None:
    dead = free_port()  # nothing listens there
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://:{PASSWORD}@127.0.0.1:{dead}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "1/min", "turns": "1/min"},
    }
    _, key = factories.make_api_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    with caplog.at_level(logging.WARNING, logger="pantheon.api.throttling"):
        statuses = [client.get("/api/v1/auth/me").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]  # not 500, and not 429 either: nothing could count
    records = [r for r in caplog.records if r.name == "pantheon.api.throttling"]
    assert len(records) == 1  # three failed checks, one warning
    message = records[0].getMessage()
    assert records[0].levelno == logging.WARNING
    assert "ConnectionError" in message and f"127.0.0.1:{dead}" in message
    assert PASSWORD not in message


def _throttle_request() -> Any:
    return SimpleNamespace(user=SimpleNamespace(is_authenticated=True, pk=987654321))


@pytest.mark.parametrize(
    "error",
    [redis.exceptions.ConnectionError("refused"), redis.exceptions.TimeoutError("timed out")],
    ids=["connection", "timeout"],
)
def test_only_unreachable_fails_open(
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    warnings_window_reset: None,
    error: Exception,
) -> None:
    assert "RedisCache" in settings.CACHES["default"]["BACKEND"]

    def failing_eval(self: Any, *args: Any) -> Any:
        raise error

    monkeypatch.setattr(redis.Redis, "eval", failing_eval)
    assert throttling.UserThrottle().allow_request(_throttle_request(), None) is True


def test_any_other_redis_error_still_raises(
    settings: Any, monkeypatch: pytest.MonkeyPatch, warnings_window_reset: None
) -> None:
    assert "RedisCache" in settings.CACHES["default"]["BACKEND"]

    def failing_eval(self: Any, *args: Any) -> Any:
        raise redis.exceptions.ResponseError("NOSCRIPT or a bad script")

    monkeypatch.setattr(redis.Redis, "eval", failing_eval)
    with pytest.raises(redis.exceptions.ResponseError):
        throttling.UserThrottle().allow_request(_throttle_request(), None)
    assert throttling._last_warning is None  # not taken for an outage
