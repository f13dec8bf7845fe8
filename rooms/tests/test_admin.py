"""Staff admin for rooms, agents and sessions: staff only, and pages whose query count does not
grow with the rows shown."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from testing.factories import make_agent, make_room, make_session, make_user

pytestmark = pytest.mark.django_db

ROOMS = "/admin/rooms/room/"
AGENTS = "/admin/rooms/agent/"
SESSIONS = "/admin/chat_sessions/session/"


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(make_user(is_staff=True, is_superuser=True))
    client.get("/admin/")  # the login session's first-request writes are not the page's
    return client


def _queries(client: Client, url: str) -> int:
    client.get(url)  # warm the per-process caches (content types) first
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return len(queries)


def _make_rows(n: int) -> None:
    for _ in range(n):
        room = make_room(manager_model_id="openai/gpt-4o")
        make_agent(room)
        make_session(room)


@pytest.mark.parametrize("url", [ROOMS, AGENTS, SESSIONS])
def test_changelists_have_a_fixed_query_count(staff, url):
    _make_rows(1)
    one = _queries(staff, url)
    _make_rows(29)
    assert _queries(staff, url) == one


def test_room_page_with_its_agents_has_a_fixed_query_count(staff):
    room = make_room()
    make_agent(room)
    one = _queries(staff, f"{ROOMS}{room.pk}/change/")
    for _ in range(29):
        make_agent(room)
    response = staff.get(f"{ROOMS}{room.pk}/change/")
    assert response.content.count(b"/admin/rooms/agent/") >= 30  # every agent links to its page
    assert _queries(staff, f"{ROOMS}{room.pk}/change/") == one


def test_changelists_show_links_and_filter_deleted_rows(staff):
    owner = make_user(email="owner@example.com")
    live = make_room(owner=owner, name="Live room")
    make_room(owner=owner, name="Gone room", deleted_at=timezone.now())
    make_session(live, title="Chat")

    page = staff.get(ROOMS, {"deleted": "no"}).content.decode()
    assert "Live room" in page and "Gone room" not in page
    assert f"/admin/accounts/user/{owner.pk}/change/" in page or "owner@example.com" in page
    page = staff.get(ROOMS, {"deleted": "yes", "default_mode": "round_table"}).content.decode()
    assert "Gone room" in page and "Live room" not in page
    page = staff.get(ROOMS, {"q": "owner@example"}).content.decode()
    assert "Live room" in page

    page = staff.get(SESSIONS, {"q": "Live room"}).content.decode()
    assert "Chat" in page and f"/admin/rooms/room/{live.pk}/change/" in page


@pytest.mark.parametrize("url", [ROOMS, AGENTS, SESSIONS])
def test_admin_is_for_staff_only(url):
    client = Client()
    client.force_login(make_user())
    response = client.get(url)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_add_and_change_pages_render(staff):
    agent = make_agent()
    session = make_session(agent.room)
    for url in (
        f"{ROOMS}add/",
        f"{ROOMS}{agent.room_id}/change/",
        f"{AGENTS}add/",
        f"{AGENTS}{agent.pk}/change/",
        f"{SESSIONS}{session.pk}/change/",
    ):
        assert staff.get(url).status_code == 200, url


def _agent_form(agent, **fields):  # type: ignore[no-untyped-def]
    return {
        "room": str(agent.room_id),
        "name": agent.name,
        "handle": agent.handle,
        "system_prompt": "",
        "model": "openai/gpt-4o",
        "temperature": "0.5",
        "max_output_tokens": "",
        "position": "1",
        "is_active": "on",
        **fields,
    }


def test_staff_can_edit_an_agent_and_its_handle_rules_hold(staff):
    room = make_room()
    make_agent(room, handle="ada")
    agent = make_agent(room, handle="bo", name="Bo")
    form = _agent_form(agent, handle="ada")
    response = staff.post(f"{AGENTS}{agent.pk}/change/", form)
    assert response.status_code == 200  # the form again, with the duplicate-handle error
    agent.refresh_from_db()
    assert agent.handle == "bo"

    response = staff.post(f"{AGENTS}{agent.pk}/change/", {**form, "handle": "cy"})
    assert response.status_code == 302
    agent.refresh_from_db()
    assert (agent.handle, agent.model_id) == ("cy", "openai/gpt-4o")


def test_deleted_at_is_read_only_on_rooms_agents_and_sessions(staff):
    agent = make_agent()
    session = make_session(agent.room, title="Chat")
    for url in (
        f"{ROOMS}{agent.room_id}/change/",
        f"{AGENTS}{agent.pk}/change/",
        f"{SESSIONS}{session.pk}/change/",
    ):
        html = staff.get(url).content.decode()
        assert "Deleted at" in html, url
        assert 'name="deleted_at_0"' not in html, url  # no date input to type a date in

    typed = {"deleted_at_0": "2026-01-01", "deleted_at_1": "12:00:00"}
    response = staff.post(f"{AGENTS}{agent.pk}/change/", _agent_form(agent, **typed))
    assert response.status_code == 302
    response = staff.post(
        f"{SESSIONS}{session.pk}/change/",
        {"title": "Renamed", "room": agent.room_id, "created_by": session.created_by_id, **typed},
    )
    assert response.status_code == 302
    agent.refresh_from_db()
    session.refresh_from_db()
    assert (agent.deleted_at, session.deleted_at, session.title) == (None, None, "Renamed")


def test_a_deleted_agents_handle_is_free_a_live_ones_is_not(staff):
    room = make_room()
    make_agent(room, handle="gone", deleted_at=timezone.now())
    make_agent(room, handle="here")
    agent = make_agent(room, handle="bo")

    taken = staff.post(f"{AGENTS}{agent.pk}/change/", _agent_form(agent, handle="here"))
    assert taken.status_code == 200  # the form again, with the error
    assert "An agent with the handle &#x27;here&#x27; is already in this room." in taken.text
    freed = staff.post(f"{AGENTS}{agent.pk}/change/", _agent_form(agent, handle="gone"))
    assert freed.status_code == 302
    agent.refresh_from_db()
    assert agent.handle == "gone"
