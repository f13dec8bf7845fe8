"""The staff console for spending limits: limits set in credits (always as staff limits) on their
own pages, on each user's page and from each room's page, a clear form error for a target that
does not fit the scope, the users at or near a limit found without reading history (and with a
fixed number of queries), and the calls refused by reason on the usage dashboard."""

from __future__ import annotations

import html as html_lib
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey, User
from testing.factories import make_api_key, make_room, make_user
from usage.models import (
    LimitScope,
    LimitWindow,
    Refusal,
    RefusalReason,
    SpendingLimit,
    SpendTotal,
)
from usage.selectors.limits import period_start
from usage.services import spending_limit_create

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

LIMITS = "/admin/usage/spendinglimit/"
ADD = f"{LIMITS}add/"
USERS = "/admin/accounts/user/"
DASHBOARD = "/admin/usage/llmcallevent/dashboard/"


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(make_user(is_staff=True, is_superuser=True))
    return client


def _limit(user: User, **fields: Any) -> SpendingLimit:
    """A limit the user set themselves (through the service, as the API does)."""
    fields.setdefault("scope", LimitScope.USER)
    fields.setdefault("window", LimitWindow.DAY)
    fields.setdefault("limit_micro", 10_000_000)
    return spending_limit_create(user=user, **fields)


def _burned(
    scope: str, subject: Any, window: str, micro: int, *, at: datetime | None = None
) -> None:
    """A running total, written directly: what `subject` burned in the window holding `at`."""
    SpendTotal.objects.create(
        scope=scope,
        subject_id=subject,
        window=window,
        period_start=period_start(window, at or timezone.now()),
        burned_micro=micro,
    )


def _errors(html: str) -> str:
    """The text of every error list on a page."""
    lists = re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', html, re.S)
    return html_lib.unescape(" ".join(re.sub(r"<[^>]+>", " ", item) for item in lists))


def _count(client: Client, url: str) -> int:
    client.get(url)  # fills process-wide caches (content types); only the second request counts
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(queries)


def _same_count_for_1_and_30(client: Client, url: str, add_rows: Callable[[int], None]) -> None:
    add_rows(1)
    one = _count(client, url)
    add_rows(29)
    thirty = _count(client, url)
    assert thirty == one, f"{url}: {one} queries for 1 row, {thirty} for 30"


def _listed_users(html: str, users: list[User]) -> set[str]:
    return {u.email for u in users if reverse("admin:accounts_user_change", args=[u.pk]) in html}


# --- the limit's own pages --------------------------------------------------------------------


def test_staff_add_a_limit_in_credits_and_it_is_a_staff_limit(staff: Client) -> None:
    user = make_user()

    response = staff.post(
        ADD, {"user": str(user.pk), "scope": "user", "window": "month", "limit": "12.5"}
    )

    assert response.status_code == 302, _errors(response.content.decode())
    limit = SpendingLimit.objects.get(user=user)
    assert (limit.scope, limit.window, limit.limit_micro) == ("user", "month", 12_500_000)
    assert limit.set_by_staff is True


def test_the_add_form_asks_for_credits_never_micro_credits(staff: Client) -> None:
    html = staff.get(ADD).content.decode()
    assert 'name="limit"' in html
    assert "limit_micro" not in html
    assert "Limit (credits)" in html


def test_staff_changing_a_users_own_limit_makes_it_a_staff_limit(staff: Client) -> None:
    user = make_user()
    limit = _limit(user, limit_micro=5_000_000)
    assert not limit.set_by_staff
    page = staff.get(f"{LIMITS}{limit.pk}/change/").content.decode()
    assert 'value="5.000000"' in page  # the amount is shown in credits

    response = staff.post(
        f"{LIMITS}{limit.pk}/change/",
        {"user": str(user.pk), "scope": "user", "window": "day", "limit": "3"},
    )

    assert response.status_code == 302, _errors(response.content.decode())
    limit.refresh_from_db()
    assert (limit.limit_micro, limit.set_by_staff) == (3_000_000, True)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("room limit without a room", "Required for the scope “Room”"),
        ("user limit with a room", "Only for the scope “Room”"),
        ("user limit with a key", "Only for the scope “API key”"),
        ("key limit without a key", "Required for the scope “API key”"),
        ("another user's key", "Not one of this user's API keys"),
        ("another user's room", "Not one of this user's rooms"),
        ("a room that does not exist", "Not one of this user's rooms"),
        ("a second daily limit", "already has a daily limit on all their spending"),
        ("a second limit on the room", "already has a monthly limit on this room"),
        ("zero credits", "Enter an amount of credits"),
        ("below a micro-credit", "at most 6 decimal places"),
        ("not a number", "Enter an amount of credits"),
    ],
)
def test_a_target_that_does_not_fit_the_scope_is_a_form_error_not_a_500(
    staff: Client, case: str, message: str
) -> None:
    user, _ = make_api_key()
    other, _ = make_api_key()
    room, others_room = make_room(owner=user), make_room(owner=other)
    _limit(user, window="day")
    _limit(user, scope="room", room_id=room.pk, window="month")
    others_key = ApiKey.objects.get(user=other)
    base = {"user": str(user.pk), "scope": "user", "window": "day", "limit": "4"}
    data = {
        "room limit without a room": {"scope": "room"},
        "user limit with a room": {"room_id": str(room.pk), "window": "month"},
        "user limit with a key": {"api_key": str(ApiKey.objects.get(user=user).pk)},
        "key limit without a key": {"scope": "api_key"},
        "another user's key": {"scope": "api_key", "api_key": str(others_key.pk)},
        "another user's room": {"scope": "room", "room_id": str(others_room.pk)},
        "a room that does not exist": {"scope": "room", "room_id": str(uuid.uuid4())},
        "a second daily limit": {},
        "a second limit on the room": {"scope": "room", "room_id": str(room.pk), "window": "month"},
        "zero credits": {"window": "month", "limit": "0"},
        "below a micro-credit": {"window": "month", "limit": "1.0000001"},
        "not a number": {"window": "month", "limit": "ten"},
    }[case]
    before = SpendingLimit.objects.count()

    response = staff.post(ADD, {**base, **data})

    assert response.status_code == 200  # the form again, with the error
    assert message in _errors(response.content.decode())
    assert SpendingLimit.objects.count() == before


def test_a_room_limit_on_the_owners_room_is_accepted(staff: Client) -> None:
    room = make_room()
    response = staff.post(
        ADD,
        {
            "user": str(room.owner_id),
            "scope": "room",
            "room_id": str(room.pk),
            "window": "day",
            "limit": "1.000001",
        },
    )
    assert response.status_code == 302, _errors(response.content.decode())
    limit = SpendingLimit.objects.get(room_id=room.pk)
    assert (limit.user_id, limit.limit_micro, limit.set_by_staff) == (
        room.owner_id,
        1_000_001,
        True,
    )


def test_a_limit_on_a_room_deleted_since_keeps_its_amount_editable(staff: Client) -> None:
    room = make_room()
    limit = _limit(room.owner, scope="room", room_id=room.pk)
    room.deleted_at = timezone.now()
    room.save(update_fields=["deleted_at"])
    data = {"user": str(room.owner_id), "scope": "room", "room_id": str(room.pk), "window": "day"}

    response = staff.post(f"{LIMITS}{limit.pk}/change/", {**data, "limit": "1"})

    assert response.status_code == 302, _errors(response.content.decode())
    limit.refresh_from_db()
    assert (limit.limit_micro, limit.set_by_staff) == (1_000_000, True)
    # A new limit on it is refused: the room is no longer one of the owner's.
    again = staff.post(ADD, {**data, "window": "month", "limit": "1"})
    assert "Not one of this user's rooms" in _errors(again.content.decode())


def test_the_changelist_shows_target_limit_spent_and_remaining(staff: Client) -> None:
    user, _ = make_api_key()
    key = ApiKey.objects.get(user=user)
    room = make_room(owner=user)
    _limit(user, scope="api_key", api_key_id=key.pk, limit_micro=8_000_000)
    _limit(user, scope="room", room_id=room.pk, window="month", limit_micro=4_000_000)
    _burned("api_key", key.pk, "day", 3_000_000)
    _burned("room", room.pk, "month", 5_000_000)  # over its limit: nothing remains
    _burned("room", room.pk, "month", 9_000_000, at=timezone.now() - timedelta(days=40))

    html = staff.get(LIMITS).content.decode()

    assert key.prefix in html
    assert reverse("admin:rooms_room_change", args=[room.pk]) in html
    for credits in ("8.000000", "3.000000", "5.000000", "4.000000"):
        assert f">{credits}<" in html  # limits, spent and the key limit's remaining credits
    assert ">0.000000<" in html  # the room limit has nothing left
    assert "9.000000" not in html  # an older month does not count
    reached = staff.get(LIMITS, {"spending_limit": "reached"}).content.decode()
    assert reverse("admin:rooms_room_change", args=[room.pk]) in reached
    assert key.prefix not in reached


def test_the_limit_changelist_queries_do_not_grow(staff: Client) -> None:
    def add(n: int) -> None:
        for _ in range(n):
            user, _ = make_api_key()
            key = ApiKey.objects.get(user=user)
            _limit(user, scope="api_key", api_key_id=key.pk)
            _burned("api_key", key.pk, "day", 1_000_000)

    _same_count_for_1_and_30(staff, LIMITS, add)


# --- the user's page ---------------------------------------------------------------------------


def test_the_user_page_shows_the_users_limits_in_credits(staff: Client) -> None:
    user = make_user()
    _limit(user, limit_micro=7_000_000)
    _burned("user", user.pk, "day", 2_500_000)

    html = staff.get(f"{USERS}{user.pk}/change/").content.decode()

    assert 'id="spending_limits-group"' in html
    assert 'value="7.000000"' in html  # the limit, editable, in credits
    assert "2.500000" in html  # spent this window
    assert "4.500000" in html  # remaining


def _user_post(user: User, limits: list[dict[str, str]], initial: int = 0) -> dict[str, str]:
    data = {
        "email": user.email,
        "display_name": user.display_name,
        "is_active": "on",
        "api_keys-TOTAL_FORMS": "0",
        "api_keys-INITIAL_FORMS": "0",
        "api_keys-MIN_NUM_FORMS": "0",
        "api_keys-MAX_NUM_FORMS": "1000",
        "spending_limits-TOTAL_FORMS": str(len(limits)),
        "spending_limits-INITIAL_FORMS": str(initial),
        "spending_limits-MIN_NUM_FORMS": "0",
        "spending_limits-MAX_NUM_FORMS": "1000",
    }
    for n, limit in enumerate(limits):
        row = {"user": str(user.pk), "room_id": "", "api_key": "", "id": "", **limit}
        data.update({f"spending_limits-{n}-{name}": value for name, value in row.items()})
    return data


def test_staff_add_and_change_limits_on_the_user_page_as_staff_limits(staff: Client) -> None:
    user = make_user()
    own = _limit(user, window="day", limit_micro=5_000_000)
    room = make_room(owner=user)
    rows = [
        {"id": str(own.pk), "scope": "user", "window": "day", "limit": "2"},
        {"scope": "room", "room_id": str(room.pk), "window": "month", "limit": "30"},
    ]

    response = staff.post(f"{USERS}{user.pk}/change/", _user_post(user, rows, initial=1))

    assert response.status_code == 302, _errors(response.content.decode())
    own.refresh_from_db()
    assert (own.limit_micro, own.set_by_staff) == (2_000_000, True)
    added = SpendingLimit.objects.get(user=user, scope="room")
    assert (added.room_id, added.limit_micro, added.set_by_staff) == (room.pk, 30_000_000, True)


def test_an_unchanged_limit_on_the_user_page_stays_the_users(staff: Client) -> None:
    user = make_user()
    own = _limit(user, limit_micro=5_000_000)
    rows = [{"id": str(own.pk), "scope": "user", "window": "day", "limit": "5.000000"}]

    response = staff.post(f"{USERS}{user.pk}/change/", _user_post(user, rows, initial=1))

    assert response.status_code == 302, _errors(response.content.decode())
    own.refresh_from_db()
    assert own.set_by_staff is False


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [
                {"scope": "user", "window": "day", "limit": "1"},
                {"scope": "user", "window": "day", "limit": "2"},
            ],
            "the same target and window",
        ),
        ([{"scope": "user", "window": "day", "room_id": "x"}], "Enter a valid UUID"),
        ([{"scope": "room", "window": "day", "limit": "1"}], "Required for the scope “Room”"),
    ],
)
def test_bad_limits_on_the_user_page_are_form_errors_not_a_500(
    staff: Client, rows: list[dict[str, str]], message: str
) -> None:
    user = make_user()
    response = staff.post(f"{USERS}{user.pk}/change/", _user_post(user, rows))
    assert response.status_code == 200
    html = response.content.decode()
    assert message in _errors(html) or message in html_lib.unescape(html)
    assert not SpendingLimit.objects.filter(user=user).exists()


def test_the_user_page_offers_only_the_users_own_keys(staff: Client) -> None:
    user, _ = make_api_key(name="mine")
    other, _ = make_api_key(name="theirs")
    html = staff.get(f"{USERS}{user.pk}/change/").content.decode()
    assert str(ApiKey.objects.get(user=user).pk) in html
    assert str(ApiKey.objects.get(user=other).pk) not in html


# --- the users' "spending limit" filter --------------------------------------------------------


def test_the_filter_lists_exactly_the_users_at_or_near_a_limit(staff: Client) -> None:
    now = timezone.now()
    users = {name: make_user(email=f"{name}@example.com") for name in _STANDING_CASES}
    for name, setup in _STANDING_CASES.items():
        setup(users[name], now)
    everyone = list(users.values())

    reached = staff.get(USERS, {"spending_limit": "reached"}).content.decode()
    warning = staff.get(USERS, {"spending_limit": "warning"}).content.decode()
    unfiltered = staff.get(USERS).content.decode()

    assert _listed_users(reached, everyone) == {
        "at@example.com",
        "over@example.com",
        "room@example.com",
        "key@example.com",
        "monthly@example.com",
    }
    assert _listed_users(warning, everyone) == _listed_users(reached, everyone) | {
        "near@example.com"
    }
    assert _listed_users(unfiltered, everyone) == {user.email for user in everyone}
    assert "at or over a limit" in unfiltered and "at 80 % or more" in unfiltered


def _at(user: User, now: datetime) -> None:
    _limit(user, limit_micro=10_000_000)
    _burned("user", user.pk, "day", 10_000_000)


def _over(user: User, now: datetime) -> None:
    _limit(user, limit_micro=10_000_000)
    _burned("user", user.pk, "day", 12_000_000)


def _near(user: User, now: datetime) -> None:
    _limit(user, limit_micro=10_000_000)
    _burned("user", user.pk, "day", 8_000_000)  # exactly 80 %


def _under(user: User, now: datetime) -> None:
    _limit(user, limit_micro=10_000_000)
    _burned("user", user.pk, "day", 7_999_999)


def _yesterday(user: User, now: datetime) -> None:
    """Over the limit yesterday, nothing today: a new window."""
    _limit(user, limit_micro=10_000_000)
    _burned("user", user.pk, "day", 50_000_000, at=now - timedelta(days=1))


def _spends_without_a_limit(user: User, now: datetime) -> None:
    _burned("user", user.pk, "day", 50_000_000)


def _room(user: User, now: datetime) -> None:
    room = make_room(owner=user)
    _limit(user, scope="room", room_id=room.pk, limit_micro=1_000_000)
    _limit(user, limit_micro=100_000_000)  # the user's own limit is far away
    _burned("room", room.pk, "day", 1_000_000)
    _burned("user", user.pk, "day", 1_000_000)


def _key(user: User, now: datetime) -> None:
    make_api_key(user)
    key = ApiKey.objects.get(user=user)
    _limit(user, scope="api_key", api_key_id=key.pk, window="month", limit_micro=2_000_000)
    _burned("api_key", key.pk, "month", 2_500_000)


def _monthly(user: User, now: datetime) -> None:
    """A daily total over the amount of a monthly limit does not count: its month does."""
    _limit(user, window="month", limit_micro=3_000_000)
    _limit(user, window="day", limit_micro=50_000_000)
    _burned("user", user.pk, "month", 3_000_000)
    _burned("user", user.pk, "day", 1_000_000)


def _other_users_room(user: User, now: datetime) -> None:
    """Another subject's total (a room with the user's id would be a coincidence) is ignored."""
    _limit(user, limit_micro=1_000_000)
    _burned("room", user.pk, "day", 5_000_000)


def _huge(user: User, now: datetime) -> None:
    """The largest limit: 80 % of it is computed without overflowing a bigint."""
    _limit(user, limit_micro=2**62 - 1)
    _burned("user", user.pk, "day", 2**61)


_STANDING_CASES: dict[str, Callable[[User, datetime], None]] = {
    "at": _at,
    "over": _over,
    "near": _near,
    "under": _under,
    "yesterday": _yesterday,
    "nolimit": _spends_without_a_limit,
    "room": _room,
    "key": _key,
    "monthly": _monthly,
    "otherroom": _other_users_room,
    "huge": _huge,
}


@pytest.mark.parametrize("standing", ["reached", "warning"])
def test_the_filter_runs_a_fixed_number_of_queries(staff: Client, standing: str) -> None:
    def add(n: int) -> None:
        for _ in range(n):
            user = make_user()  # each with limits and totals: nothing shared hides an N+1
            room = make_room(owner=user)
            _limit(user, limit_micro=10_000_000)
            _limit(user, scope="room", room_id=room.pk, window="month", limit_micro=1_000_000)
            _burned("user", user.pk, "day", 9_000_000)
            _burned("room", room.pk, "month", 2_000_000)

    _same_count_for_1_and_30(staff, f"{USERS}?spending_limit={standing}", add)


# --- the room's page ----------------------------------------------------------------------------


def test_the_room_page_lists_its_limits_and_links_to_add_one(staff: Client) -> None:
    room = make_room()
    daily = _limit(room.owner, scope="room", room_id=room.pk, limit_micro=6_000_000)
    monthly = _limit(room.owner, scope="room", room_id=room.pk, window="month")
    other_room = make_room(owner=room.owner)
    elsewhere = _limit(room.owner, scope="room", room_id=other_room.pk)
    _burned("room", room.pk, "day", 1_500_000)

    html = staff.get(reverse("admin:rooms_room_change", args=[room.pk])).content.decode()

    assert reverse("admin:usage_spendinglimit_change", args=[daily.pk]) in html
    assert reverse("admin:usage_spendinglimit_change", args=[monthly.pk]) in html
    assert reverse("admin:usage_spendinglimit_change", args=[elsewhere.pk]) not in html
    assert "6.000000" in html and "1.500000" in html and "4.500000" in html
    add = html_lib.unescape(re.search(r'href="([^"]+)">add a limit for this room<', html)[1])
    assert add == (f"{ADD}?scope=room&room_id={room.pk}&user={room.owner_id}")
    prefilled = staff.get(add).content.decode()
    assert f'value="{room.pk}"' in prefilled
    assert f'value="{room.owner_id}"' in prefilled


def test_a_room_without_limits_says_so(staff: Client) -> None:
    room = make_room()
    html = staff.get(reverse("admin:rooms_room_change", args=[room.pk])).content.decode()
    assert "No spending limits on this room." in html
    assert "add a limit for this room" in html


# --- the dashboard ------------------------------------------------------------------------------


def test_the_dashboard_counts_refusals_in_the_range_by_reason(staff: Client) -> None:
    user = make_user()
    limit = _limit(user)

    def refuse(reason: str, day: int, hour: int = 12) -> None:
        Refusal.objects.create(
            user=user,
            reason=reason,
            purpose="agent_reply",
            limit=limit if reason == RefusalReason.LIMIT else None,
            created_at=datetime(2026, 3, day, hour, tzinfo=UTC),
        )

    for day in (10, 11, 12):
        refuse(RefusalReason.LIMIT, day)
    refuse(RefusalReason.CREDITS, 10, hour=0)
    refuse(RefusalReason.CREDITS, 12, hour=23)
    refuse(RefusalReason.CREDITS, 9, hour=23)  # the day before the range
    refuse(RefusalReason.LIMIT, 13, hour=0)  # the day after

    html = staff.get(DASHBOARD, {"from": "2026-03-10", "to": "2026-03-12"}).content.decode()

    assert 'id="refusals-credits">2<' in html
    assert 'id="refusals-spending-limit">3<' in html
    empty = staff.get(DASHBOARD, {"from": "2026-04-01", "to": "2026-04-02"}).content.decode()
    assert 'id="refusals-credits">0<' in empty
    assert 'id="refusals-spending-limit">0<' in empty


# --- who may look -------------------------------------------------------------------------------


def test_non_staff_users_cannot_reach_these_pages(client: Client) -> None:
    user = make_user()
    room = make_room(owner=user)
    limit = _limit(user)
    urls = [
        LIMITS,
        ADD,
        f"{LIMITS}{limit.pk}/change/",
        f"{USERS}{user.pk}/change/",
        f"{USERS}?spending_limit=reached",
        reverse("admin:rooms_room_change", args=[room.pk]),
        DASHBOARD,
    ]
    for login in (None, user):
        if login is not None:
            client.force_login(login)
        for url in urls:
            response = client.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith(reverse("admin:login")), url
    response = client.post(ADD, {"user": str(user.pk), "scope": "user", "window": "month"})
    assert response.status_code == 302
    assert SpendingLimit.objects.filter(user=user).count() == 1


def test_a_nul_byte_in_a_filter_is_an_invalid_lookup_not_an_error(staff: Client) -> None:
    response = staff.get(LIMITS, {"q": "a\x00"})
    assert response.status_code == 302
    assert response["Location"] == f"{LIMITS}?e=1"
