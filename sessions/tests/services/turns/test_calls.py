"""Credits through the turn API: reservations under concurrency, idempotent billing, failures
billed only for what was consumed."""

from __future__ import annotations

import threading

import pytest
from django.db import connections
from rest_framework.test import APIClient

from sessions.models import Turn, TurnContextAudit
from sessions.tests.builders import Setup, ledger_ok, single_agent
from testing import factories
from testing.stub_llm import StubReply
from usage.models import CreditAccount, LedgerEntry, LlmCallEvent, Reservation
from usage.selectors import credits_for_user
from usage.services import credits_grant

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("write_path")]


def _first_call_reservation(s: Setup) -> tuple[int, dict[str, int]]:
    """What one turn of this setup reserves (read off a probe turn's settled reservation), and
    the usage that burns exactly that worst case (the tokens it was reserved for)."""
    response = s.post("go")
    assert response.status_code == 201
    audit = TurnContextAudit.objects.get(turn_id=response.json()["id"])
    worst = {
        "prompt_tokens": audit.estimated_tokens_final,
        "completion_tokens": audit.output_reserve,
    }
    return Reservation.objects.get(turn_id=response.json()["id"]).amount_micro, worst


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_twenty_turns_at_once_never_spend_credits_the_balance_did_not_hold(llm_stub) -> None:  # type: ignore[no-untyped-def]
    probe = single_agent()
    per_turn, worst = _first_call_reservation(probe)
    llm_stub.reset()

    user, key = factories.make_api_key()
    grant = per_turn * 5 + per_turn // 2  # covers about five turns' worst cases
    credits_grant(user=user, amount_micro=grant, idempotency_key=f"five-{user.id}")
    room = factories.make_room(owner=user)
    factories.make_agent(room, name="Ada", handle="ada", system_prompt="You are Ada.")
    sessions = [factories.make_session(room) for _ in range(20)]
    # Each admitted turn burns its whole worst case: whether the first ones still hold their
    # reservations or have burned them when the last ones try, only five fit.
    llm_stub.enqueue(StubReply(text="slow enough to overlap", delay=1.0, usage=worst), times=20)

    barrier = threading.Barrier(20)
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def fire(session_id: str) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        barrier.wait()
        response = client.post(
            f"/api/v1/sessions/{session_id}/turns", {"input": "go"}, format="json"
        )
        with lock:
            results.append((response.status_code, response.json().get("error", {}).get("code", "")))
        connections.close_all()

    threads = [threading.Thread(target=fire, args=(str(s.id),)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    accepted = [r for r in results if r[0] == 201]
    refused = [r for r in results if r[0] == 402]
    assert len(accepted) + len(refused) == 20, results
    assert len(accepted) == 5
    assert {code for _, code in refused} == {"insufficient_credits"}
    # The refused turns never reached the provider and wrote nothing.
    assert len(llm_stub.requests) == 5
    assert Turn.objects.filter(session__room=room).count() == 5
    account = CreditAccount.objects.get(user=user)
    burned = -sum(
        LedgerEntry.objects.filter(account=account, kind="burn").values_list(
            "amount_micro", flat=True
        )
    )
    assert 0 < burned <= grant
    assert account.balance_micro == grant - burned >= 0
    assert account.reserved_micro == 0
    ledger_ok()


def test_idempotent_retry_is_billed_once(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    key = {"Idempotency-Key": "bill-once"}
    first = s.post("hello", headers=key)
    second = s.post("hello", headers=key)
    assert first.status_code == second.status_code == 201
    events = LlmCallEvent.objects.filter(user=s.user)
    assert events.count() == 1
    assert LedgerEntry.objects.filter(kind="burn", event__in=events).count() == 1
    ledger_ok()


def test_provider_failure_bills_nothing_and_releases_the_reservation(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    before = credits_for_user(s.user)
    llm_stub.enqueue(StubReply(status=500), times=3)
    assert s.post("hello").status_code == 502
    event = LlmCallEvent.objects.get(user=s.user)
    assert event.credits_burned == 0 and event.input_tokens == 0
    assert not LedgerEntry.objects.filter(kind="burn").exists()
    assert not Reservation.objects.filter(status="active").exists()
    assert credits_for_user(s.user) == before
    ledger_ok()


def test_cut_mid_stream_bills_what_the_provider_reported_only(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    llm_stub.enqueue(StubReply(text="a b c d e f", cut_after_chunks=2))
    assert s.post("hello").status_code == 502
    event = LlmCallEvent.objects.get(user=s.user)
    assert event.status == "error" and event.credits_burned == 0
    assert not Reservation.objects.filter(status="active").exists()
    ledger_ok()


def test_auth_me_shows_the_credits(db, llm_stub) -> None:  # type: ignore[no-untyped-def]
    s = single_agent()
    assert s.post("hello").status_code == 201
    me = s.client.get("/api/v1/auth/me").json()
    balance = credits_for_user(s.user)
    assert me["credits"] == balance
    assert (
        me["credits"]["balance"].count(".") == 1
        and len(me["credits"]["balance"].split(".")[1]) == 6
    )
