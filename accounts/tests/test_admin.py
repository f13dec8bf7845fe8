"""The staff admin for users and API keys."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import ApiKey, User
from testing import factories

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
            **_INLINE_MANAGEMENT,
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


# --- privileges: granted by superusers only ----------------------------------------------------

# The user page's inlines: its API keys and (usage re-registers the page) its spending limits.
_INLINE_MANAGEMENT = {
    f"{prefix}-{name}": value
    for prefix in ("api_keys", "spending_limits")
    for name, value in (
        ("TOTAL_FORMS", "0"),
        ("INITIAL_FORMS", "0"),
        ("MIN_NUM_FORMS", "0"),
        ("MAX_NUM_FORMS", "1000"),
    )
}


def _user_manager() -> tuple[User, Client]:
    """A staff user who may view and change users, and is not a superuser."""
    manager = factories.make_user(email="manager@example.com", is_staff=True)
    manager.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="accounts", codename__in=["view_user", "change_user"]
        )
    )
    client = Client()
    client.force_login(manager)
    return manager, client


def _escalation(user: User, **fields: Any) -> dict[str, Any]:
    """A change-form POST for `user` that also tries to grant every privilege."""
    return {
        "email": user.email,
        "display_name": "Edited",
        "is_active": "on",
        "is_staff": "on",
        "is_superuser": "on",
        "groups": [str(Group.objects.create(name=f"admins-{user.pk}").pk)],
        "user_permissions": [str(p.pk) for p in Permission.objects.all()[:5]],
        **_INLINE_MANAGEMENT,
        **fields,
    }


def _privileges(user: User) -> tuple[bool, bool, int, int]:
    user.refresh_from_db()
    return user.is_staff, user.is_superuser, user.groups.count(), user.user_permissions.count()


def test_privilege_fields_are_read_only_for_a_non_superuser() -> None:
    manager, client = _user_manager()
    customer = factories.make_user(email="customer@example.com")
    for account in (manager, customer):
        html = client.get(f"{USERS}{account.pk}/change/").content.decode()
        assert 'name="display_name"' in html  # the form is there…
        for field in ("is_staff", "is_superuser", "groups", "user_permissions"):
            assert f'name="{field}"' not in html  # …without the privilege inputs


@pytest.mark.parametrize("target", ["self", "customer"])
def test_a_crafted_post_grants_no_privilege(target: str) -> None:
    manager, client = _user_manager()
    account = manager if target == "self" else factories.make_user(email="c@example.com")
    before = _privileges(account)

    response = client.post(f"{USERS}{account.pk}/change/", _escalation(account))

    assert response.status_code == 302, response.content.decode()[:2000]
    assert _privileges(account) == before
    assert account.display_name == "Edited"  # the rest of the form was saved


def test_a_non_superuser_cannot_take_over_a_privileged_account() -> None:
    _, client = _user_manager()
    root = User.objects.create_superuser(email="root2@example.com", password="x-Pass-123!")
    colleague = factories.make_user(email="colleague@example.com", is_staff=True)
    for account in (root, colleague):
        page = client.get(f"{USERS}{account.pk}/change/")
        assert page.status_code == 200  # viewable…
        assert 'name="_save"' not in page.content.decode()  # …not editable
        post = {**_escalation(account), "email": "mine@example.com", "is_superuser": ""}
        assert client.post(f"{USERS}{account.pk}/change/", post).status_code == 403
        password = {"password1": "n3w-Pass-9876!", "password2": "n3w-Pass-9876!"}
        assert client.post(f"{USERS}{account.pk}/password/", password).status_code == 403
        account.refresh_from_db()
        assert account.email != "mine@example.com"
        assert not account.check_password("n3w-Pass-9876!")


def test_a_superuser_grants_privileges(staff: Client) -> None:
    user = factories.make_user(email="promoted@example.com")
    response = staff.post(f"{USERS}{user.pk}/change/", _escalation(user))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert _privileges(user) == (True, True, 1, 5)


# --- changelists: a NUL byte is an invalid lookup ---------------------------------------------


@pytest.mark.parametrize(
    ("url", "query"),
    [
        (USERS, {"email": "\x00"}),
        (USERS, {"q": "a\x00"}),
        (KEYS, {"prefix": "\x00"}),
        ("/admin/auth/group/", {"name": "\x00"}),
        ("/admin/axes/accessattempt/", {"username": "\x00"}),
        ("/admin/axes/accesslog/", {"ip_address": "\x00"}),
        ("/admin/axes/accessfailurelog/", {"user_agent": "\x00"}),
    ],
)
def test_a_nul_byte_in_a_filter_is_an_invalid_lookup_not_an_error(
    staff: Client, url: str, query: dict[str, str]
) -> None:
    response = staff.get(url, query)
    assert response.status_code == 302
    assert response["Location"] == f"{url}?e=1"
