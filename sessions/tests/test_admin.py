"""The staff console for sessions: navigation that follows the data, read-only records, the
context-audit filters, and query counts that do not grow with the rows shown."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from sessions.models import Message, Session, SessionSummary, Turn, TurnContextAudit
from testing import factories
from usage.tests.builders import MINI, grant, record

pytestmark = pytest.mark.django_db

_seq = itertools.count(1)


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(factories.make_user(is_staff=True, is_superuser=True))
    return client


# --- builders: rows as the pipeline writes them ----------------------------------------------


def _turn(session: Session, **fields: Any) -> Turn:
    session.turn_counter += 1
    session.save(update_fields=["turn_counter"])
    fields.setdefault("mode", "round_table")
    fields.setdefault("status", "completed")
    fields.setdefault("user_input", f"question {session.turn_counter}")
    return Turn.objects.create(session=session, turn_index=session.turn_counter, **fields)


def _message(turn: Turn, sequence: int, agent: Any = None, **fields: Any) -> Message:
    fields.setdefault("role", "assistant" if agent else "user")
    fields.setdefault("content", f"message {sequence}")
    return Message.objects.create(
        session=turn.session, turn=turn, sequence=sequence, agent=agent, mode=turn.mode, **fields
    )


def _audit(session: Session, turn: Turn | None = None, agent: Any = None, **fields: Any) -> Any:
    values: dict[str, Any] = {
        "model": MINI,
        "model_limit": 128_000,
        "output_reserve": 2048,
        "input_budget": 125_952,
        "estimated_tokens_initial": 1000,
        "estimated_tokens_after_summarize": 1000,
        "estimated_tokens_after_prune": 1000,
        "estimated_tokens_final": 1000,
        "actions": [],
        "outcome": "ok",
        **fields,
    }
    return TurnContextAudit.objects.create(session=session, turn=turn, agent=agent, **values)


def _summary(session: Session, covered: int, **fields: Any) -> SessionSummary:
    fields.setdefault("status", "ready")
    fields.setdefault("summary_text", f"up to turn {covered}")
    return SessionSummary.objects.create(session=session, last_turn_covered=covered, **fields)


def _event(turn: Turn, agent: Any = None, **fields: Any) -> Any:
    session = turn.session
    return record(
        session.room.owner,
        room_id=session.room_id,
        session_id=session.id,
        turn_id=turn.id,
        agent_id=agent.id if agent else None,
        **fields,
    )


@pytest.fixture
def world() -> dict[str, Any]:
    owner = factories.make_user(email=f"owner{next(_seq)}@example.com")
    grant(owner, 1_000_000_000)
    room = factories.make_room(owner=owner, name="Strategy room")
    ada = factories.make_agent(room, name="Ada", handle="ada")
    bo = factories.make_agent(room, name="Bo", handle="bo")
    session = factories.make_session(room, title="Launch planning")
    return {"owner": owner, "room": room, "ada": ada, "bo": bo, "session": session}


def _count(client: Client, url: str) -> int:
    # A first request fills process-wide caches (content types); only the second one counts.
    client.get(url)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(queries)


def _same_count_for_1_and_100(
    client: Client, url: Callable[[], str], add_rows: Callable[[int], None]
) -> None:
    add_rows(1)
    one = _count(client, url())
    add_rows(99)
    hundred = _count(client, url())
    assert hundred == one, f"{url()}: {one} queries for 1 row, {hundred} for 100"


# --- navigation --------------------------------------------------------------------------------


def test_turn_page_shows_messages_in_order_routing_audits_events_and_credits(
    staff: Client, world: dict[str, Any]
) -> None:
    session, ada, bo = world["session"], world["ada"], world["bo"]
    turn = _turn(
        session,
        mode="orchestrator",
        status="partial",
        routing_selected=["bo", "ada"],
        routing_reason="Bo plans, Ada checks the numbers",
    )
    _message(turn, 0, content="What is the plan?")
    _message(turn, 2, ada, status="error", error_code="llm_timeout", error_message="Timed out.")
    _message(turn, 1, bo, content="Here is the plan.")
    _audit(
        session,
        turn,
        bo,
        actions=["summary_requested"],
        estimated_tokens_final=1234,
        provider_prompt_tokens=1250,
    )
    ok_call = _event(turn, bo)
    failed_call = _event(turn, ada, status="error", error_code="llm_timeout")
    other_turn = _turn(session)
    _event(other_turn, ada)  # another turn's call: not on this page, not in its credits

    html = staff.get(reverse("admin:chat_sessions_turn_change", args=[turn.pk])).content.decode()

    assert (
        html.index("What is the plan?") < html.index("Here is the plan.") < html.index("Timed out.")
    )
    assert "llm_timeout" in html and "@bo" in html and "@ada" in html
    assert "Bo plans, Ada checks the numbers" in html
    assert "1234" in html and "1250" in html and "summary_requested" in html
    assert reverse("admin:usage_llmcallevent_change", args=[ok_call.pk]) in html
    assert reverse("admin:usage_llmcallevent_change", args=[failed_call.pk]) in html
    credits = (ok_call.credits_burned + failed_call.credits_burned) / 1_000_000
    assert f"{credits:.6f}" in html
    for neighbour in (
        reverse("admin:chat_sessions_session_change", args=[session.pk]),
        reverse("admin:rooms_room_change", args=[world["room"].pk]),
        reverse("admin:accounts_user_change", args=[world["owner"].pk]),
    ):
        assert neighbour in html


def test_session_page_lists_turns_newest_first_and_its_summaries(
    staff: Client, world: dict[str, Any]
) -> None:
    session = world["session"]
    turns = [_turn(session, user_input=f"q{n}") for n in range(1, 4)]
    _summary(session, 2, summary_text="They agreed on a plan.")

    html = staff.get(
        reverse("admin:chat_sessions_session_change", args=[session.pk])
    ).content.decode()

    urls = [reverse("admin:chat_sessions_turn_change", args=[t.pk]) for t in turns]
    assert html.index(urls[2]) < html.index(urls[1]) < html.index(urls[0])
    summary = SessionSummary.objects.get(session=session)
    assert reverse("admin:chat_sessions_sessionsummary_change", args=[summary.pk]) in html
    assert f"/admin/chat_sessions/turn/?session={session.pk}" in html
    assert f"/admin/usage/llmcallevent/?session_id={session.pk}" in html
    assert reverse("admin:accounts_user_change", args=[world["owner"].pk]) in html


def test_room_page_lists_its_agents_and_sessions(staff: Client, world: dict[str, Any]) -> None:
    room = world["room"]
    other = factories.make_session(factories.make_room(), title="Somebody else's")

    html = staff.get(reverse("admin:rooms_room_change", args=[room.pk])).content.decode()

    assert reverse("admin:chat_sessions_session_change", args=[world["session"].pk]) in html
    assert "Launch planning" in html
    assert reverse("admin:chat_sessions_session_change", args=[other.pk]) not in html
    assert reverse("admin:rooms_agent_change", args=[world["ada"].pk]) in html
    assert reverse("admin:accounts_user_change", args=[world["owner"].pk]) in html


def test_changelists_filter_by_their_parent(staff: Client, world: dict[str, Any]) -> None:
    session = world["session"]
    mine = _turn(session)
    _message(mine, 0, content="mine-message")
    other_session = factories.make_session(world["room"], title="Other")
    theirs = _turn(other_session)
    _message(theirs, 0, content="their-message")

    turns = staff.get("/admin/chat_sessions/turn/", {"session": session.pk}).content.decode()
    assert reverse("admin:chat_sessions_turn_change", args=[mine.pk]) in turns
    assert reverse("admin:chat_sessions_turn_change", args=[theirs.pk]) not in turns
    messages = staff.get("/admin/chat_sessions/message/", {"session": session.pk}).content
    assert b"mine-message" in messages and b"their-message" not in messages


# --- session names -----------------------------------------------------------------------------


def test_an_untitled_session_is_named_by_its_place_in_its_room(
    staff: Client, world: dict[str, Any]
) -> None:
    room, first = world["room"], world["session"]  # "Launch planning", the room's first
    at = first.created_at
    second = factories.make_session(room, created_at=at + timedelta(minutes=1))
    third = factories.make_session(room, created_at=at + timedelta(minutes=2))
    Session.objects.filter(pk=third.pk).update(deleted_at=at)  # still counts: names never move
    # Created at the same instant: the id decides, so each has its own number.
    twins = [factories.make_session(room, created_at=at + timedelta(minutes=3)) for _ in "ab"]
    factories.make_session(factories.make_room(name="Elsewhere"))
    fourth = max(twins, key=lambda s: s.pk)
    turn = _turn(fourth)
    _message(turn, 0)
    _audit(fourth, turn)
    _summary(fourth, 1)

    sessions = staff.get("/admin/chat_sessions/session/").content.decode()
    for name in (
        "Launch planning",
        "Session 2 of Strategy room",
        "Session 3 of Strategy room",
        "Session 4 of Strategy room",
        "Session 5 of Strategy room",
        "Session 1 of Elsewhere",
    ):
        assert name in sessions
    for model in ("turn", "message", "turncontextaudit", "sessionsummary"):
        html = staff.get(f"/admin/chat_sessions/{model}/").content.decode()
        assert "Session 5 of Strategy room" in html, model
        assert f">{fourth.pk}<" not in html and f"of {fourth.pk}" not in html, model
    for url in (
        reverse("admin:chat_sessions_session_change", args=[second.pk]),
        reverse("admin:rooms_room_change", args=[room.pk]),
    ):
        assert "Session 2 of Strategy room" in staff.get(url).content.decode(), url
    turn_page = staff.get(reverse("admin:chat_sessions_turn_change", args=[turn.pk]))
    assert "Turn 1 of Session 5 of Strategy room" in turn_page.content.decode()


def _result_list(html: str) -> str:
    return html.split('id="result_list"')[1].split("</table>")[0]


@pytest.mark.parametrize("model", ["turn", "message", "turncontextaudit", "sessionsummary"])
def test_a_changelist_of_one_session_names_it_once_in_the_heading(
    staff: Client, world: dict[str, Any], model: str
) -> None:
    session = factories.make_session(world["room"])  # the room's second: untitled
    for _ in range(3):
        turn = _turn(session)
        _message(turn, 0)
        _audit(session, turn)
        _summary(session, turn.turn_index)

    html = staff.get(f"/admin/chat_sessions/{model}/", {"session": session.pk}).content.decode()

    name = "Session 2 of Strategy room"
    heading = html.split('<h1 id="changelist-scope">')[1].split("</h1>")[0]
    assert name in heading
    assert reverse("admin:chat_sessions_session_change", args=[session.pk]) in heading
    details = html.split('id="changelist-scope-details">')[1].split("</p>")[0]
    assert reverse("admin:rooms_room_change", args=[world["room"].pk]) in details
    assert reverse("admin:accounts_user_change", args=[world["owner"].pk]) in details
    rows = _result_list(html)
    assert rows.count("<tr") == 4  # the header and the three rows
    assert name not in rows and "column-session_link" not in rows
    assert "column-owner_link" not in rows

    everything = staff.get(f"/admin/chat_sessions/{model}/").content.decode()
    assert 'id="changelist-scope"' not in everything
    assert "column-session_link" in _result_list(everything)


def test_a_room_s_sessions_name_the_room_once_in_the_heading(
    staff: Client, world: dict[str, Any]
) -> None:
    html = staff.get("/admin/chat_sessions/session/", {"room": world["room"].pk}).content.decode()

    assert "Sessions of" in html and "Strategy room" in html.split("</h1>")[0]
    assert "Strategy room" not in _result_list(html)
    assert "Launch planning" in _result_list(html)


def test_a_changelist_of_one_session_has_a_fixed_query_count(
    staff: Client, world: dict[str, Any]
) -> None:
    session = world["session"]

    def add(n: int) -> None:
        for _ in range(n):
            _event(_turn(session))

    _same_count_for_1_and_100(
        staff, lambda: f"/admin/chat_sessions/turn/?session={session.pk}", add
    )


def test_a_session_parameter_that_is_not_an_id_is_an_invalid_lookup(staff: Client) -> None:
    response = staff.get("/admin/chat_sessions/turn/", {"session": "not-a-uuid"})
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


# --- read-only records -------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["turn", "message", "sessionsummary", "turncontextaudit"])
def test_pipeline_records_are_read_only(staff: Client, world: dict[str, Any], model: str) -> None:
    session = world["session"]
    turn = _turn(session)
    obj = {
        "turn": turn,
        "message": _message(turn, 0),
        "sessionsummary": _summary(session, 1),
        "turncontextaudit": _audit(session, turn),
    }[model]
    base = f"/admin/chat_sessions/{model}/"

    assert staff.get(f"{base}add/").status_code == 403
    page = staff.get(f"{base}{obj.pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert staff.post(f"{base}{obj.pk}/change/", {}).status_code == 403
    assert staff.post(f"{base}{obj.pk}/delete/", {"post": "yes"}).status_code == 403
    assert type(obj).objects.filter(pk=obj.pk).exists()


def test_non_staff_users_are_sent_to_the_login(client: Client, world: dict[str, Any]) -> None:
    client.force_login(world["owner"])
    response = client.get("/admin/chat_sessions/turn/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# --- context audits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"outcome__exact": "rejected"}, {"rejected"}),
        ({"action": "pruned"}, {"pruned", "summarized-and-pruned"}),
        ({"action": "summary_requested"}, {"summarized", "summarized-and-pruned"}),
        ({"action": "rejected"}, {"rejected"}),
        ({"model__exact": "openai/gpt-3.5-turbo"}, {"rejected"}),
        (
            {"action": "not-an-action"},
            {"plain", "pruned", "summarized", "summarized-and-pruned", "rejected"},
        ),
    ],
)
def test_audit_filters(
    staff: Client, world: dict[str, Any], query: dict[str, str], expected: set[str]
) -> None:
    session = world["session"]
    turn = _turn(session)
    figures = {
        "plain": {"actions": []},
        "pruned": {"actions": ["pruned"]},
        "summarized": {"actions": ["summary_requested", "summary_used"]},
        "summarized-and-pruned": {"actions": ["summary_requested", "pruned"]},
        "rejected": {
            "actions": ["rejected"],
            "outcome": "rejected",
            "model": "openai/gpt-3.5-turbo",
        },
    }
    audits = {
        name: _audit(session, None if name == "rejected" else turn, **fields)
        for name, fields in figures.items()
    }

    html = staff.get("/admin/chat_sessions/turncontextaudit/", query).content.decode()

    shown = {
        name
        for name, audit in audits.items()
        if reverse("admin:chat_sessions_turncontextaudit_change", args=[audit.pk]) in html
    }
    assert shown == expected


def test_audit_list_puts_the_estimate_and_the_provider_count_side_by_side(
    staff: Client, world: dict[str, Any]
) -> None:
    session = world["session"]
    audit = _audit(
        session, _turn(session), estimated_tokens_final=2000, provider_prompt_tokens=2100
    )

    listing = staff.get("/admin/chat_sessions/turncontextaudit/").content.decode()
    page = staff.get(
        reverse("admin:chat_sessions_turncontextaudit_change", args=[audit.pk])
    ).content.decode()

    for html in (listing, page):
        assert "2000" in html and "2100" in html
        assert "+100 (+5.0%)" in html


def test_a_rejected_request_shows_without_a_turn(staff: Client, world: dict[str, Any]) -> None:
    audit = _audit(world["session"], None, actions=["rejected"], outcome="rejected")
    page = staff.get(reverse("admin:chat_sessions_turncontextaudit_change", args=[audit.pk]))
    assert page.status_code == 200
    assert "rejected before a turn" in page.content.decode()


def test_audit_date_hierarchy(staff: Client, world: dict[str, Any]) -> None:
    audit = _audit(world["session"])
    day = audit.created_at
    response = staff.get(
        "/admin/chat_sessions/turncontextaudit/",
        {"created_at__year": day.year, "created_at__month": day.month, "created_at__day": day.day},
    )
    assert response.status_code == 200
    url = reverse("admin:chat_sessions_turncontextaudit_change", args=[audit.pk])
    assert url in response.content.decode()


# --- query counts ------------------------------------------------------------------------------


def test_turn_changelist_queries_do_not_grow(staff: Client, world: dict[str, Any]) -> None:
    def add(n: int) -> None:
        for _ in range(n):
            # Every turn in its own session, room and owner: nothing shared to hide an N+1.
            room = factories.make_room()
            turn = _turn(factories.make_session(room))
            _event(turn)

    _same_count_for_1_and_100(staff, lambda: "/admin/chat_sessions/turn/", add)


def test_message_changelist_queries_do_not_grow(staff: Client, world: dict[str, Any]) -> None:
    def add(n: int) -> None:
        for _ in range(n):
            room = factories.make_room()
            turn = _turn(factories.make_session(room))
            _message(turn, 1, factories.make_agent(room))

    _same_count_for_1_and_100(staff, lambda: "/admin/chat_sessions/message/", add)


def test_audit_changelist_queries_do_not_grow(staff: Client, world: dict[str, Any]) -> None:
    def add(n: int) -> None:
        for _ in range(n):
            room = factories.make_room()
            session = factories.make_session(room)
            _audit(session, _turn(session), factories.make_agent(room), provider_prompt_tokens=9)

    _same_count_for_1_and_100(staff, lambda: "/admin/chat_sessions/turncontextaudit/", add)


def test_summary_changelist_queries_do_not_grow(staff: Client, world: dict[str, Any]) -> None:
    def add(n: int) -> None:
        for _ in range(n):
            _summary(factories.make_session(factories.make_room()), 1)

    _same_count_for_1_and_100(staff, lambda: "/admin/chat_sessions/sessionsummary/", add)


def test_session_changelist_queries_do_not_grow(staff: Client, world: dict[str, Any]) -> None:
    def add(n: int) -> None:
        for _ in range(n):
            factories.make_session(factories.make_room())

    _same_count_for_1_and_100(staff, lambda: "/admin/chat_sessions/session/", add)


def test_turn_page_queries_do_not_grow(staff: Client, world: dict[str, Any]) -> None:
    session, room = world["session"], world["room"]
    turn = _turn(session)
    _message(turn, 0)
    sequence = itertools.count(1)

    def add(n: int) -> None:
        for _ in range(n):
            agent = factories.make_agent(room)  # a distinct agent per message and audit
            _message(turn, next(sequence), agent)
            _audit(session, turn, agent, provider_prompt_tokens=10)
            _event(turn, agent)

    url = reverse("admin:chat_sessions_turn_change", args=[turn.pk])
    _same_count_for_1_and_100(staff, lambda: url, add)
    html = staff.get(url).content.decode()
    assert html.count("/admin/usage/llmcallevent/") >= 100


def test_session_and_room_pages_queries_do_not_grow(staff: Client, world: dict[str, Any]) -> None:
    session, room = world["session"], world["room"]

    def add(n: int) -> None:
        for _ in range(n):
            turn = _turn(session)
            _event(turn)
            _summary(session, turn.turn_index)
            factories.make_session(room, created_by=factories.make_user())

    session_url = reverse("admin:chat_sessions_session_change", args=[session.pk])
    room_url = reverse("admin:rooms_room_change", args=[room.pk])
    add(1)
    before = (_count(staff, session_url), _count(staff, room_url))
    add(99)
    assert (_count(staff, session_url), _count(staff, room_url)) == before


def test_turn_search_by_id(staff: Client, world: dict[str, Any]) -> None:
    turn = _turn(world["session"])
    other = _turn(world["session"])
    html = staff.get("/admin/chat_sessions/turn/", {"q": str(turn.pk)}).content.decode()
    assert reverse("admin:chat_sessions_turn_change", args=[turn.pk]) in html
    assert reverse("admin:chat_sessions_turn_change", args=[other.pk]) not in html
    assert staff.get("/admin/chat_sessions/turn/", {"q": str(uuid.uuid4())}).status_code == 200
    assert staff.get("/admin/chat_sessions/turn/", {"q": "not-a-uuid"}).status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/admin/chat_sessions/turn/",
        "/admin/chat_sessions/message/",
        "/admin/chat_sessions/sessionsummary/",
        "/admin/chat_sessions/turncontextaudit/",
        "/admin/chat_sessions/session/",
        "/admin/rooms/room/",
    ],
)
def test_a_nul_byte_in_a_search_is_an_invalid_lookup_not_an_error(
    staff: Client, world: dict[str, Any], url: str
) -> None:
    for query in ({"q": "a\x00b"}, {"model__exact": "\x00"} if "audit" in url else {"q": "\x00"}):
        response = staff.get(url, query)
        assert response.status_code == 302
        assert response["Location"] == f"{url}?e=1"


def test_the_room_and_session_add_pages_still_work(staff: Client) -> None:
    room = staff.get("/admin/rooms/room/add/")
    session = staff.get("/admin/chat_sessions/session/add/")
    assert room.status_code == 200
    assert "sessions (newest first)" in room.content.decode().lower()
    assert session.status_code == 200
    assert "No turns yet." in session.content.decode()
