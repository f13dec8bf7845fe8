"""The browser tests' Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium;
no browser download) and the history they walk through: what `seed_demo` leaves."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from accounts.models import User
from testing.factories import make_user
from tests.browser.pages import WINDOW_WIDTH
from usage.tests.builders import MINI, record

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    f"--window-size={WINDOW_WIDTH},2400",
)
NON_STAFF_PASSWORD = "not-staff-Pass-4821"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    # The console log carries every CSP violation ("Refused to ... Content Security Policy").
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def demo() -> dict[str, Any]:
    """`seed_demo`'s history, plus two earlier days of calls so the chart has several bars."""
    out = StringIO()
    call_command("seed_demo", stdout=out)
    password = re.search(r"^\s*password:\s+(\S+)\s*$", out.getvalue(), re.MULTILINE)
    assert password, out.getvalue()
    demo_user = User.objects.get(email="demo@pantheon.local")
    for days_ago in (2, 5):
        when = timezone.now() - timedelta(days=days_ago)
        record(demo_user, model_id=MINI, created_at=when, started_at=when)
    outsider = make_user(email="outsider@example.com", password=NON_STAFF_PASSWORD)
    return {
        "admin_password": password.group(1),
        "outsider": outsider,
        "outsider_password": NON_STAFF_PASSWORD,
    }
