"""The staff console in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
driven by Selenium; no browser download), against the live test server, on the history that
`seed_demo` leaves: a staff user logs in through the admin login form, opens a turn and sees its
messages and context audits, filters the ledger by model, opens the usage dashboard and the
chart is drawn; a non-staff user is refused; the API docs (Swagger UI) render; guessing a password
ends on the lockout page. On every page the browser reports no Content-Security-Policy violation
(its console log is read after each step). Screenshots go to `artifacts/screenshots/`."""

from __future__ import annotations

import pytest
from django.conf import settings
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.pages import log_in, shot, wait

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def test_staff_console_in_a_real_browser(browser: WebDriver, live_server, demo) -> None:  # type: ignore[no-untyped-def]
    base = live_server.url

    # Log in through the admin login form.
    log_in(browser, base, "admin@pantheon.local", demo["admin_password"])
    reports = wait(browser, "#staff-reports")
    assert "Usage dashboard" in reports.text
    assert browser.find_element(By.ID, "site-name").text == "Pantheon staff console"
    assert browser.title.endswith("| Pantheon staff console")
    shot(browser, "01-admin-index")

    # A turn: its messages in order (with the failed agent's error) and its context audits.
    browser.get(f"{base}/admin/chat_sessions/turn/?status__exact=partial")
    wait(browser, "#result_list tbody th a").click()
    messages = wait(browser, "#messages-group")
    rows = messages.find_elements(By.CSS_SELECTOR, "tbody tr.form-row")
    texts = [row.text for row in rows]
    assert len(texts) == 3, texts
    assert "User" in texts[0]
    assert "@gus" in texts[1] and "Ok" in texts[1]
    assert "@vic" in texts[2] and "llm_provider_error" in texts[2]
    audits = browser.find_element(By.ID, "context_audits-group").text
    assert "openai/gpt-3.5-turbo" in audits and "mistralai/mistral-7b-instruct" in audits
    assert "Call events" in browser.find_element(By.ID, "content-main").text
    shot(browser, "02-turn")

    # The ledger, filtered by model from the filter sidebar.
    browser.get(f"{base}/admin/usage/ledgerentry/")
    sidebar = wait(browser, "#changelist-filter")
    sidebar.find_element(By.LINK_TEXT, "openai/gpt-3.5-turbo").click()
    WebDriverWait(browser, 15).until(ec.url_contains("model=openai%2Fgpt-3.5-turbo"))
    cells = browser.find_elements(By.CSS_SELECTOR, "#result_list td.field-event_model")
    models = [cell.text for cell in cells]
    assert models == ["openai/gpt-3.5-turbo"]
    totals = browser.find_element(By.ID, "changelist-totals").text
    assert "Entries" in totals and "Credits burned" in totals
    shot(browser, "03-ledger-by-model")

    # The dashboard, from the admin index: the chart is drawn.
    browser.get(f"{base}/admin/")
    wait(browser, "#staff-reports").find_element(By.LINK_TEXT, "Usage dashboard").click()
    wait(browser, "#credits-chart rect.bar")
    bars = browser.execute_script(
        """
        return Array.from(document.querySelectorAll('#credits-chart rect.bar')).map(bar => ({
            credits: parseFloat(bar.dataset.credits),
            height: bar.getBoundingClientRect().height,
            fill: getComputedStyle(bar).fill,
        }));
        """
    )
    assert len(bars) == 30  # the last 30 days by default, like the API's /usage
    drawn = [bar for bar in bars if bar["height"] > 0]
    assert len(drawn) >= 3  # today's history and the two earlier days
    assert all(bar["credits"] > 0 for bar in drawn)
    assert all(bar["height"] == 0 for bar in bars if bar["credits"] == 0)
    assert all(bar["fill"] not in ("none", "rgba(0, 0, 0, 0)") for bar in drawn)
    by_model = browser.find_element(By.ID, "by-model").text
    assert "openai/gpt-4o-mini" in by_model and "100.0%" in by_model  # the provider that was down
    shot(browser, "04-dashboard")

    # A bad range is a message, not an error page.
    browser.get(f"{base}/admin/usage/llmcallevent/dashboard/?from=someday")
    assert "Enter a valid date" in wait(browser, "#dashboard-errors").text
    shot(browser, "05-dashboard-bad-range")

    # A user who is not staff is refused: at the login form, and at the dashboard's door.
    browser.delete_all_cookies()
    log_in(browser, base, demo["outsider"].email, demo["outsider_password"])
    assert "staff account" in wait(browser, ".errornote").text
    browser.get(f"{base}/admin/usage/llmcallevent/dashboard/")
    wait(browser, "#login-form")
    assert "/admin/login/" in browser.current_url
    assert not browser.find_elements(By.ID, "credits-chart")
    shot(browser, "06-non-staff-refused")

    # The API docs: Swagger UI, its init script (inline, with the page's nonce) and the schema.
    browser.get(f"{base}/api/docs/")
    title = WebDriverWait(browser, 20).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, ".swagger-ui .info .title"))
    )
    assert "Pantheon API" in title.text
    wait(browser, ".swagger-ui .opblock")
    shot(browser, "07-api-docs")

    # Guessing a password: after AXES_FAILURE_LIMIT failures the login is locked, and says so.
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(browser, base, "admin@pantheon.local", "a-wrong-guess")
    message = wait(browser, "#lockout-message").text
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    assert "Login locked" in message and f"Try again in {minutes} minutes" in message
    shot(browser, "08-login-locked")
