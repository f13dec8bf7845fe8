"""The staff usage dashboard: staff only, inside the admin, credits per day (per hour for a short
range) as a server-drawn SVG chart with readable axis labels, usage by model with error rate and
p50/p95 latency, top users, links from every model, user and bar to its calls, a date range that
never answers a 500, and a fixed number of queries."""

from __future__ import annotations

import html as html_lib
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from pantheon.credits import format_credits
from testing.factories import make_user
from usage.models import LlmCallEvent
from usage.selectors import percentile_cont
from usage.tests.builders import MINI, SONNET, grant, record

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/usage/llmcallevent/dashboard/"
RANGE = {"from": "2026-03-10", "to": "2026-03-12"}
_BAR = re.compile(
    r'<a href="([^"]+)"><rect class="bar" x="[\d.]+" y="[\d.]+" width="[\d.]+" '
    r'height="([\d.]+)" data-start="([\dT:+-]+)" data-credits="([\d.]+)">'
)
_TICK = re.compile(r'<text class="tick" x="[\d.]+" y="[\d.]+" text-anchor="middle">([^<]+)<')


def _bars(html: str) -> dict[str, tuple[float, str, str]]:
    """Each bar by its start (ISO day or hour): height, credits and the link to its calls."""
    return {
        start: (float(height), credits, html_lib.unescape(url))
        for url, height, start, credits in _BAR.findall(html)
    }


def _ticks(html: str) -> list[str]:
    return [html_lib.unescape(label) for label in _TICK.findall(html)]


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(make_user(is_staff=True, is_superuser=True))
    return client


def _at(day: int, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


def _call(user: Any, when: datetime, **fields: Any) -> LlmCallEvent:
    return record(user, created_at=when, started_at=when, **fields)


@pytest.fixture
def usage() -> dict[str, Any]:
    alice = make_user(email="alice@example.com")
    bob = make_user(email="bob@example.com")
    grant(alice, 1_000_000_000)
    grant(bob, 1_000_000_000)
    calls = [
        _call(alice, _at(10), model_id=SONNET, latency_ms=100),
        _call(bob, _at(10), model_id=MINI, latency_ms=300),
        *(_call(alice, _at(12), model_id=SONNET, latency_ms=ms) for ms in (200, 300, 400)),
        _call(alice, _at(12), model_id=SONNET, status="error", error_code="x", latency_ms=5000),
        _call(alice, _at(12), model_id=SONNET, status="timeout", latency_ms=9000),
        _call(bob, _at(12), model_id=MINI, status="cancelled", latency_ms=50),
        # The last instant of the range counts; the first one after it does not.
        _call(bob, _at(12, 23, 59, 59), model_id=MINI, latency_ms=300),
        _call(bob, datetime(2026, 3, 13, tzinfo=UTC), model_id=MINI, latency_ms=1),
        _call(bob, datetime(2026, 3, 9, 23, 59, 59, tzinfo=UTC), model_id=MINI, latency_ms=1),
    ]
    return {"alice": alice, "bob": bob, "calls": calls}


def _in_range(calls: list[LlmCallEvent]) -> list[LlmCallEvent]:
    return [c for c in calls if date(2026, 3, 10) <= c.created_at.date() <= date(2026, 3, 12)]


# --- access ------------------------------------------------------------------------------------


def test_only_staff_with_the_view_permission_see_the_dashboard(client: Client) -> None:
    anonymous = client.get(DASHBOARD)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")

    client.force_login(make_user())
    not_staff = client.get(DASHBOARD)
    assert not_staff.status_code == 302 and not_staff["Location"].startswith("/admin/login/")

    member = make_user(is_staff=True)
    client.force_login(member)
    assert client.get(DASHBOARD).status_code == 403

    member.user_permissions.add(Permission.objects.get(codename="view_llmcallevent"))
    client.force_login(member)
    assert client.get(DASHBOARD).status_code == 200


def test_the_admin_index_links_to_the_dashboard(staff: Client) -> None:
    html = staff.get("/admin/").content.decode()
    assert f'href="{reverse("admin:usage_dashboard")}"' in html
    assert "<title>Overview | Pantheon staff console</title>" in html
    assert reverse("admin:usage_dashboard") == DASHBOARD


def test_the_dashboard_is_inside_the_admin_chrome(staff: Client) -> None:
    response = staff.get(DASHBOARD)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="site-name"' in html and 'class="breadcrumbs"' in html
    assert ">Pantheon staff console</a>" in html.split('id="site-name"')[1].split("</div>")[0]
    assert "<title>Usage dashboard | Pantheon staff console</title>" in html
    assert "<script" not in html.split('id="content-main"')[1]  # the chart needs no script


# --- figures -----------------------------------------------------------------------------------


def test_credits_per_day_are_bars_for_every_day_of_the_range(
    staff: Client, usage: dict[str, Any]
) -> None:
    html = staff.get(DASHBOARD, RANGE).content.decode()

    bars = _bars(html)
    assert list(bars) == ["2026-03-10", "2026-03-11", "2026-03-12"]
    assert 'data-unit="day"' in html and "Credits burned per day" in html
    calls = _in_range(usage["calls"])
    for day, (height, credits, _) in bars.items():
        burned = sum(c.credits_burned for c in calls if c.created_at.date().isoformat() == day)
        assert credits == format_credits(burned)
        assert (height > 0) == (burned > 0)
    assert bars["2026-03-11"][0] == 0
    # The busiest day fills the plot; the other is proportionally shorter.
    assert bars["2026-03-12"][0] > bars["2026-03-10"][0] > 0
    total = format_credits(sum(c.credits_burned for c in calls))
    assert f'id="total-credits">{total}<' in html


def test_by_model_error_rate_and_latency_percentiles(staff: Client, usage: dict[str, Any]) -> None:
    response = staff.get(DASHBOARD, RANGE)
    rows = {row.model: row for row in response.context["dashboard"].by_model}

    sonnet, mini = rows[SONNET], rows[MINI]
    assert (sonnet.calls, sonnet.failed) == (6, 2)  # an error and a timeout
    assert (mini.calls, mini.failed) == (3, 0)  # a cancelled call is not a failure
    # Latency of the successful calls only, interpolated like percentile_cont.
    assert sonnet.p50_latency_ms == pytest.approx(250)
    assert sonnet.p95_latency_ms == pytest.approx(385)
    assert mini.p50_latency_ms == pytest.approx(300)
    html = response.content.decode()
    assert "33.3%" in html and "0.0%" in html
    assert ">250<" in html and ">385<" in html


def test_percentiles_match_the_python_definition(staff: Client) -> None:
    user = make_user()
    grant(user, 1_000_000_000)
    latencies = [17, 3, 950, 120, 120, 64, 33, 5000, 410, 88, 1]
    for ms in latencies:
        _call(user, _at(11), model_id=MINI, latency_ms=ms)

    row = staff.get(DASHBOARD, RANGE).context["dashboard"].by_model[0]

    ordered = sorted(latencies)
    assert row.p50_latency_ms == pytest.approx(percentile_cont(ordered, 0.5))
    assert row.p95_latency_ms == pytest.approx(percentile_cont(ordered, 0.95))
    assert percentile_cont(ordered, 0.5) == 88
    assert percentile_cont([], 0.5) is None
    assert percentile_cont([10, 20], 0.95) == pytest.approx(19.5)


def test_top_users_by_credits(staff: Client, usage: dict[str, Any]) -> None:
    response = staff.get(DASHBOARD, RANGE)
    users = response.context["dashboard"].top_users

    assert [u.email for u in users] == ["alice@example.com", "bob@example.com"]
    alice_calls = [c for c in _in_range(usage["calls"]) if c.user_id == usage["alice"].pk]
    assert users[0].calls == len(alice_calls)
    assert users[0].credits_micro == sum(c.credits_burned for c in alice_calls)
    html = response.content.decode()
    assert reverse("admin:accounts_user_change", args=[usage["alice"].pk]) in html


def test_without_a_range_the_last_thirty_days_are_shown_like_the_api(staff: Client) -> None:
    html = staff.get(DASHBOARD).content.decode()
    days = list(_bars(html))
    assert len(days) == 30
    assert date.fromisoformat(days[-1]) - date.fromisoformat(days[0]) == timedelta(days=29)
    assert date.fromisoformat(days[-1]) == datetime.now(UTC).date()


def test_a_range_at_the_edges_of_the_calendar(staff: Client) -> None:
    first_days = staff.get(DASHBOARD, {"to": "0001-01-05"})
    last_days = staff.get(DASHBOARD, {"from": "9999-12-30", "to": "9999-12-31"})

    assert first_days.status_code == 200
    days = list(_bars(first_days.content.decode()))
    assert days == ["0001-01-01", "0001-01-02", "0001-01-03", "0001-01-04", "0001-01-05"]
    assert last_days.status_code == 200
    hours = list(_bars(last_days.content.decode()))  # two days: by hour, up to the last one
    assert (len(hours), hours[-1]) == (48, "9999-12-31T23:00:00+00:00")


def test_a_range_of_two_days_or_less_is_drawn_by_hour(staff: Client) -> None:
    user = make_user()
    grant(user, 1_000_000_000)
    early = [_call(user, _at(10, 9, minute), model_id=MINI) for minute in (5, 55)]
    late = _call(user, _at(10, 23, 59, 59), model_id=SONNET)
    _call(user, _at(11, 0), model_id=MINI)  # the next day: outside a one-day range

    html = staff.get(DASHBOARD, {"from": "2026-03-10", "to": "2026-03-10"}).content.decode()

    bars = _bars(html)
    assert 'data-unit="hour"' in html and "Credits burned per hour" in html
    assert list(bars) == [_at(10, hour, 0).isoformat() for hour in range(24)]
    busy = {start: credits for start, (height, credits, _) in bars.items() if height > 0}
    assert busy == {
        _at(10, 9).isoformat(): format_credits(sum(c.credits_burned for c in early)),
        _at(10, 23).isoformat(): format_credits(late.credits_burned),
    }
    two_days = staff.get(DASHBOARD, {"from": "2026-03-10", "to": "2026-03-11"}).content.decode()
    assert len(_bars(two_days)) == 48
    three_days = staff.get(DASHBOARD, RANGE).content.decode()
    assert len(_bars(three_days)) == 3


def test_a_young_history_is_one_click_from_its_hours(staff: Client) -> None:
    """Day one: every call of the 30 days shown is from the last two, so the page links to them
    by hour."""
    user = make_user()
    grant(user, 1_000_000_000)
    _call(user, _at(11, 8), model_id=MINI)
    _call(user, _at(12, 17), model_id=MINI)
    month = {"from": "2026-02-11", "to": "2026-03-12"}

    html = staff.get(DASHBOARD, month).content.decode()

    link = re.search(r'id="by-hour-hint">.*?<a href="([^"]+)"', html).group(1)
    assert parse_qs(urlsplit(html_lib.unescape(link)).query) == {
        "from": ["2026-03-11"],
        "to": ["2026-03-12"],
    }
    by_hour = staff.get(DASHBOARD + html_lib.unescape(link)).content.decode()
    assert 'data-unit="hour"' in by_hour and len(_bars(by_hour)) == 48
    _call(user, _at(10, 8), model_id=MINI)  # an older call: the history is not young any more
    assert 'id="by-hour-hint"' not in staff.get(DASHBOARD, month).content.decode()
    assert 'id="by-hour-hint"' not in staff.get(DASHBOARD, {"to": "2026-01-01"}).content.decode()


@pytest.mark.parametrize(
    ("query", "labels"),
    [
        # One day by hour: every third hour, midnight written as the date.
        (
            {"from": "2026-03-10", "to": "2026-03-10"},
            ["March 10", "3 a.m.", "6 a.m.", "9 a.m.", "noon", "3 p.m.", "6 p.m.", "9 p.m."],
        ),
        # Two days by hour: every sixth hour.
        (
            {"from": "2026-03-10", "to": "2026-03-11"},
            ["March 10", "6 a.m.", "noon", "6 p.m.", "March 11", "6 a.m.", "noon", "6 p.m."],
        ),
        # A few days: every day.
        (RANGE, ["March 10", "March 11", "March 12"]),
        # Two weeks: every other day.
        (
            {"from": "2026-03-01", "to": "2026-03-14"},
            ["March 1", "March 3", "March 5", "March 7", "March 9", "March 11", "March 13"],
        ),
        # A month: the Mondays.
        (
            {"from": "2026-03-01", "to": "2026-03-30"},
            ["March 2", "March 9", "March 16", "March 23", "March 30"],
        ),
        # A year: every other month.
        (
            {"from": "2025-03-16", "to": "2026-03-16"},
            ["May 2025", "July 2025", "Sept. 2025", "Nov. 2025", "Jan. 2026", "March 2026"],
        ),
    ],
)
def test_axis_labels_at_round_intervals(
    staff: Client, query: dict[str, str], labels: list[str]
) -> None:
    assert _ticks(staff.get(DASHBOARD, query).content.decode()) == labels


def _listed_calls(client: Client, url: str) -> int:
    """How many calls the call events changelist at `url` lists (its totals)."""
    path = url.partition("?")[0]
    assert path == reverse("admin:usage_llmcallevent_changelist")
    response = client.get(url)
    assert response.status_code == 200, url
    return int(re.search(r'data-total="calls">(\d+)<', response.content.decode()).group(1))


def test_models_users_and_bars_link_to_their_calls_in_the_range(
    staff: Client, usage: dict[str, Any]
) -> None:
    response = staff.get(DASHBOARD, RANGE)
    calls = _in_range(usage["calls"])

    for row in response.context["models"]:
        model = row["usage"].model
        assert f'href="{html_lib.escape(row["calls_url"])}"' in response.content.decode()
        assert parse_qs(urlsplit(row["calls_url"]).query)["model__exact"] == [model]
        assert _listed_calls(staff, row["calls_url"]) == sum(1 for c in calls if c.model == model)
    for row in response.context["users"]:
        user_id = row["usage"].user_id
        expected = sum(1 for c in calls if c.user_id == user_id)
        assert _listed_calls(staff, row["calls_url"]) == expected
        assert row["account_url"] == reverse("admin:accounts_user_change", args=[user_id])
    bars = _bars(response.content.decode())
    for day, (_, _, url) in bars.items():
        expected = sum(1 for c in calls if c.created_at.date().isoformat() == day)
        assert _listed_calls(staff, url) == expected


def test_an_hourly_bar_links_to_the_calls_of_its_hour(staff: Client, usage: dict[str, Any]) -> None:
    html = staff.get(DASHBOARD, {"from": "2026-03-12", "to": "2026-03-12"}).content.decode()
    bars = _bars(html)

    noon = [c for c in usage["calls"] if c.created_at == _at(12)]
    assert _listed_calls(staff, bars[_at(12).isoformat()][2]) == len(noon) == 6
    assert _listed_calls(staff, bars[_at(12, 23).isoformat()][2]) == 1
    assert _listed_calls(staff, bars[_at(12, 11).isoformat()][2]) == 0


def test_a_users_calls_name_the_user_once_in_the_heading(
    staff: Client, usage: dict[str, Any]
) -> None:
    row = staff.get(DASHBOARD, RANGE).context["users"][0]
    html = staff.get(row["calls_url"]).content.decode()

    assert f"Llm call events of {usage['alice'].email}" in html
    assert "column-user_link" not in html  # no user column repeating it on every row


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"from": "yesterday"}, "“from”: Enter a valid date."),
        ({"to": "2026-02-30"}, "“to”: Enter a valid date."),
        ({"from": "2026-03-12", "to": "2026-03-10"}, "must not be after the end date"),
        ({"from": "2024-01-01", "to": "2026-03-10"}, "at most 366 days"),
        ({"from": "0001-01-01", "to": "9999-12-31"}, "at most 366 days"),
        ({"from": "2026-03-10\x00"}, "“from”: Enter a valid date."),
    ],
)
def test_bad_dates_get_a_clear_message_never_a_500(
    staff: Client, query: dict[str, str], message: str
) -> None:
    response = staff.get(DASHBOARD, query)
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="dashboard-errors"' in html
    assert message in html
    assert 'id="credits-chart"' not in html


# --- speed -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query", [RANGE, {"from": "2026-03-10", "to": "2026-03-11"}], ids=["by-day", "by-hour"]
)
def test_dashboard_queries_do_not_grow_with_calls_days_models_or_users(
    staff: Client, query: dict[str, str]
) -> None:
    def count() -> int:
        staff.get(DASHBOARD, query)  # fills process-wide caches
        with CaptureQueriesContext(connection) as queries:
            assert staff.get(DASHBOARD, query).status_code == 200
        return len(queries)

    first = make_user()
    grant(first, 10_000_000)
    _call(first, _at(10), model_id=MINI)
    one = count()
    for n in range(99):
        user = make_user()
        grant(user, 10_000_000)
        _call(user, _at(10 + n % 3, minute=n % 60), model_id=(MINI, SONNET)[n % 2])
    assert count() == one
