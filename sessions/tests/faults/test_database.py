"""PostgreSQL lost during a turn: connections killed by the server (`pg_terminate_backend`), and
the database refusing every connection, while the stub holds the provider's answer.

Each case ends in a documented state within a bounded time, with the ledger balanced:
- idle pooled connections killed during the call: the pool's checkout check replaces them, the
  turn completes (201), billed once;
- the connection killed in the middle of the turn's write: the write is made once more on a
  fresh connection, the turn completes (201), billed once;
- the database unreachable for the rest of the request: 503 `service_unavailable` with
  Retry-After, the turn stays `running`; once the database is back the stale sweep fails it and
  releases its reservation, and the balance is what it was;
- the same during a streamed turn: the stream ends with an `error` event, it never hangs.

The requests go through the test client: the real views, the one exception handler, the real
psycopg pool and the real `openai` client against the stub over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone
from psycopg_pool import PoolTimeout

from pantheon import sql as pantheon_sql
from pantheon.api.exceptions import exception_handler
from pantheon.db import connection_is_broken, pool_check
from sessions.models import Turn
from sessions.services.turns import calls as turn_calls
from sessions.services.turns import turns_fail_stale
from sessions.tests.builders import Setup, ledger_ok, single_agent
from testing import db_faults
from testing.db_faults import Background, wait_for
from testing.stub_llm import LlmStub, StubReply
from usage.models import CreditAccount, LedgerEntry, LlmCallEvent, Reservation

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(90)]

POOL_TIMEOUT_S = 2.0  # how long a request waits for a connection while the database is down


@pytest.fixture
def short_pool_timeout() -> Iterator[None]:
    """This process's pool, reopened with a short checkout timeout (so an unreachable database
    answers in seconds, not DATABASE_POOL_TIMEOUT_SECONDS), and reopened fresh afterwards: a
    pool that lived through the outage may still be backing off its reconnections."""
    pool_options = connection.settings_dict["OPTIONS"]["pool"]
    assert connection.settings_dict["CONN_HEALTH_CHECKS"], "the pool must check each checkout"
    original = pool_options["timeout"]
    connection.close()
    connection.close_pool()
    pool_options["timeout"] = POOL_TIMEOUT_S
    try:
        yield
    finally:
        pool_options["timeout"] = original
        connection.close()
        connection.close_pool()


def _account(s: Setup) -> CreditAccount:
    return CreditAccount.objects.get(user=s.user)


def _turn_of(s: Setup) -> Turn:
    return Turn.objects.get(session=s.session)


def _assert_billed_once(s: Setup, turn: Turn, balance_before: int) -> None:
    events = list(LlmCallEvent.objects.filter(turn_id=turn.id))
    assert len(events) == 1 and events[0].credits_burned > 0
    burns = list(LedgerEntry.objects.filter(event=events[0], kind="burn"))
    assert [b.amount_micro for b in burns] == [-events[0].credits_burned]
    account = _account(s)
    assert account.balance_micro == balance_before - events[0].credits_burned
    assert account.reserved_micro == 0
    assert not Reservation.objects.filter(turn_id=turn.id, status="active").exists()


def _stub_is_answering(stub: LlmStub) -> bool:
    return bool(stub.requests)


# --- the mapping -------------------------------------------------------------------------------


def test_an_unreachable_database_is_503_and_a_bad_query_stays_500() -> None:
    response = exception_handler(
        OperationalError("server closed the connection unexpectedly"), {"view": None}
    )
    assert response.status_code == 503
    assert response.data == {
        "error": {
            "code": "service_unavailable",
            "message": "The database is unavailable; retry shortly.",
            "details": {},
        }
    }
    assert int(response.headers["Retry-After"]) >= 1
    response = exception_handler(IntegrityError("duplicate key"), {"view": None})
    assert response.status_code == 500
    assert response.data["error"]["code"] == "internal_error"
    assert "Retry-After" not in response.headers


@pytest.mark.django_db
def test_the_pool_checks_connections_with_the_draining_check() -> None:
    connection.ensure_connection()
    # psycopg_pool keeps its check in `_check`: an upgrade that moves it fails here, loudly.
    assert connection.pool._check is pool_check


def _wrapped(cause: Exception) -> OperationalError:
    error = OperationalError(str(cause))
    error.__cause__ = cause
    return error


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("cause", "broken"),
    [
        (psycopg.errors.AdminShutdown("terminating connection"), True),  # a killed backend
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (PoolTimeout("couldn't get a connection after 10.00 sec"), False),  # busy, not lost
        (psycopg.errors.DeadlockDetected("deadlock detected"), False),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), False),
    ],
)
def test_only_a_lost_connection_counts_as_broken(cause: Exception, broken: bool) -> None:
    """A lost connection is retried and the pool drained; an overload or a deadlock never is
    (draining a busy pool would make the overload worse)."""
    connection.ensure_connection()  # this test's own connection is alive
    assert connection_is_broken(_wrapped(cause)) is broken


# --- killed once: the turn still ends normally -----------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_pool_connections_killed_during_the_call_the_turn_completes_billed_once(
    llm_stub: LlmStub,
) -> None:
    s = single_agent()
    balance_before = _account(s).balance_micro
    llm_stub.enqueue(StubReply(text="Still here.", delay=1.0))
    dbname = db_faults.database_name()

    def kill_while_the_stub_holds_the_reply() -> int:
        wait_for(lambda: _stub_is_answering(llm_stub))
        return db_faults.terminate(db_faults.backends(dbname))

    killer = Background(kill_while_the_stub_holds_the_reply)
    response = s.post("Are you still there?")
    assert killer.result() >= 1  # the pool's idle connections (the request's among them) died
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "completed"
    assert response.json()["assistant_output"] == "Ada: Still here."
    turn = _turn_of(s)
    assert turn.status == "completed"
    _assert_billed_once(s, turn, balance_before)
    ledger_ok()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_connection_killed_in_the_middle_of_the_write_is_retried_once(llm_stub: LlmStub) -> None:
    s = single_agent()
    balance_before = _account(s).balance_micro
    account_id = _account(s).pk
    llm_stub.enqueue(StubReply(text="Written on the second try.", delay=0.5))
    dbname = db_faults.database_name()
    locker = db_faults.connect(dbname)

    def kill_the_writer() -> int:
        # Once the call is in flight, hold the account's row lock: the turn's write (its burn)
        # blocks on it, inside its transaction; then kill exactly that backend.
        wait_for(lambda: _stub_is_answering(llm_stub))
        locker.execute("BEGIN")
        locker.execute("SELECT 1 FROM credit_accounts WHERE id = %s FOR UPDATE", (account_id,))
        try:
            exclude = (locker.info.backend_pid,)
            writer = wait_for(
                lambda: db_faults.backends(dbname, waiting_on_lock=True, exclude=exclude)
            )
            return db_faults.terminate(writer)
        finally:
            locker.execute("ROLLBACK")

    try:
        killer = Background(kill_the_writer)
        response = s.post("Hold on.")
        assert killer.result() == 1
    finally:
        locker.close()
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "completed"
    turn = _turn_of(s)
    assert turn.status == "completed"
    assert [m.content for m in turn.messages.order_by("sequence")] == [
        "Hold on.",
        "Written on the second try.",
    ]
    _assert_billed_once(s, turn, balance_before)
    ledger_ok()


def _lose_the_connection_after_the_commit(killed: list[int]) -> None:
    # Kill this very backend once the COMMIT has been applied, then use the connection: to the
    # pipeline it looks exactly like a COMMIT whose answer was lost.
    killed.append(db_faults.terminate([connection.connection.info.backend_pid]))
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _lose_the_answer_of_the_calls_write(monkeypatch: pytest.MonkeyPatch, path: str) -> list[int]:
    """After the call's write has committed, its answer is lost (once)."""
    killed: list[int] = []
    if path == "orm":  # the write is a transaction: lose the COMMIT's answer
        real_audit = turn_calls.audit_write

        def audit_then_lose_the_commit_answer(**kwargs: Any) -> Any:
            if kwargs.get("call_event_id") is not None and not killed:
                transaction.on_commit(lambda: _lose_the_connection_after_the_commit(killed))
            return real_audit(**kwargs)

        monkeypatch.setattr(turn_calls, "audit_write", audit_then_lose_the_commit_answer)
        return killed
    real_run = pantheon_sql.run
    statements = [0]

    def run_then_lose_the_answer(*args: Any, **kwargs: Any) -> Any:
        statements[0] += 1
        row = real_run(*args, **kwargs)  # autocommit: the statement has committed
        if statements[0] == 2 and not killed:  # the 1st opened the turn; the 2nd is the call's
            _lose_the_connection_after_the_commit(killed)
        return row

    monkeypatch.setattr(pantheon_sql, "run", run_then_lose_the_answer)
    return killed


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_connection_lost_right_after_the_commit_writes_nothing_twice(
    llm_stub: LlmStub, monkeypatch: pytest.MonkeyPatch, write_path: str
) -> None:
    """The server committed the call's write but its answer never came back: the retry finds
    what the first attempt wrote instead of writing the reply and the audit again."""
    s = single_agent()
    balance_before = _account(s).balance_micro
    llm_stub.enqueue(StubReply(text="Stored exactly once."))
    killed = _lose_the_answer_of_the_calls_write(monkeypatch, write_path)
    response = s.post("Once, please.")
    assert killed == [1]
    assert response.status_code == 201, response.content
    body = response.json()
    assert [m["content"] for m in body["messages"]] == ["Once, please.", "Stored exactly once."]
    turn = _turn_of(s)
    assert turn.status == "completed"
    assert [m.content for m in turn.messages.order_by("sequence")] == [
        "Once, please.",
        "Stored exactly once.",
    ]
    assert turn.context_audits.count() == 1
    assert s.client.get(f"{s.url}/{turn.turn_index}").json() == body
    _assert_billed_once(s, turn, balance_before)
    ledger_ok()


# --- unreachable: 503, then the sweep -------------------------------------------------------


def _unreachable_while_the_stub_holds_the_reply(stub: LlmStub, dbname: str) -> Any:
    """Refuse and kill every connection of the test database from the moment the provider has
    the request until `outage.release()`."""
    stub_got_it = Background(lambda: wait_for(lambda: _stub_is_answering(stub)))

    class Outage:
        def __init__(self) -> None:
            stub_got_it.result()
            self._cm = db_faults.database_unreachable(dbname)
            self._cm.__enter__()

        def release(self) -> None:
            self._cm.__exit__(None, None, None)

    return Background(Outage)


def _after_the_outage_the_sweep_fails_the_turn(s: Setup, balance_before: int) -> None:
    turn = _turn_of(s)
    assert turn.status == "running"  # left for the sweep, never a half-written end
    reservation = Reservation.objects.get(turn_id=turn.id)
    assert reservation.status == "active"
    assert not LlmCallEvent.objects.filter(turn_id=turn.id).exists()
    later = timezone.now() + timedelta(seconds=settings.TURN_STALE_AFTER_SECONDS + 1)
    assert turns_fail_stale(now=later) == 1
    turn.refresh_from_db()
    assert turn.status == "failed" and turn.error_code == "turn_stale"
    reservation.refresh_from_db()
    assert reservation.status == "released"
    account = _account(s)
    assert account.balance_micro == balance_before and account.reserved_micro == 0
    ledger_ok()
    # The session is usable again.
    assert s.post("And now?").status_code == 201


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_database_unreachable_after_the_call_is_503_then_the_sweep_fails_the_turn(
    llm_stub: LlmStub, short_pool_timeout: None
) -> None:
    s = single_agent()
    balance_before = _account(s).balance_micro
    llm_stub.enqueue(StubReply(text="Nobody will store this.", delay=1.0))
    outage = _unreachable_while_the_stub_holds_the_reply(llm_stub, db_faults.database_name())
    try:
        response = s.post("Is the database there?")
    finally:
        outage.result().release()
    assert response.status_code == 503, response.content
    assert response.json() == {
        "error": {
            "code": "service_unavailable",
            "message": "The database is unavailable; retry shortly.",
            "details": {},
        }
    }
    assert int(response.headers["Retry-After"]) >= 1
    connection.close_pool()  # a fresh pool, not one still backing off its reconnections
    _after_the_outage_the_sweep_fails_the_turn(s, balance_before)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_database_unreachable_during_a_streamed_turn_ends_the_stream(
    llm_stub: LlmStub, short_pool_timeout: None
) -> None:
    s = single_agent()
    balance_before = _account(s).balance_micro
    llm_stub.enqueue(StubReply(text="Nobody will store this either.", delay=1.0))
    outage = _unreachable_while_the_stub_holds_the_reply(llm_stub, db_faults.database_name())
    try:
        response = s.client.post(
            s.url, {"input": "Streaming?"}, format="json", HTTP_ACCEPT="text/event-stream"
        )
        assert response.status_code == 200
        body = b"".join(response.streaming_content).decode()  # ends: never hangs
    finally:
        outage.result().release()
    events = [line.split(": ", 1)[1] for line in body.splitlines() if line.startswith("event: ")]
    assert events[0] == "turn.started"
    assert events[-1] == "error"
    assert "turn.completed" not in events
    connection.close_pool()
    _after_the_outage_the_sweep_fails_the_turn(s, balance_before)
