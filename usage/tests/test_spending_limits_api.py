"""`auth/spending-limits` through the API: each scope, the validation, ownership, the staff
rules, and the figures `GET usage` and `auth/me` show. The enforcement on turns is in
sessions/tests/api/test_spending_limits.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import ApiKey
from pantheon.errors import ApplicationError
from testing import factories
from usage.models import LlmCallEvent, SpendingLimit, SpendTotal
from usage.selectors import period_bounds
from usage.services import (
    CallRecord,
    call_event_record,
    credits_adjust,
    credits_grant,
    credits_refund,
)
from usage.services.limits import spend_subjects

pytestmark = pytest.mark.postgres

URL = "/api/v1/auth/spending-limits"


class Caller:
    def __init__(self) -> None:
        self.user, self.key = factories.make_api_key()
        self.api_key = ApiKey.objects.get(public_id=self.key.split("_")[1])
        self.room = factories.make_room(owner=self.user)
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.key}")

    def create(self, **body: Any) -> Any:
        return self.client.post(URL, body, format="json")


@pytest.fixture
def caller(db) -> Caller:  # type: ignore[no-untyped-def]
    return Caller()


def _burn(user: Any, micro: int, *, room_id: Any = None, api_key_id: Any = None) -> LlmCallEvent:
    """A call that burned about `micro` (priced by the catalog's gpt-4o-mini, so exact burns
    come from the figures it returns)."""
    credits_grant(user=user, amount_micro=10**10, idempotency_key=f"g-{user.id}-{micro}")
    return call_event_record(
        user=user,
        reservation=None,
        call=CallRecord(
            purpose="agent_reply",
            provider="test",
            model_id="openai/gpt-4o-mini",
            status="ok",
            started_at=datetime.now(UTC),
            latency_ms=1,
            time_to_first_token_ms=1,
            prompt_tokens=micro,
            completion_tokens=0,
            usage_source="provider",
            generation_id=None,
            idempotency_key=f"burn-{user.id}-{micro}-{room_id}-{api_key_id}",
            room_id=room_id,
            api_key_id=api_key_id,
        ),
    )


# --- each scope -----------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["day", "month"])
@pytest.mark.parametrize("scope", ["user", "room", "api_key"])
def test_a_limit_on_each_scope_and_window(caller: Caller, scope: str, window: str) -> None:
    target = {
        "user": {},
        "room": {"room_id": str(caller.room.id)},
        "api_key": {"api_key_id": str(caller.api_key.id)},
    }[scope]
    response = caller.create(scope=scope, window=window, limit="25", **target)
    assert response.status_code == 201, response.content
    body = response.json()
    _, resets_at = period_bounds(window, datetime.now(UTC))
    assert body["scope"] == scope and body["window"] == window
    assert body["limit"] == "25.000000" and body["spent"] == "0.000000"
    assert body["remaining"] == "25.000000" and body["set_by_staff"] is False
    assert body["resets_at"] == resets_at.isoformat().replace("+00:00", "Z")
    assert body["room_id"] == target.get("room_id") and body["api_key_id"] == target.get(
        "api_key_id"
    )
    listing = caller.client.get(URL).json()
    assert [limit["id"] for limit in listing["results"]] == [body["id"]]
    assert caller.client.get(f"{URL}/{body['id']}").json() == body


def test_spending_before_the_limit_counts_and_only_its_subject(caller: Caller) -> None:
    other_room = factories.make_room(owner=caller.user)
    in_room = _burn(caller.user, 40_000, room_id=caller.room.id, api_key_id=caller.api_key.id)
    elsewhere = _burn(caller.user, 20_000, room_id=other_room.id)
    room_limit = caller.create(scope="room", room_id=str(caller.room.id), window="day", limit="9")
    key_limit = caller.create(
        scope="api_key", api_key_id=str(caller.api_key.id), window="month", limit="9"
    )
    user_limit = caller.create(scope="user", window="month", limit="9")
    assert room_limit.json()["spent"] == _credits(in_room.credits_burned)
    assert key_limit.json()["spent"] == _credits(in_room.credits_burned)
    both = in_room.credits_burned + elsewhere.credits_burned
    assert user_limit.json()["spent"] == _credits(both)


def _credits(micro: int) -> str:
    from pantheon.credits import format_credits

    return format_credits(micro)


def test_a_refund_takes_its_call_back_from_the_totals(caller: Caller) -> None:
    event = _burn(caller.user, 400_000, room_id=caller.room.id)
    assert event.credits_burned > 2
    rows = SpendTotal.objects.filter(period_start__isnull=False)
    assert sorted(rows.values_list("scope", flat=True)) == ["room", "room", "user", "user"]
    assert {r.burned_micro for r in rows} == {event.credits_burned}
    half = event.credits_burned // 2
    credits_refund(user=caller.user, amount_micro=half, event=event, idempotency_key="r1")
    assert {r.burned_micro for r in rows.all()} == {event.credits_burned - half}
    # A refund larger than what is left takes back only what the call is still charged: the
    # other calls of the day keep counting.
    other = _burn(caller.user, 200_000, room_id=caller.room.id)
    credits_refund(
        user=caller.user, amount_micro=event.credits_burned, event=event, idempotency_key="r2"
    )
    assert {r.burned_micro for r in rows.all()} == {other.credits_burned}
    credits_refund(user=caller.user, amount_micro=5, event=event, idempotency_key="r3")
    assert {r.burned_micro for r in rows.all()} == {other.credits_burned}


def test_an_extra_charge_counts_and_another_users_event_is_refused(caller: Caller) -> None:
    event = _burn(caller.user, 400_000)
    credits_adjust(user=caller.user, amount_micro=-7, event=event, idempotency_key="a1")
    totals = SpendTotal.objects.filter(scope="user")
    assert {t.burned_micro for t in totals} == {event.credits_burned + 7}
    stranger = Caller()
    with pytest.raises(ApplicationError) as refused:
        credits_refund(user=stranger.user, amount_micro=5, event=event, idempotency_key="a2")
    assert refused.value.code == "validation_error"
    assert {t.burned_micro for t in totals.all()} == {event.credits_burned + 7}


def test_a_call_counts_in_the_day_and_month_it_started(db) -> None:  # type: ignore[no-untyped-def]
    started = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    subjects = spend_subjects(user_id="u", room_id=None, api_key_id=None, started_at=started)
    assert [(s[2], s[3].isoformat()) for s in subjects] == [
        ("day", "2026-12-31"),
        ("month", "2026-12-01"),
    ]
    assert period_bounds("month", started)[1] == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_bounds("day", started)[1] == datetime(2027, 1, 1, tzinfo=UTC)
    leap = datetime(2028, 2, 29, 12, tzinfo=UTC)
    assert period_bounds("month", leap) == (
        datetime(2028, 2, 1, tzinfo=UTC),
        datetime(2028, 3, 1, tzinfo=UTC),
    )


# --- validation and ownership -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "room", "window": "day", "limit": "1"}, "room_id"),
        ({"scope": "api_key", "window": "day", "limit": "1"}, "api_key_id"),
        ({"scope": "user", "window": "day", "limit": "1", "room_id": "ROOM"}, "room_id"),
        ({"scope": "user", "window": "week", "limit": "1"}, "window"),
        ({"scope": "team", "window": "day", "limit": "1"}, "scope"),
        ({"scope": "user", "window": "day", "limit": "0"}, "limit"),
        ({"scope": "user", "window": "day", "limit": "-5"}, "limit"),
        ({"scope": "user", "window": "day", "limit": "0.0000001"}, "limit"),
        ({"scope": "user", "window": "day", "limit": "lots"}, "limit"),
        ({"scope": "user", "window": "day", "limit": "1e400"}, "limit"),
        ({"scope": "user", "window": "day", "limit": "1e999999"}, "limit"),
        ({"scope": "user", "window": "day", "limit": "1e-999999999"}, "limit"),
        ({"scope": "user", "window": "day", "limit": "\u0661\u0662"}, "limit"),  # Arabic-Indic 12
        ({"scope": "user", "window": "day", "limit": "12345678901234"}, "limit"),
        ({"scope": "user", "window": "day", "limit": "NaN"}, "limit"),
        ({"scope": "user", "window": "day", "limit": "5\u0000"}, "limit"),
        ({"scope": "user", "window": "day", "limit": ["5"]}, "limit"),
        ({"scope": "user", "window": "day", "limit": True}, "limit"),
        ({"scope": "user", "window": "day"}, "limit"),
        ({"scope": "user", "window": "day", "limit": "1", "extra": 1}, "extra"),
    ],
)
def test_invalid_limits_are_400_naming_the_field(caller: Caller, body: dict, field: str) -> None:
    body = {k: (str(caller.room.id) if v == "ROOM" else v) for k, v in body.items()}
    response = caller.create(**body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error" and field in error["details"]
    assert not SpendingLimit.objects.exists()


def test_another_users_room_key_and_limit_are_404(caller: Caller) -> None:
    stranger = Caller()
    room = caller.create(scope="room", room_id=str(stranger.room.id), window="day", limit="1")
    key = caller.create(
        scope="api_key", api_key_id=str(stranger.api_key.id), window="day", limit="1"
    )
    assert (room.status_code, key.status_code) == (404, 404)
    assert room.json()["error"]["code"] == "not_found"
    theirs = stranger.create(scope="user", window="day", limit="1").json()["id"]
    assert caller.client.get(f"{URL}/{theirs}").status_code == 404
    assert caller.client.patch(f"{URL}/{theirs}", {"limit": "9"}, format="json").status_code == 404
    assert caller.client.delete(f"{URL}/{theirs}").status_code == 404
    assert caller.client.get(URL).json()["results"] == []
    assert SpendingLimit.objects.get(pk=theirs).limit_micro == 1_000_000


def test_a_second_limit_on_the_same_target_and_window_is_409(caller: Caller) -> None:
    assert caller.create(scope="user", window="day", limit="1").status_code == 201
    again = caller.create(scope="user", window="day", limit="2")
    assert again.status_code == 409 and again.json()["error"]["code"] == "spending_limit_exists"
    assert caller.create(scope="user", window="month", limit="2").status_code == 201


def test_the_user_changes_and_removes_their_own_limits(caller: Caller) -> None:
    limit = caller.create(scope="user", window="day", limit="5").json()
    raised = caller.client.patch(f"{URL}/{limit['id']}", {"limit": "50.5"}, format="json")
    assert raised.status_code == 200 and raised.json()["limit"] == "50.500000"
    assert caller.client.delete(f"{URL}/{limit['id']}").status_code == 204
    assert not SpendingLimit.objects.exists()


def test_a_staff_limit_can_be_lowered_never_raised_or_removed(caller: Caller) -> None:
    staff_limit = SpendingLimit.objects.create(
        user=caller.user, scope="user", window="month", limit_micro=10_000_000, set_by_staff=True
    )
    url = f"{URL}/{staff_limit.id}"
    assert caller.client.get(url).json()["set_by_staff"] is True
    raised = caller.client.patch(url, {"limit": "10.000001"}, format="json")
    assert raised.status_code == 403
    assert raised.json()["error"]["code"] == "permission_denied"
    removed = caller.client.delete(url)
    assert removed.status_code == 403 and removed.json()["error"]["code"] == "permission_denied"
    lowered = caller.client.patch(url, {"limit": "4"}, format="json")
    assert lowered.status_code == 200 and lowered.json()["set_by_staff"] is True
    staff_limit.refresh_from_db()
    assert staff_limit.limit_micro == 4_000_000


# --- what usage and auth/me show --------------------------------------------------------------


def test_usage_lists_the_limits_and_me_warns_from_80_percent(caller: Caller) -> None:
    event = _burn(caller.user, 2_000_000)
    burned = event.credits_burned
    assert burned > 10
    # 80 % exactly warns; 79 % does not.
    warned = SpendingLimit.objects.create(
        user=caller.user, scope="user", window="day", limit_micro=burned * 100 // 80
    )
    SpendingLimit.objects.create(
        user=caller.user, scope="user", window="month", limit_micro=burned * 100 // 79 + 1
    )
    usage = caller.client.get("/api/v1/usage").json()
    by_window = {limit["window"]: limit for limit in usage["spending_limits"]}
    assert by_window["day"]["spent"] == _credits(burned)
    assert by_window["day"]["remaining"] == _credits(warned.limit_micro - burned)
    me = caller.client.get("/api/v1/auth/me").json()
    assert me["spending_warnings"] == [
        {
            "id": str(warned.id),
            "scope": "user",
            "window": "day",
            "limit": _credits(warned.limit_micro),
            "spent": _credits(burned),
        }
    ]


def test_remaining_is_never_below_zero(caller: Caller) -> None:
    event = _burn(caller.user, 2_000_000)
    limit = SpendingLimit.objects.create(
        user=caller.user, scope="user", window="day", limit_micro=max(1, event.credits_burned // 2)
    )
    body = caller.client.get(f"{URL}/{limit.id}").json()
    assert body["remaining"] == "0.000000" and body["spent"] == _credits(event.credits_burned)
