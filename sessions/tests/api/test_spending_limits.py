"""Spending limits enforced on turns, through the API: each scope and window, concurrent turns
against a limit, a limit reached mid-round-table, the UTC boundary on a controllable clock,
summaries and retries, which 402 wins, and the query count of a turn under a limit."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.models import ApiKey
from sessions.models import SessionSummary, TurnContextAudit
from sessions.services.summaries import summary_generate
from sessions.tests.builders import Room, ledger_ok, single_agent
from testing import factories
from testing.clock import ProcessClock
from testing.stub_llm import StubReply
from usage.models import LlmCallEvent, Refusal, Reservation, SpendingLimit, SpendTotal

pytestmark = pytest.mark.postgres


def _key_of(key: str) -> ApiKey:
    return ApiKey.objects.get(public_id=key.split("_")[1])


def _limit(user: Any, micro: int, scope: str = "user", window: str = "day", **target: Any) -> Any:
    return SpendingLimit.objects.create(
        user=user, scope=scope, window=window, limit_micro=micro, **target
    )


def _first_reservation(turn_id: Any) -> int:
    return Reservation.objects.filter(turn_id=turn_id).order_by("created_at").first().amount_micro


def _burned() -> int:
    return sum(LlmCallEvent.objects.values_list("credits_burned", flat=True))


@pytest.mark.parametrize("window", ["day", "month"])
@pytest.mark.parametrize("scope", ["user", "room", "api_key"])
def test_each_scope_and_window_refuses_a_turn_that_does_not_fit(
    db, llm_stub, write_path, scope: str, window: str
) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    first = s.post("hello")
    assert first.status_code == 201
    spent = _burned()
    required = _first_reservation(first.json()["id"])
    key = _key_of(s.client._credentials["HTTP_AUTHORIZATION"].split()[1])
    target = {"user": {}, "room": {"room_id": s.room.id}, "api_key": {"api_key": key}}[scope]
    # Room for the call's worst case but one micro-credit.
    limit = _limit(s.user, spent + required - 1, scope, window, **target)

    s.session = factories.make_session(s.room)  # the same prompt, so the same worst case
    refused = s.post("hello")
    assert refused.status_code == 402, refused.content
    error = refused.json()["error"]
    assert error["code"] == "spending_limit_reached"
    details = error["details"]
    assert details["limit_id"] == str(limit.id)
    assert (details["scope"], details["window"]) == (scope, window)
    assert details["spent"] == f"{spent / 1e6:.6f}" and details["reserved"] == "0.000000"
    assert details["required"] == f"{required / 1e6:.6f}"
    assert details["limit"] == f"{(spent + required - 1) / 1e6:.6f}"
    day = datetime.now(UTC).date()
    resets = (
        day + timedelta(days=1)
        if window == "day"
        else (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    )
    assert details["resets_at"] == f"{resets.isoformat()}T00:00:00Z"
    assert Refusal.objects.get().reason == "spending_limit_reached"
    assert not Reservation.objects.filter(status="active").exists()

    # The limit is about its subject only: another room, another key pass.
    other = factories.make_session(factories.make_room(owner=s.user))
    factories.make_agent(other.room, handle="ada", name="Ada", model_id="openai/gpt-4o-mini")
    _, other_key = factories.make_api_key(s.user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")
    elsewhere = client.post(f"/api/v1/sessions/{other.id}/turns", {"input": "hi"}, format="json")
    assert elsewhere.status_code == (402 if scope == "user" else 201), elsewhere.content
    # One micro-credit more and the same turn fits.
    SpendingLimit.objects.filter(pk=limit.pk).update(limit_micro=limit.limit_micro + 1 + 10**6)
    assert s.post("hello").status_code == 201
    ledger_ok()


def test_credits_are_reported_when_both_refuse(db, llm_stub, write_path) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    _limit(s.user, 1)
    from usage.services import credits_adjust

    credits_adjust(user=s.user, amount_micro=-(10_000_000_000 - 1), idempotency_key="drain")
    refused = s.post("hello")
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "insufficient_credits"
    assert Refusal.objects.get().reason == "insufficient_credits"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_twenty_concurrent_turns_against_a_limit_that_admits_two(llm_stub, write_path) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    calibration = s.post("race")
    assert calibration.status_code == 201
    required = _first_reservation(calibration.json()["id"])
    spent = _burned()
    # Two worst cases fit on top of what is spent, a third does not.
    _limit(s.user, spent + 2 * required + required // 2)
    sessions = [factories.make_session(s.room) for _ in range(20)]
    # Each admitted call burns its whole worst case (the tokens it reserved for), so whether
    # the two admitted turns still hold their reservations or have already burned them when
    # the others try, a third never fits; slow answers make the first case the usual one.
    audit = TurnContextAudit.objects.get(turn_id=calibration.json()["id"])
    worst = {
        "prompt_tokens": audit.estimated_tokens_final,
        "completion_tokens": audit.output_reserve,
    }
    llm_stub.enqueue(StubReply(text="admitted", delay=1.0, usage=worst), times=20)
    barrier = threading.Barrier(20)
    statuses: list[tuple[int, str]] = []
    lock = threading.Lock()
    header = s.client._credentials["HTTP_AUTHORIZATION"]

    def fire(session: Any) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        barrier.wait()
        response = client.post(
            f"/api/v1/sessions/{session.id}/turns", {"input": "race"}, format="json"
        )
        code = response.json()["error"]["code"] if response.status_code != 201 else ""
        with lock:
            statuses.append((response.status_code, code))
        connections.close_all()

    threads = [threading.Thread(target=fire, args=(session,)) for session in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(statuses) == [(201, "")] * 2 + [(402, "spending_limit_reached")] * 18
    assert not Reservation.objects.filter(status="active").exists()
    assert Refusal.objects.filter(reason="spending_limit_reached").count() == 18
    admitted = LlmCallEvent.objects.exclude(turn_id=calibration.json()["id"])
    # (within the reservation's rounding up)
    assert [abs(e.credits_burned - required) < required / 100 for e in admitted] == [True] * 2
    ledger_ok()


def test_a_limit_reached_mid_round_table_fails_only_the_later_speakers(
    db, llm_stub, write_path
) -> None:  # type: ignore[no-untyped-def]
    room = Room("round_table")
    calibration = room.post("what next?")
    assert calibration.status_code == 201
    spent = _burned()
    first_required = _first_reservation(calibration.json()["id"])
    # The same turn in a fresh session: the first speaker fits, then the room is full.
    room.session = factories.make_session(room.room)
    _limit(room.user, spent + first_required, "room", "day", room_id=room.room.id)

    response = room.post("what next?")
    assert response.status_code == 201, response.content
    turn = response.json()
    assert turn["status"] == "partial"
    replies = {m["agent"]["handle"]: m for m in turn["messages"] if m["role"] == "assistant"}
    assert replies["ada"]["status"] == "ok"
    for handle in ("bo", "cy"):
        assert replies[handle]["status"] == "error"
        assert replies[handle]["error"]["code"] == "spending_limit_reached"
    assert not Reservation.objects.filter(status="active").exists()
    ledger_ok()


def test_the_day_window_resets_at_the_utc_boundary(
    db, llm_stub, process_clock: ProcessClock
) -> None:  # type: ignore[no-untyped-def]
    process_clock._now = datetime(2026, 12, 4, 23, 59, 0, tzinfo=UTC)
    s = single_agent()
    first = s.post("before midnight")
    assert first.status_code == 201
    required = _first_reservation(first.json()["id"])
    spent = _burned()
    limit = _limit(s.user, spent + required - 1)
    s.session = factories.make_session(s.room)
    refused = s.post("before midnight")
    assert refused.status_code == 402
    assert refused.json()["error"]["details"]["resets_at"] == "2026-12-05T00:00:00Z"

    process_clock.advance(61)  # 00:00:01 UTC
    state = s.client.get(f"/api/v1/auth/spending-limits/{limit.id}").json()
    assert state["spent"] == "0.000000" and state["resets_at"] == "2026-12-06T00:00:00Z"
    after = s.post("before midnight")
    assert after.status_code == 201, after.content
    # Each call counted in the day it started.
    days = dict(
        SpendTotal.objects.filter(scope="user", window="day").values_list(
            "period_start", "burned_micro"
        )
    )
    assert set(days) == {datetime(2026, 12, 4).date(), datetime(2026, 12, 5).date()}
    assert days[datetime(2026, 12, 4).date()] == spent


def test_a_summary_refused_by_a_limit_fails_with_its_reason(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    for i in range(3):
        assert s.post(f"question {i}").status_code == 201
    summary = SessionSummary.objects.create(
        session=s.session, last_turn_covered=2, status="pending", model="openai/gpt-4o-mini"
    )
    _limit(s.user, 1, "room", "month", room_id=s.room.id)
    requests_before = len(llm_stub.requests)

    summary_generate(summary_id=summary.id)

    summary.refresh_from_db()
    assert summary.status == "failed" and summary.error_code == "spending_limit_reached"
    assert len(llm_stub.requests) == requests_before  # never called
    assert Refusal.objects.get().purpose == "summary"


def test_a_retry_counts_toward_the_key_that_asked_for_it(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    first = s.post("hello")
    assert first.status_code == 201
    _, other_key = factories.make_api_key(s.user)
    _limit(s.user, 1, "api_key", "day", api_key=_key_of(other_key))
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")
    retry_url = f"{s.url}/1/retry"
    body = {"agent_ids": [str(s.agent.id)]}
    refused = other.post(retry_url, body, format="json")
    assert refused.status_code == 402
    assert refused.json()["error"]["details"]["scope"] == "api_key"
    assert s.client.post(retry_url, body, format="json").status_code == 200
    first_key = _key_of(s.client._credentials["HTTP_AUTHORIZATION"].split()[1])
    assert set(LlmCallEvent.objects.values_list("api_key_id", flat=True)) == {first_key.id}
    ledger_ok()


def test_a_turn_under_limits_stays_within_the_query_target(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    key = _key_of(s.client._credentials["HTTP_AUTHORIZATION"].split()[1])
    _limit(s.user, 10**12, "user", "day")
    _limit(s.user, 10**12, "user", "month")
    _limit(s.user, 10**12, "room", "month", room_id=s.room.id)
    _limit(s.user, 10**12, "api_key", "day", api_key=key)
    assert s.post("warm the caches").status_code == 201
    with CaptureQueriesContext(connection) as queries:
        response = s.post("and now?")
    assert response.status_code == 201
    # Pre-flight 4; the opening 7 (the one statement that finds limits, whether the user has
    # any, then BEGIN, the session's and the account's locks, the statement checking the
    # limits, COMMIT); the call's write 1 (the spending totals in it); the close 1.
    assert len(queries.captured_queries) == 13, [q["sql"][:80] for q in queries.captured_queries]
    totals = SpendTotal.objects.filter(burned_micro__gt=0)
    assert sorted(totals.values_list("scope", "window")) == sorted(
        [(scope, w) for scope in ("user", "room", "api_key") for w in ("day", "month")]
    )
