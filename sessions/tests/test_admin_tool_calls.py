"""The staff console for tool calls: their read-only changelist (filters, search, a query count
that does not grow with the rows), a call's page (arguments and result shown as text), and the
"Tool calls" section of a turn's page."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from sessions.models import Message, Session, ToolCall, Turn
from testing import factories

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/chat_sessions/toolcall/"
HOSTILE = "<script>alert('x')</script>"

_seq = itertools.count(1)


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(factories.make_user(is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def world() -> dict[str, Any]:
    owner = factories.make_user(email=f"tools-owner{next(_seq)}@example.com")
    room = factories.make_room(owner=owner, name="Tools room")
    ada = factories.make_agent(room, name="Ada", handle="ada")
    session = factories.make_session(room, title="Sums and clocks")
    return {"owner": owner, "room": room, "ada": ada, "session": session}


# --- builders: rows as the pipeline writes them ----------------------------------------------


def _turn(session: Session) -> Turn:
    session.turn_counter += 1
    session.save(update_fields=["turn_counter"])
    return Turn.objects.create(
        session=session,
        turn_index=session.turn_counter,
        mode="round_table",
        status="completed",
        user_input=f"question {session.turn_counter}",
    )


def _reply(turn: Turn, agent: Any, sequence: int = 1) -> Message:
    return Message.objects.create(
        session=turn.session,
        turn=turn,
        sequence=sequence,
        agent=agent,
        role="assistant",
        mode=turn.mode,
        content="The answer is 84.",
    )


def _call(turn: Turn, agent: Any = None, message: Message | None = None, **fields: Any) -> ToolCall:
    values: dict[str, Any] = {
        "round": 1,
        "call_id": f"call_{next(_seq)}",
        "name": "calculator",
        "arguments": '{"expression": "12 * 7"}',
        "status": "ok",
        "result": "84",
        "latency_ms": 3,
        **fields,
    }
    return ToolCall.objects.create(turn=turn, agent=agent, message=message, **values)


def _page(call: ToolCall) -> str:
    return reverse("admin:chat_sessions_toolcall_change", args=[call.pk])


def _count(client: Client, url: str) -> int:
    # A first request fills process-wide caches (content types); only the second one counts.
    client.get(url)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(queries)


# --- the changelist ----------------------------------------------------------------------------


def test_changelist_lists_calls_with_their_agent_turn_status_and_latency(
    staff: Client, world: dict[str, Any]
) -> None:
    turn = _turn(world["session"])
    ok = _call(turn, world["ada"], latency_ms=1234)
    failed = _call(
        turn, world["ada"], name="current_time", status="error", error="unknown time zone"
    )

    html = staff.get(CHANGELIST).content.decode()

    assert _page(ok) in html and _page(failed) in html
    assert "calculator" in html and "current_time" in html
    assert "1234 ms" in html
    assert "unknown time zone" in html  # the error under the status
    assert reverse("admin:rooms_agent_change", args=[world["ada"].pk]) in html
    assert reverse("admin:chat_sessions_turn_change", args=[turn.pk]) in html
    assert "Sums and clocks" in html  # the turn's session, under the turn


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status__exact": "error"}, {"failed"}),
        ({"status__exact": "timeout"}, {"slow"}),
        ({"name": "calculator"}, {"sum"}),
        ({"name": "current_time"}, {"failed", "slow"}),
        ({"name": "no_such_tool"}, set()),
        ({"name": "current_time", "status__exact": "timeout"}, {"slow"}),
        ({"q": "current"}, {"failed", "slow"}),
        ({"q": "call_sum"}, {"sum"}),
        ({}, {"sum", "failed", "slow"}),
    ],
)
def test_changelist_filters_and_search(
    staff: Client, world: dict[str, Any], query: dict[str, str], expected: set[str]
) -> None:
    turn = _turn(world["session"])
    calls = {
        "sum": _call(turn, world["ada"], call_id="call_sum"),
        "failed": _call(turn, name="current_time", status="error", error="bad zone"),
        "slow": _call(turn, name="current_time", status="timeout", error="timed out"),
    }

    response = staff.get(CHANGELIST, query)

    assert response.status_code == 200
    html = response.content.decode()
    assert {name for name, call in calls.items() if _page(call) in html} == expected


def test_the_name_filter_offers_the_stored_names(staff: Client, world: dict[str, Any]) -> None:
    turn = _turn(world["session"])
    for name in ("calculator", "current_time", "calculator", "session_search"):
        _call(turn, name=name)

    html = staff.get(CHANGELIST).content.decode()

    for name in ("calculator", "current_time", "session_search"):
        assert f"?name={name}" in html, name


def test_a_changelist_of_one_turn_names_it_in_the_heading(
    staff: Client, world: dict[str, Any]
) -> None:
    mine, theirs = _turn(world["session"]), _turn(world["session"])
    own = _call(mine)
    other = _call(theirs)

    html = staff.get(CHANGELIST, {"turn": mine.pk}).content.decode()

    heading = html.split('<h1 id="changelist-scope">')[1].split("</h1>")[0]
    assert reverse("admin:chat_sessions_turn_change", args=[mine.pk]) in heading
    assert _page(own) in html and _page(other) not in html
    assert "column-turn_link" not in html


def test_changelist_queries_do_not_grow_from_3_to_30_rows(
    staff: Client, world: dict[str, Any]
) -> None:
    def add(n: int) -> None:
        for _ in range(n):
            # Every call in its own turn, session, room and agent: nothing shared hides an N+1.
            room = factories.make_room()
            agent = factories.make_agent(room)
            turn = _turn(factories.make_session(room))
            _call(turn, agent, _reply(turn, agent), name=f"tool_{next(_seq)}")

    add(3)
    three = _count(staff, CHANGELIST)
    add(27)
    thirty = _count(staff, CHANGELIST)
    assert thirty == three, f"{three} queries for 3 rows, {thirty} for 30"
    assert ToolCall.objects.count() == 30


@pytest.mark.parametrize(
    "query",
    [{"name": "calc\x00ulator"}, {"status__exact": "\x00"}, {"q": "a\x00b"}, {"turn": "\x00"}],
)
def test_a_nul_byte_in_a_filter_is_an_invalid_lookup_not_an_error(
    staff: Client, world: dict[str, Any], query: dict[str, str]
) -> None:
    _call(_turn(world["session"]))
    response = staff.get(CHANGELIST, query)
    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST}?e=1"


def test_changelist_date_hierarchy(staff: Client, world: dict[str, Any]) -> None:
    call = _call(_turn(world["session"]))
    day = call.created_at
    response = staff.get(
        CHANGELIST,
        {"created_at__year": day.year, "created_at__month": day.month, "created_at__day": day.day},
    )
    assert response.status_code == 200
    assert _page(call) in response.content.decode()


# --- a call's page -----------------------------------------------------------------------------


def test_call_page_shows_pretty_arguments_the_result_and_where_it_happened(
    staff: Client, world: dict[str, Any]
) -> None:
    turn = _turn(world["session"])
    reply = _reply(turn, world["ada"])
    call = _call(
        turn,
        world["ada"],
        reply,
        round=2,
        call_id="call_abc123",
        arguments='{"expression":"12 * 7","precision":2}',
        result="84.00",
    )

    html = staff.get(_page(call)).content.decode()

    assert '{\n  "expression": "12 * 7",\n  "precision": 2\n}' in html.replace("&quot;", '"')
    assert "84.00" in html and "call_abc123" in html
    assert reverse("admin:chat_sessions_message_change", args=[reply.pk]) in html
    assert reverse("admin:chat_sessions_turn_change", args=[turn.pk]) in html
    assert reverse("admin:chat_sessions_session_change", args=[world["session"].pk]) in html
    assert reverse("admin:rooms_agent_change", args=[world["ada"].pk]) in html
    assert '<div class="readonly">2</div>' in html  # the round
    assert "pre.tool-call-text { white-space: pre-wrap;" in html  # long lines wrap in the page


def test_call_page_escapes_hostile_arguments_and_results(
    staff: Client, world: dict[str, Any]
) -> None:
    turn = _turn(world["session"])
    as_json = _call(turn, arguments=f'{{"q": "{HOSTILE}"}}', result=HOSTILE)
    not_json = _call(turn, arguments=f"not json {HOSTILE}", result=f"{HOSTILE} & more")

    for call in (as_json, not_json):
        html = staff.get(_page(call)).content.decode()
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "not json &lt;script&gt;" in staff.get(_page(not_json)).content.decode()


def test_call_page_without_message_agent_or_arguments(staff: Client, world: dict[str, Any]) -> None:
    call = _call(_turn(world["session"]), arguments="", result="", status="timeout")
    response = staff.get(_page(call))
    assert response.status_code == 200


# --- read-only, staff only ---------------------------------------------------------------------


def test_staff_cannot_add_change_or_delete_tool_calls(staff: Client, world: dict[str, Any]) -> None:
    call = _call(_turn(world["session"]))

    assert staff.get(f"{CHANGELIST}add/").status_code == 403
    page = staff.get(_page(call))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert staff.post(_page(call), {"name": "changed"}).status_code == 403
    assert staff.post(f"{CHANGELIST}{call.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ToolCall.objects.get(pk=call.pk).name == "calculator"
    listing = staff.get(CHANGELIST).content.decode()
    assert 'name="action"' not in listing  # no "delete selected"


def test_non_staff_users_are_sent_to_the_login(client: Client, world: dict[str, Any]) -> None:
    call = _call(_turn(world["session"]))
    client.force_login(world["owner"])
    for url in (CHANGELIST, _page(call)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


# --- the turn's page ---------------------------------------------------------------------------


def test_turn_page_lists_its_tool_calls_in_order_with_a_link_to_all(
    staff: Client, world: dict[str, Any]
) -> None:
    turn = _turn(world["session"])
    first = _call(turn, world["ada"], name="calculator", result="84", latency_ms=7)
    second = _call(
        turn,
        world["ada"],
        round=2,
        name="current_time",
        status="error",
        error="unknown zone",
        arguments=f'{{"zone": "{HOSTILE}"}}',
    )
    elsewhere = _call(_turn(world["session"]), name="session_search")

    html = staff.get(reverse("admin:chat_sessions_turn_change", args=[turn.pk])).content.decode()

    section = html.split("Tool calls</h2>")[1].split("</fieldset>")[0]
    assert section.index(_page(first)) < section.index(_page(second))
    assert _page(elsewhere) not in html
    assert "7 ms" in section and "unknown zone" in section and "@ada" in section
    assert "<script>" not in section and "&lt;script" in section
    assert f"{CHANGELIST}?turn={turn.pk}" in section
    assert "all tool calls of this turn" in section


def test_turn_page_without_tool_calls(staff: Client, world: dict[str, Any]) -> None:
    turn = _turn(world["session"])
    html = staff.get(reverse("admin:chat_sessions_turn_change", args=[turn.pk])).content.decode()
    assert "No tool calls." in html


def test_turn_page_queries_do_not_grow_with_its_tool_calls(
    staff: Client, world: dict[str, Any]
) -> None:
    turn = _turn(world["session"])
    url = reverse("admin:chat_sessions_turn_change", args=[turn.pk])

    def add(n: int) -> None:
        for _ in range(n):
            _call(turn, factories.make_agent(world["room"]))  # a distinct agent per call

    add(3)
    three = _count(staff, url)
    add(27)
    assert _count(staff, url) == three
    assert staff.get(url).content.decode().count("/admin/chat_sessions/toolcall/") >= 30
