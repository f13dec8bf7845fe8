"""Turn control where it can go wrong: a retry whose write loses its COMMIT, a retry that breaks
off, two retries racing, a speaker deleted since the turn, a cancel asked while Redis blinked, a
retry of a turn whose process died. Each ends with the turn closed, the ledger clean and every
reply where it belongs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from sessions.models import Message, Turn
from sessions.services.turns import calls, control
from sessions.services.turns import retry as retry_module
from sessions.tests.builders import FAILING, Room, ledger_ok
from testing.stub_llm import StubReply
from usage.models import LlmCallEvent, Reservation

pytestmark = pytest.mark.postgres


def _retry(room: Room, index: int = 1, **body: Any) -> Any:
    url = f"/api/v1/sessions/{room.session.id}/turns/{index}/retry"
    return room.client.post(url, body, format="json")


def _replies(turn: Turn) -> list[tuple[str, int, str]]:
    rows = Message.objects.filter(turn=turn, role="assistant").order_by("sequence", "created_at")
    return [(m.agent.handle, m.sequence, m.status) for m in rows.select_related("agent")]


def _partial_round_table(llm_stub: Any) -> Room:
    """A round table where @bo failed: ada ok, bo error, cy ok."""
    room = Room("round_table")
    llm_stub.enqueue(StubReply(status=500), model=FAILING, times=3)
    assert room.post("What do you think?").json()["status"] == "partial"
    return room


def test_a_retry_whose_commit_answer_is_lost_bills_once(db, llm_stub, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    room = Room("manual")
    assert room.post("@ada hello").status_code == 201

    def commit_answer_lost(write: Any, committed: Any) -> Any:
        write()  # it committed, but the answer never came back: what did commit is read
        found = committed()
        assert found is not None
        return found

    monkeypatch.setattr(calls, "retry_on_lost_connection", commit_answer_lost)
    response = _retry(room, agent_ids=[str(room.ada.id)])
    assert response.status_code == 200, response.content
    turn = Turn.objects.get(session=room.session)
    assert turn.status == "completed"
    keys = list(
        LlmCallEvent.objects.filter(turn_id=turn.id).values_list("idempotency_key", flat=True)
    )
    assert len(keys) == 2 and not any(k.endswith(":recovered") for k in keys)
    assert _replies(turn) == [("ada", 1, "superseded"), ("ada", 1, "ok")]
    ledger_ok()


def test_a_retry_that_breaks_off_keeps_the_other_replies(db, llm_stub, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    room = Room("round_table")
    first = room.post("What do you think?").json()
    assert first["status"] == "completed"

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the write")

    monkeypatch.setattr(calls, "call_write", broken)
    response = _retry(room, agent_ids=[str(room.bo.id)])
    assert response.status_code == 200, response.content  # one of three speakers failed
    body = response.json()
    assert body["status"] == "partial"
    turn = Turn.objects.get(session=room.session)
    assert _replies(turn) == [
        ("ada", 1, "ok"),
        ("bo", 2, "superseded"),
        ("bo", 2, "error"),
        ("cy", 3, "ok"),
    ]
    assert "Ada:" in turn.assistant_output and "Cy:" in turn.assistant_output
    assert "Bo:" not in turn.assistant_output
    assert not Reservation.objects.filter(turn_id=turn.id, status="active").exists()
    monkeypatch.undo()
    # The turn still counts for what comes next, and its failed reply can be retried.
    assert _retry(room).json()["status"] == "completed"
    ledger_ok()


def test_a_single_speaker_retry_that_breaks_off_is_502(db, llm_stub, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    room = Room("manual")
    assert room.post("@ada hello").status_code == 201

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the write")

    monkeypatch.setattr(calls, "call_write", broken)
    response = _retry(room, agent_ids=[str(room.ada.id)])
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "internal_error"
    turn = Turn.objects.get(session=room.session)
    assert turn.status == "failed"
    assert _replies(turn) == [("ada", 1, "superseded"), ("ada", 1, "error")]
    ledger_ok()


def test_a_retry_planned_before_another_ended_is_refused(db, llm_stub, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    room = _partial_round_table(llm_stub)
    real = retry_module._run_again
    other: dict[str, Any] = {}

    def another_retry_first(*args: Any, **kwargs: Any) -> Any:
        if not other:  # a first retry comes and ends while this one is between plan and lock
            other["started"] = True
            other["response"] = _retry(room)
        return real(*args, **kwargs)

    monkeypatch.setattr(retry_module, "_run_again", another_retry_first)
    late = _retry(room)
    assert other["response"].status_code == 200
    assert late.status_code == 409 and late.json()["error"]["code"] == "turn_in_progress"
    turn = Turn.objects.get(session=room.session)
    assert _replies(turn) == [
        ("ada", 1, "ok"),
        ("bo", 2, "superseded"),
        ("bo", 2, "ok"),
        ("cy", 3, "ok"),
    ]
    ledger_ok()


def test_a_speaker_deleted_since_keeps_its_place_and_reply(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = _partial_round_table(llm_stub)
    room.ada.deleted_at = timezone.now()
    room.ada.save(update_fields=["deleted_at"])
    response = _retry(room)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "completed"
    assert body["assistant_output"].startswith("Ada:")
    turn = Turn.objects.get(session=room.session)
    assert _replies(turn) == [
        ("ada", 1, "ok"),
        ("bo", 2, "superseded"),
        ("bo", 2, "ok"),
        ("cy", 3, "ok"),
    ]
    # A deleted agent cannot be regenerated.
    refused = _retry(room, agent_ids=[str(room.ada.id)])
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_agent"


def test_a_cancel_asked_while_redis_blinked_is_still_seen(db, llm_stub, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    room = Room("manual")
    assert room.post("@ada hello").status_code == 201
    turn = Turn.objects.get(session=room.session)
    Turn.objects.filter(pk=turn.pk).update(status="running")
    turn.status = "running"
    monkeypatch.setattr(settings, "REDIS_URL", "redis://127.0.0.1:6379/5")

    def blink(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Redis did not answer")

    monkeypatch.setattr(control.cache, "set", blink)
    assert control.turn_cancel_request(turn=turn, by="user a@example.com")
    monkeypatch.setattr(control.cache, "get_many", lambda keys: {})  # Redis is back, empty
    assert control._cancelled([turn.pk]) == []  # a tick that reads Redis alone
    assert control._cancelled([turn.pk], rows_too=True) == [turn.pk]  # the periodic row read


def test_a_retry_fails_a_stale_running_turn_first(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = _partial_round_table(llm_stub)
    turn = Turn.objects.get(session=room.session)
    long_ago = timezone.now() - timedelta(seconds=settings.TURN_STALE_AFTER_SECONDS + 5)
    Turn.objects.filter(pk=turn.pk).update(status="running", progress_at=long_ago)
    # Its process died: the retry fails it first, then runs (no wait for the sweep).
    response = _retry(room)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "completed"
    ledger_ok()


def test_a_cancel_with_a_body_is_400(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    room = Room("manual")
    assert room.post("@ada hello").status_code == 201
    url = f"/api/v1/sessions/{room.session.id}/turns/1/cancel"
    response = room.client.post(url, {"bogus": 1}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert room.client.post(url, {}, format="json").status_code == 409  # ended: not running
