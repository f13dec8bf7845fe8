"""The staff console fits a 1400 px window with the admin's side menu open, in a real headless
Chromium, on `seed_demo`'s history: every registered changelist (each with rows), the
changelists narrowed to one session or one room, a turn's page and the usage dashboard (its
default 30 days, and today by hour). On each page nothing is wider than the window and no table
is wider than its box, and the browser refused nothing under the Content-Security-Policy.
Screenshots go to `artifacts/screenshots/layout-*.png`."""

from __future__ import annotations

from typing import Any

import pytest
from axes.models import AccessAttempt, AccessFailureLog
from django.contrib import admin
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from sessions.models import Session, Turn
from tests.browser.pages import log_in, misfits, shot, wait

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

# Every changelist, whichever app registered it.
CHANGELISTS = sorted(admin.site._registry, key=lambda model: model._meta.label)


def _rows_everywhere() -> None:
    """Rows for the changelists `seed_demo` leaves empty: a group, somebody else's failed
    logins; and a tool call in an agent's reply of the partial turn, whose page is visited (its
    "Tool calls" table then has a row, whether or not `seed_demo`'s agents called tools)."""
    from llm.models import HttpTool
    from sessions.models import Message, ToolCall

    Group.objects.create(name="Support")
    # An HTTP tool staff defined (disabled: its host is not on this machine's allowlist).
    HttpTool.objects.create(
        name="weather_lookup",
        description="The current weather of a city, from the forecast service.",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
        url="https://forecast.internal.example.com/v1/current",
        enabled=False,
    )
    reply = Message.objects.filter(turn__status="partial", agent__isnull=False).first()
    assert reply is not None and reply.turn_id is not None
    ToolCall.objects.create(
        turn_id=reply.turn_id,
        message=reply,
        agent_id=reply.agent_id,
        round=1,
        call_id="call_layout_1",
        name="calculator",
        arguments='{"expression": "(1200 + 340) * 12 / 7 - 12345678901234567890"}',
        status="error",
        error="ValueError: the expression is too long to evaluate within the limits",
        result="",
        latency_ms=4,
    )
    login = {
        "username": "intruder@example.com",
        "ip_address": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
        "http_accept": "text/html",
        "path_info": "/admin/login/",
        "attempt_time": timezone.now(),
    }
    AccessAttempt.objects.create(**login, get_data="", post_data="", failures_since_start=2)
    AccessFailureLog.objects.create(**login, locked_out=False)


def test_every_page_fits_1400_px_with_the_side_menu_open(
    browser: WebDriver,
    live_server,  # type: ignore[no-untyped-def]
    demo: dict[str, Any],
) -> None:
    _rows_everywhere()
    base = live_server.url
    log_in(browser, base, "admin@pantheon.local", demo["admin_password"])
    wait(browser, "#staff-reports")
    problems: list[str] = []

    def visit(path: str, name: str, ready: str) -> None:
        browser.get(base + path)
        wait(browser, ready)
        problems.extend(misfits(browser, name))
        shot(browser, f"layout-{name}")

    for model in CHANGELISTS:
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        visit(url, f"{opts.app_label}-{opts.model_name}", "#changelist")
        assert browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr"), url

    # Narrowed to one session, to one room: the parent is named once, in the heading.
    session = Session.objects.filter(turns__status="partial").get()
    visit(f"/admin/chat_sessions/turn/?session={session.pk}", "turns-of-a-session", "#result_list")
    assert session.title in browser.find_element(By.ID, "changelist-scope").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#result_list .column-session_link")
    visit(
        f"/admin/chat_sessions/session/?room={session.room_id}",
        "sessions-of-a-room",
        "#result_list",
    )
    assert browser.find_elements(By.ID, "changelist-scope")

    # A turn: its messages, context audits and call events.
    turn = Turn.objects.get(session=session)
    visit(reverse("admin:chat_sessions_turn_change", args=[turn.pk]), "turn", "#messages-group")

    # The dashboard: the last 30 days by day, then today by hour.
    visit(reverse("admin:usage_dashboard"), "dashboard", "#credits-chart rect.bar")
    assert browser.find_element(By.ID, "credits-chart").get_attribute("data-unit") == "day"
    browser.find_element(By.LINK_TEXT, "Today").click()
    wait(browser, "#credits-chart[data-unit='hour']")
    problems.extend(misfits(browser, "dashboard-today"))
    shot(browser, "layout-dashboard-today")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#credits-chart rect.bar")) == 24
    ticks = [tick.text for tick in browser.find_elements(By.CSS_SELECTOR, "#credits-chart .tick")]
    assert len(ticks) == 8, ticks

    assert not problems, "\n".join(problems)
