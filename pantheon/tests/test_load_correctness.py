"""Concurrency correctness under load (scenario 5 of the benchmark, bench/README.md) against
the production server command (gunicorn, two uvicorn workers) on the test database, the real
`openai` client path and the stub upstream.

1. 50 simultaneous POSTs on one session (released by a barrier, one connection each): every
   answer is 201 or the contract's 409 `turn_in_progress`; the turn indexes in the database are
   1..n with no duplicate and no gap; each 201 body says what the database holds.
2. 50 users with one session each, all at once: all 201.
3. `verify_ledger` finds nothing, and each user's balance is their grant minus the credits
   their call events burned (nothing reserved is left behind).

The stub answers each call after a short delay, so the first admitted turn is still running
when the others arrive: the 409 path is exercised for sure, not by luck of timing."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import Sum

from accounts.models import User
from pantheon.credits import format_credits
from sessions.models import Message, Session, Turn, TurnStatus
from testing import factories
from testing.server import Answer, Server, burst, gunicorn_server, server_env
from testing.stub_llm import StubReply
from usage.models import CreditAccount, LlmCallEvent, Reservation, ReservationStatus
from usage.services import credits_grant

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

CONCURRENT = 50
GRANT_MICRO = 50_000_000  # 50 credits: far more than 50 turns of the stub's short replies
UPSTREAM_DELAY_S = 1.0  # how long the stub takes over each call: the first turn holds the slot
# The throttles still run, but must not refuse the scenario's requests.
RATE = "100000/min"


@pytest.fixture
def server(transactional_db: Any, llm_stub: Any) -> Iterator[Server]:
    """gunicorn + 2 uvicorn workers on this test database, Redis and the stub upstream."""
    env = server_env(
        PANTHEON_THROTTLE_USER=RATE,
        PANTHEON_THROTTLE_TURNS=RATE,
        OPENROUTER_BASE_URL=llm_stub.url,
        OPENROUTER_API_KEY="sk-test",
    )
    with gunicorn_server(env, log_name="load-correctness-gunicorn") as running:
        yield running


def _user_with_session(email: str) -> tuple[User, str, Session]:
    """A user with a key, GRANT_MICRO credits, a room with @ada and one session."""
    user, key = factories.make_api_key(factories.make_user(email=email))
    credits_grant(
        user=user, amount_micro=GRANT_MICRO, note="load test", idempotency_key=f"load:{email}"
    )
    room = factories.make_room(owner=user)
    factories.make_agent(room, handle="ada", name="Ada", system_prompt="You are Ada.")
    return user, key, factories.make_session(room)


def _turn_path(session: Session) -> str:
    return f"/api/v1/sessions/{session.id}/turns"


def _assert_turn_in_progress(answer: Answer) -> None:
    assert answer.body == {
        "error": {
            "code": "turn_in_progress",
            "message": answer.body["error"]["message"],
            "details": answer.body["error"]["details"],
        }
    }, answer
    assert answer.retry_after is not None and int(answer.retry_after) >= 1


def _assert_body_matches_database(body: dict[str, Any], session: Session, text: str) -> None:
    """A 201 body is the turn as stored: index, status, text, messages and usage."""
    turn = Turn.objects.get(pk=body["id"])
    assert str(turn.session_id) == body["session_id"] == str(session.id)
    assert turn.turn_index == body["turn_index"]
    assert turn.status == TurnStatus.COMPLETED == body["status"]
    assert turn.user_input == body["user_input"] == text
    assert turn.assistant_output == body["assistant_output"] != ""
    stored = list(Message.objects.filter(turn=turn).order_by("sequence"))
    assert [str(m.id) for m in stored] == [m["id"] for m in body["messages"]]
    assert [m.content for m in stored] == [m["content"] for m in body["messages"]]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    events = LlmCallEvent.objects.filter(turn_id=turn.pk)
    totals = events.aggregate(
        burned=Sum("credits_burned"), inputs=Sum("input_tokens"), outputs=Sum("output_tokens")
    )
    assert events.count() == 1
    assert body["usage"]["credits_burned"] == format_credits(totals["burned"])
    assert body["usage"]["input_tokens"] == totals["inputs"]
    assert body["usage"]["output_tokens"] == totals["outputs"]


def _fifty_posts_on_one_session(server: Server, llm_stub: Any) -> User:
    user, key, session = _user_with_session("contention@example.com")
    text = "@ada which market first?"
    llm_stub.enqueue(StubReply(text="Germany first.", delay=UPSTREAM_DELAY_S), times=CONCURRENT)

    answers = burst(server, [("POST", _turn_path(session), key, {"input": text})] * CONCURRENT)

    statuses = Counter(a.status for a in answers)
    assert set(statuses) <= {201, 409}, statuses
    assert statuses[201] >= 1 and statuses[409] >= 1, statuses
    for answer in answers:
        if answer.status == 409:
            _assert_turn_in_progress(answer)
        else:
            _assert_body_matches_database(answer.body, session, text)
    accepted = statuses[201]
    indexes = sorted(Turn.objects.filter(session=session).values_list("turn_index", flat=True))
    assert indexes == list(range(1, accepted + 1)), indexes
    assert sorted(a.body["turn_index"] for a in answers if a.status == 201) == indexes
    session.refresh_from_db()
    assert session.turn_counter == accepted
    # A refused turn wrote nothing and never reached the provider.
    assert Message.objects.filter(session=session).count() == 2 * accepted
    assert len(llm_stub.requests) == accepted
    return user


def _fifty_users_at_once(server: Server) -> list[User]:
    prepared = [_user_with_session(f"load{n}@example.com") for n in range(CONCURRENT)]
    jobs = [
        ("POST", _turn_path(session), key, {"input": f"@ada hello from user {n}"})
        for n, (_, key, session) in enumerate(prepared)
    ]

    answers = burst(server, jobs)

    assert Counter(a.status for a in answers) == {201: CONCURRENT}, [
        (a.status, a.body) for a in answers if a.status != 201
    ]
    for n, (answer, (_, _, session)) in enumerate(zip(answers, prepared, strict=True)):
        assert answer.body["turn_index"] == 1
        _assert_body_matches_database(answer.body, session, f"@ada hello from user {n}")
    return [user for user, _, _ in prepared]


def _assert_ledger_consistent(users: list[User]) -> None:
    out = io.StringIO()
    call_command("verify_ledger", stdout=out)
    assert out.getvalue().strip().splitlines()[-1] == "ledger ok"
    assert not Reservation.objects.filter(status=ReservationStatus.ACTIVE).exists()
    for user in users:
        account = CreditAccount.objects.get(user=user)
        burned = LlmCallEvent.objects.filter(user=user).aggregate(total=Sum("credits_burned"))
        assert burned["total"] > 0, f"{user.email}: the turns were not billed"
        assert account.balance_micro == GRANT_MICRO - burned["total"], user.email
        assert account.reserved_micro == 0, user.email


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.timeout(180)
def test_concurrency_correctness_under_load(server: Server, llm_stub: Any) -> None:
    owner = _fifty_posts_on_one_session(server, llm_stub)
    llm_stub.reset()  # the delayed replies the refused turns did not use

    users = _fifty_users_at_once(server)

    _assert_ledger_consistent([owner, *users])
