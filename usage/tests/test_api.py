"""The usage API over HTTP: scoping to the caller, filters, units, validation errors."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from django.urls import include, path
from drf_spectacular.generators import SchemaGenerator

from testing.factories import make_user
from usage.api.urls import api_urls as usage_api_urls
from usage.services import credits_grant
from usage.tests.builders import MINI, SONNET, grant, record

pytestmark = pytest.mark.django_db

TODAY = datetime.now(UTC).date()


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.fixture
def owner_with_calls(owner_client):  # type: ignore[no-untyped-def]
    """The owner with 100 credits and four calls on three days; another user with one call."""
    client, owner = owner_client
    grant(owner, 100_000_000)
    session = uuid.uuid4()
    yesterday = TODAY - timedelta(days=1)
    calls = {
        "today_sonnet": record(owner, session_id=session, created_at=at(TODAY, 0)),
        "today_mini_summary": record(
            owner,
            model_id=MINI,
            purpose="summary",
            prompt_tokens=1_000,
            completion_tokens=200,
            cached_tokens=0,
            cache_write_tokens=0,
            reasoning_tokens=0,
            created_at=at(TODAY, 0),
        ),
        "yesterday_error": record(
            owner,
            session_id=session,
            status="error",
            error_code="provider_error",
            created_at=at(yesterday),
        ),
        "old": record(owner, created_at=at(TODAY - timedelta(days=40))),
    }
    other = make_user()
    grant(other, 10_000_000)
    record(other, session_id=session, created_at=at(TODAY, 0))
    return client, owner, session, calls


def results(response) -> list[dict]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.content
    return response.json()["results"]


@pytest.mark.parametrize("url", ["/api/v1/usage", "/api/v1/usage/events", "/api/v1/usage/ledger"])
def test_usage_needs_a_bearer_token(api_client, url) -> None:  # type: ignore[no-untyped-def]
    response = api_client.get(url)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Bearer"


def test_events_are_the_callers_own_with_exact_units(owner_with_calls) -> None:  # type: ignore[no-untyped-def]
    client, _owner, session, calls = owner_with_calls

    response = client.get("/api/v1/usage/events")

    body = response.json()
    assert set(body) >= {"next", "previous", "results"}
    rows = results(response)
    assert len(rows) == 4
    assert {row["id"] for row in rows} == {str(event.id) for event in calls.values()}
    assert [row["id"] for row in rows][-1] == str(calls["old"].id)  # newest first
    row = next(r for r in rows if r["id"] == str(calls["today_sonnet"].id))
    assert row == {
        "id": str(calls["today_sonnet"].id),
        "created_at": row["created_at"],
        "purpose": "agent_reply",
        "status": "ok",
        "error_code": "",
        "model": SONNET,
        "session_id": str(session),
        "turn_id": None,
        "agent_id": None,
        "input_tokens": 12_000,
        "cached_input_tokens": 8_000,
        "cache_write_tokens": 2_000,
        "output_tokens": 1_000,
        "reasoning_tokens": 400,
        "usage_source": "provider",
        "latency_ms": 120,
        "pricing_version": "v1",
        "cost_usd": "0.0309",
        "oe_tokens": "2060.0000",
        "credits_burned": "3.090000",
    }
    mini = next(r for r in rows if r["id"] == str(calls["today_mini_summary"].id))
    assert mini["cost_usd"] == "0.00027"
    assert mini["credits_burned"] == "0.027000"
    assert mini["oe_tokens"] == "450.0000"  # 270 / 0.60


def test_another_users_events_and_ledger_never_appear(owner_with_calls, other_client) -> None:  # type: ignore[no-untyped-def]
    other, _ = other_client

    assert results(other.get("/api/v1/usage/events")) == []
    assert results(other.get("/api/v1/usage/ledger")) == []
    summary = other.get("/api/v1/usage").json()
    assert summary["by_model"] == []
    assert summary["credits"]["balance"] == "0.000000"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("purpose=summary", {"today_mini_summary"}),
        ("status=error", {"yesterday_error"}),
        (f"model={MINI}", {"today_mini_summary"}),
        ("purpose=agent_reply&status=ok", {"today_sonnet", "old"}),
    ],
)
def test_event_filters(owner_with_calls, query, expected) -> None:  # type: ignore[no-untyped-def]
    client, _owner, _session, calls = owner_with_calls
    rows = results(client.get(f"/api/v1/usage/events?{query}"))
    assert {row["id"] for row in rows} == {str(calls[name].id) for name in expected}


def test_event_filter_by_session_and_dates(owner_with_calls) -> None:  # type: ignore[no-untyped-def]
    client, _owner, session, calls = owner_with_calls
    yesterday = TODAY - timedelta(days=1)

    by_session = results(client.get(f"/api/v1/usage/events?session={session}"))
    only_yesterday = results(client.get(f"/api/v1/usage/events?from={yesterday}&to={yesterday}"))
    since_yesterday = results(client.get(f"/api/v1/usage/events?from={yesterday}"))

    assert {r["id"] for r in by_session} == {
        str(calls["today_sonnet"].id),
        str(calls["yesterday_error"].id),
    }
    assert [r["id"] for r in only_yesterday] == [str(calls["yesterday_error"].id)]
    assert len(since_yesterday) == 3


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("purpose=shopping", "purpose"),
        ("status=fine", "status"),
        ("session=not-a-uuid", "session"),
        ("from=2026-02-30", "from"),
        ("to=yesterday", "to"),
    ],
)
def test_invalid_event_filters_are_400(owner_client, query, field) -> None:  # type: ignore[no-untyped-def]
    client, _ = owner_client
    response = client.get(f"/api/v1/usage/events?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["details"]


def test_extreme_dates_are_not_a_server_error(owner_with_calls) -> None:  # type: ignore[no-untyped-def]
    client, *_ = owner_with_calls
    assert client.get("/api/v1/usage/events?from=0001-01-01&to=9999-12-31").status_code == 200
    response = client.get("/api/v1/usage?from=9999-12-31&to=9999-12-31")
    assert response.status_code == 200
    assert response.json()["by_day"][0]["date"] == "9999-12-31"
    # The default 30 days stop at the calendar's first day.
    response = client.get("/api/v1/usage?to=0001-01-05")
    assert response.status_code == 200
    assert response.json()["by_day"][0]["date"] == "0001-01-01"


def test_usage_summary_defaults_to_the_last_30_days(owner_with_calls) -> None:  # type: ignore[no-untyped-def]
    client, *_ = owner_with_calls

    response = client.get("/api/v1/usage")

    assert response.status_code == 200
    body = response.json()
    # 100 - 3 x 3.09 (sonnet calls incl. the old one and the failed one) - 0.027 (mini)
    assert body["credits"] == {
        "balance": "90.703000",
        "reserved": "0.000000",
        "available": "90.703000",
    }
    days = body["by_day"]
    assert len(days) == 30
    assert days[-1]["date"] == TODAY.isoformat()
    assert days[0]["date"] == (TODAY - timedelta(days=29)).isoformat()
    assert days[-1] == {
        "date": TODAY.isoformat(),
        "credits_burned": "3.117000",
        "oe_tokens": "2510.0000",
        "input_tokens": 13_000,
        "output_tokens": 1_200,
        "calls": 2,
    }
    assert days[-2]["calls"] == 1
    assert days[0]["calls"] == 0
    assert days[0]["credits_burned"] == "0.000000"
    assert body["by_model"] == [
        {
            "model": SONNET,
            "credits_burned": "6.180000",
            "oe_tokens": "4120.0000",
            "input_tokens": 24_000,
            "output_tokens": 2_000,
            "calls": 2,
        },
        {
            "model": MINI,
            "credits_burned": "0.027000",
            "oe_tokens": "450.0000",
            "input_tokens": 1_000,
            "output_tokens": 200,
            "calls": 1,
        },
    ]


def test_usage_summary_for_a_range(owner_with_calls) -> None:  # type: ignore[no-untyped-def]
    client, *_ = owner_with_calls
    old_day = TODAY - timedelta(days=40)

    body = client.get(f"/api/v1/usage?from={old_day}&to={old_day}").json()

    assert [day["calls"] for day in body["by_day"]] == [1]
    assert [row["model"] for row in body["by_model"]] == [SONNET]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=2026-13-01", "from"),
        ("to=soon", "to"),
        ("from=2026-03-02&to=2026-03-01", "from"),
        ("from=2020-01-01&to=2026-01-01", "from"),
    ],
)
def test_invalid_usage_ranges_are_400(owner_client, query, field) -> None:  # type: ignore[no-untyped-def]
    client, _ = owner_client
    response = client.get(f"/api/v1/usage?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["details"]


def test_ledger_amounts_are_signed_credit_strings(owner_with_calls) -> None:  # type: ignore[no-untyped-def]
    client, owner, _session, calls = owner_with_calls
    credits_grant(user=owner, amount_micro=500_000, idempotency_key="bonus", note="bonus")

    rows = results(client.get("/api/v1/usage/ledger"))

    assert len(rows) == 6  # two grants, four burns
    assert rows[0]["kind"] == "grant"
    assert rows[0]["amount"] == "0.500000"
    assert rows[0]["balance_after"] == "91.203000"
    assert rows[0]["note"] == "bonus"
    assert rows[0]["event_id"] is None
    burn = next(r for r in rows if r["event_id"] == str(calls["today_sonnet"].id))
    assert burn["kind"] == "burn"
    assert burn["amount"] == "-3.090000"
    assert set(burn) == {"id", "created_at", "kind", "amount", "balance_after", "event_id", "note"}


def test_lists_are_paginated(owner_with_calls) -> None:  # type: ignore[no-untyped-def]
    client, *_ = owner_with_calls
    body = client.get("/api/v1/usage/events?limit=2").json()
    assert len(body["results"]) == 2
    assert body["next"] is not None
    assert body["count"] == 4


def test_the_openapi_schema_documents_the_usage_endpoints() -> None:
    routes = usage_api_urls(room_owned=lambda user, room_id: False)
    generator = SchemaGenerator(patterns=[path("api/v1/", include(routes))])
    schema = generator.get_schema(request=None, public=True)

    paths = schema["paths"]
    events = paths["/api/v1/usage/events"]["get"]
    names = {p["name"] for p in events["parameters"]}
    assert {"session", "purpose", "status", "model", "from", "to", "limit", "offset"} <= names
    assert "400" in events["responses"]
    summary = paths["/api/v1/usage"]["get"]
    assert {p["name"] for p in summary["parameters"]} == {"from", "to"}
    assert "401" in summary["responses"]
    assert "/api/v1/usage/ledger" in paths
    limits = paths["/api/v1/auth/spending-limits"]
    assert {"get", "post"} <= set(limits) and "409" in limits["post"]["responses"]
    assert {"get", "patch", "delete"} <= set(paths["/api/v1/auth/spending-limits/{limit_id}"])
