"""The admin login lockout (django-axes, configured in settings): AXES_FAILURE_LIMIT failed logins
lock the account from every address and the address for every account, for the cool-off; the
API's bearer authentication and in-process logins are not concerned."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import User
from testing import factories

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"
PASSWORD = "right-Pass-4821"


@pytest.fixture
def staff() -> User:
    return factories.make_user(email="staff@example.com", password=PASSWORD, is_staff=True)


def _login(email: str, password: str, address: str) -> Any:
    """One login through the admin's login form, from `address`, in a fresh browser."""
    client = Client(REMOTE_ADDR=address)
    response = client.post(LOGIN, {"username": email, "password": password, "next": "/admin/"})
    response.logged_in = "_auth_user_id" in client.session
    return response


def _fail(times: int, *, emails: list[str], address: str) -> Any:
    response = None
    for attempt in range(times):
        response = _login(emails[attempt % len(emails)], "wrong-password", address)
    return response


def _assert_locked_out(response: Any) -> None:
    assert response.status_code == 429
    assert not response.logged_in
    text = response.content.decode()
    assert 'id="lockout-message"' in text
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    assert f"Try again in {minutes} minutes" in text


def test_failures_below_the_limit_leave_the_login_open(staff: User) -> None:
    response = _fail(settings.AXES_FAILURE_LIMIT - 1, emails=[staff.email], address="10.0.0.1")
    assert response.status_code == 200  # the login form, with its error
    assert _login(staff.email, PASSWORD, "10.0.0.1").logged_in


def test_failures_lock_the_account_even_from_another_address(staff: User) -> None:
    last = _fail(settings.AXES_FAILURE_LIMIT, emails=[staff.email], address="10.0.0.1")
    _assert_locked_out(last)

    # The right password, from an address that never failed: still refused.
    _assert_locked_out(_login(staff.email, PASSWORD, "10.0.0.2"))
    # Another account from that other address is not concerned.
    other = factories.make_user(email="other@example.com", password=PASSWORD, is_staff=True)
    assert _login(other.email, PASSWORD, "10.0.0.2").logged_in


def test_failures_lock_the_address_even_for_another_account(staff: User) -> None:
    guesses = [f"nobody{n}@example.com" for n in range(settings.AXES_FAILURE_LIMIT)]
    _fail(settings.AXES_FAILURE_LIMIT, emails=guesses, address="10.0.0.3")

    _assert_locked_out(_login(staff.email, PASSWORD, "10.0.0.3"))
    assert _login(staff.email, PASSWORD, "10.0.0.4").logged_in


def test_the_lockout_ends_after_the_cool_off(staff: User) -> None:
    _fail(settings.AXES_FAILURE_LIMIT, emails=[staff.email], address="10.0.0.5")
    _assert_locked_out(_login(staff.email, PASSWORD, "10.0.0.5"))

    # The cool-off passes: every recorded attempt is now older than it.
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.latest("attempt_time").attempt_time
        - settings.AXES_COOLOFF_TIME
        - timedelta(seconds=1)
    )
    assert _login(staff.email, PASSWORD, "10.0.0.5").logged_in


def test_an_administrator_can_lift_a_lockout(staff: User) -> None:
    _fail(settings.AXES_FAILURE_LIMIT, emails=[staff.email], address="10.0.0.6")
    call_command("axes_reset_username", staff.email, stdout=None)
    call_command("axes_reset_ip", "10.0.0.6", stdout=None)
    assert _login(staff.email, PASSWORD, "10.0.0.6").logged_in


def test_a_forged_forwarded_for_header_does_not_change_the_address(staff: User) -> None:
    client = Client(REMOTE_ADDR="10.0.0.7")
    for n in range(settings.AXES_FAILURE_LIMIT):
        client.post(
            LOGIN,
            {"username": f"guess{n}@example.com", "password": "x"},
            HTTP_X_FORWARDED_FOR=f"198.51.100.{n}",
        )
    _assert_locked_out(_login(staff.email, PASSWORD, "10.0.0.7"))


def test_the_api_and_in_process_logins_are_not_concerned(staff: User) -> None:
    _fail(settings.AXES_FAILURE_LIMIT, emails=[staff.email], address="127.0.0.1")

    # A bearer token from the locked address, for the locked account: the API answers.
    _, key = factories.make_api_key(staff)
    api = APIClient(REMOTE_ADDR="127.0.0.1")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api.get("/api/v1/auth/me").status_code == 200
    # The test client's own logins work as before.
    client = Client()
    assert client.login(email=staff.email, password=PASSWORD)
    client.force_login(staff)
    assert client.get("/admin/").status_code == 200
