"""What the browser tests do on every page: wait for it, log in, check that the browser refused
nothing under the Content-Security-Policy, check that the page fits the window, and save a
screenshot under `artifacts/screenshots/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
# The staff console's target: a 1400 px wide window, the admin's side menu open.
WINDOW_WIDTH = 1400


def wait(driver: WebDriver, css: str) -> Any:
    return WebDriverWait(driver, 15).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def log_in(driver: WebDriver, base: str, email: str, password: str) -> None:
    driver.get(f"{base}/admin/login/")
    wait(driver, "#id_username").send_keys(email)
    driver.find_element(By.ID, "id_password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "#login-form input[type=submit]").click()


def shot(driver: WebDriver, name: str) -> None:
    """Screenshot the page, after checking that it loaded nothing the policy refused."""
    violations = [
        entry["message"]
        for entry in driver.get_log("browser")  # the entries since the last call
        if "Content Security Policy" in entry["message"]
    ]
    assert not violations, (name, violations)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


# Widths in CSS pixels: the page against the window (without its scroll bar), the side menu,
# and each table against the box that holds it (a changelist's `.results`, which would scroll).
_MEASURE = """
const root = document.documentElement;
const sidebar = document.getElementById('nav-sidebar');
const main = document.getElementById('main');
return {
    page: root.scrollWidth,
    window: root.clientWidth,
    innerWidth: window.innerWidth,
    sidebarOpen: !!(sidebar && main && main.classList.contains('shifted')
                    && sidebar.getBoundingClientRect().width > 0),
    tables: Array.from(document.querySelectorAll('#content table')).map(table => ({
        id: table.id || table.closest('[id]').id,
        width: table.getBoundingClientRect().width,
        box: table.parentElement.clientWidth,
        scrolls: table.parentElement.scrollWidth > table.parentElement.clientWidth,
    })),
};
"""


def misfits(driver: WebDriver, name: str) -> list[str]:
    """What does not fit a window WINDOW_WIDTH wide with the side menu open: a page wider than
    the window, a table wider than its box (so that it scrolls sideways). Empty when it fits."""
    sizes = driver.execute_script(_MEASURE)
    assert sizes["innerWidth"] == WINDOW_WIDTH, (name, sizes)
    assert sizes["sidebarOpen"], (name, "the side menu is closed")
    problems = []
    if sizes["page"] > sizes["window"]:
        problems.append(f"{name}: the page is {sizes['page']} px wide in {sizes['window']} px")
    problems.extend(
        f"{name}: table #{table['id']} is {table['width']:.0f} px wide in {table['box']} px"
        for table in sizes["tables"]
        if table["width"] > table["box"] + 0.5 or table["scrolls"]
    )
    return problems
