"""The staff admin for users and API keys."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import ApiKey, User
from pantheon.testing import factories

pytestmark = pytest.mark.django_db

USERS = "/admin/accounts/user/"
KEYS = "/admin/accounts/apikey/"


@pytest.fixture
def staff() -> Client:
    admin_user = User.objects.create_superuser(email="root@example.com", password="x-Pass-123!")
    client = Client()
    client.force_login(admin_user)
    return client


def test_admin_needs_staff(client: Client) -> None:
    assert client.get(USERS).status_code == 302
    plain = factories.make_user()
    client.force_login(plain)
    assert client.get(USERS).status_code == 302


def test_add_user_with_email_and_password(staff: Client) -> None:
    response = staff.post(
        f"{USERS}add/",
        {
            "email": "New.Staff@Example.com",
            "display_name": "New",
            "usable_password": "true",
            "password1": "a-Long-pass-987",
            "password2": "a-Long-pass-987",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    user = User.objects.get(email="new.staff@example.com")
    assert user.check_password("a-Long-pass-987")


def test_add_user_without_password(staff: Client) -> None:
    response = staff.post(f"{USERS}add/", {"email": "nopw@example.com", "usable_password": "false"})
    assert response.status_code == 302
    assert not User.objects.get(email="nopw@example.com").has_usable_password()


def test_add_user_with_a_taken_email_in_other_case_is_refused(staff: Client) -> None:
    factories.make_user(email="dup@example.com")
    response = staff.post(f"{USERS}add/", {"email": "DUP@example.com", "usable_password": "false"})
    assert response.status_code == 200  # the form again, with an error
    assert User.objects.filter(email__iexact="dup@example.com").count() == 1


def test_user_change_page_shows_keys_by_prefix_never_the_hash(staff: Client) -> None:
    user, _ = factories.make_api_key(name="laptop")
    api_key = ApiKey.objects.get(user=user)
    page = staff.get(f"{USERS}{user.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert api_key.prefix in html and "laptop" in html
    assert api_key.secret_hash not in html


def test_user_change_saves(staff: Client) -> None:
    user = factories.make_user(email="edit@example.com")
    page = staff.get(f"{USERS}{user.pk}/change/")
    assert page.status_code == 200
    response = staff.post(
        f"{USERS}{user.pk}/change/",
        {
            "email": "edit@example.com",
            "display_name": "Edited",
            "is_active": "on",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
            "api_keys-MIN_NUM_FORMS": "0",
            "api_keys-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    user.refresh_from_db()
    assert user.display_name == "Edited"


def test_api_key_pages_never_show_the_hash(staff: Client) -> None:
    user, _ = factories.make_api_key(name="server")
    api_key = ApiKey.objects.get(user=user)
    for url in (KEYS, f"{KEYS}{api_key.pk}/change/", f"{KEYS}?q={user.email}"):
        response = staff.get(url)
        assert response.status_code == 200, url
        assert api_key.prefix in response.content.decode()
        assert api_key.secret_hash not in response.content.decode()
    assert staff.get(f"{KEYS}add/").status_code == 403


def test_api_key_search_and_revoked_filter(staff: Client) -> None:
    user_a, _ = factories.make_api_key(factories.make_user(email="alpha@example.com"))
    user_b, _ = factories.make_api_key(factories.make_user(email="beta@example.com"))
    key_a = ApiKey.objects.get(user=user_a)
    key_b = ApiKey.objects.get(user=user_b)
    staff.post(KEYS, {"action": "revoke_selected", "_selected_action": [str(key_b.pk)]})

    by_email = staff.get(KEYS, {"q": "alpha@"}).content.decode()
    assert key_a.prefix in by_email and key_b.prefix not in by_email
    by_prefix = staff.get(KEYS, {"q": key_b.prefix}).content.decode()
    assert key_b.prefix in by_prefix and key_a.prefix not in by_prefix
    revoked = staff.get(KEYS, {"revoked": "yes"}).content.decode()
    assert key_b.prefix in revoked and key_a.prefix not in revoked
    active = staff.get(KEYS, {"revoked": "no"}).content.decode()
    assert key_a.prefix in active and key_b.prefix not in active


def test_revoke_selected_keys_action(staff: Client) -> None:
    user, _ = factories.make_api_key()
    factories.make_api_key(user)
    keys = list(ApiKey.objects.filter(user=user))
    response = staff.post(
        KEYS, {"action": "revoke_selected", "_selected_action": [str(keys[0].pk)]}
    )
    assert response.status_code == 302
    keys[0].refresh_from_db()
    keys[1].refresh_from_db()
    assert keys[0].revoked_at is not None
    assert keys[1].revoked_at is None


def test_revoke_all_keys_of_selected_users_action(staff: Client) -> None:
    target, _ = factories.make_api_key()
    factories.make_api_key(target)
    bystander, _ = factories.make_api_key()
    response = staff.post(
        USERS, {"action": "revoke_all_api_keys", "_selected_action": [str(target.pk)]}
    )
    assert response.status_code == 302
    assert not ApiKey.objects.filter(user=target, revoked_at__isnull=True).exists()
    assert ApiKey.objects.filter(user=bystander, revoked_at__isnull=True).count() == 1


@pytest.mark.parametrize("url", [USERS, KEYS])
def test_changelists_run_a_fixed_number_of_queries(staff: Client, url: str) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert staff.get(url).status_code == 200
        return len(queries)

    factories.make_api_key()
    baseline = count()
    for _ in range(5):
        factories.make_api_key()
    assert count() == baseline
