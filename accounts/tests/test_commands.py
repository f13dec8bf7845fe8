"""`manage.py create_api_key` and `manage.py rotate_api_key`."""

from __future__ import annotations

import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiKey, User
from accounts.services import api_key_revoke
from testing import factories

pytestmark = pytest.mark.django_db

ME = "/api/v1/auth/me"


def run(command: str, *args: str) -> list[str]:
    out = StringIO()
    call_command(command, *args, stdout=out, stderr=StringIO())
    return out.getvalue().splitlines()


def me_status(key: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client.get(ME).status_code


def prefix_of(key: str) -> str:
    return "_".join(key.split("_", 2)[:2])


# --- create_api_key ----------------------------------------------------------------------------


def test_create_api_key_creates_the_user_and_prints_a_working_key_last() -> None:
    lines = run("create_api_key", "--email", "New.Person@Example.com", "--name", "ci")
    key = lines[-1]
    assert key.startswith("pan_") and " " not in key
    user = User.objects.get(email="new.person@example.com")
    api_key = ApiKey.objects.get(user=user)
    assert api_key.name == "ci" and api_key.expires_at is None
    assert me_status(key) == 200
    assert all(key not in line for line in lines[:-1])


def test_create_api_key_reuses_an_existing_user() -> None:
    user = factories.make_user(email="known@example.com")
    key = run("create_api_key", "--email", "KNOWN@example.com")[-1]
    assert User.objects.filter(email__iexact="known@example.com").count() == 1
    assert ApiKey.objects.get(user=user).prefix == prefix_of(key)
    assert me_status(key) == 200


@pytest.mark.parametrize(
    ("text", "delta"),
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("45m", timedelta(minutes=45))],
)
def test_create_api_key_expires_in(text: str, delta: timedelta) -> None:
    before = timezone.now()
    key = run("create_api_key", "--email", "exp@example.com", "--expires-in", text)[-1]
    api_key = ApiKey.objects.get(prefix=prefix_of(key))
    assert before + delta <= api_key.expires_at <= timezone.now() + delta
    assert me_status(key) == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--email", "not-an-email"], "e-mail"),
        (["--email", "a@example.com", "--expires-in", "soon"], "--expires-in"),
        (["--email", "a@example.com", "--expires-in", "10y"], "--expires-in"),
        (["--email", "a@example.com", "--expires-in", "0d"], "longer than zero"),
        (["--email", "a@example.com", "--name", " "], "--name"),
        (["--email", "a@example.com", "--name", "x" * 101], "--name"),
    ],
)
def test_create_api_key_bad_input(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("create_api_key", *args)
    assert not ApiKey.objects.exists()


# --- rotate_api_key ----------------------------------------------------------------------------


def test_rotation_keeps_both_keys_working_during_the_grace_then_only_the_new_one(  # type: ignore[no-untyped-def]
    process_clock,
) -> None:
    old_key = run("create_api_key", "--email", "rot@example.com", "--name", "deploy")[-1]
    lines = run("rotate_api_key", prefix_of(old_key), "--grace", "24h")
    new_key = lines[-1]
    assert new_key.startswith("pan_") and new_key != old_key
    assert all(new_key not in line for line in lines[:-1])

    old = ApiKey.objects.get(prefix=prefix_of(old_key))
    new = ApiKey.objects.get(prefix=prefix_of(new_key))
    assert new.predecessor_id == old.pk and new.user_id == old.user_id and new.name == "deploy"
    assert old.expires_at is not None
    assert timedelta(hours=23) < old.expires_at - timezone.now() <= timedelta(hours=24)
    assert me_status(old_key) == 200
    assert me_status(new_key) == 200

    process_clock.advance(timedelta(hours=24).total_seconds())  # the grace period ends
    assert me_status(old_key) == 401
    assert me_status(new_key) == 200


def test_rotation_with_a_tiny_grace() -> None:
    old_key = run("create_api_key", "--email", "tiny@example.com")[-1]
    new_key = run("rotate_api_key", prefix_of(old_key), "--grace", "1s")[-1]
    assert me_status(new_key) == 200
    time.sleep(1.1)
    assert me_status(old_key) == 401
    assert me_status(new_key) == 200


def test_rotation_with_zero_grace_stops_the_old_key_at_once() -> None:
    old_key = run("create_api_key", "--email", "zero@example.com")[-1]
    new_key = run("rotate_api_key", prefix_of(old_key), "--grace", "0s")[-1]
    assert me_status(old_key) == 401
    assert me_status(new_key) == 200


def test_rotation_never_extends_an_earlier_expiry() -> None:
    old_key = run("create_api_key", "--email", "early@example.com", "--expires-in", "1h")[-1]
    expires_at = ApiKey.objects.get(prefix=prefix_of(old_key)).expires_at
    run("rotate_api_key", prefix_of(old_key), "--grace", "2d")
    assert ApiKey.objects.get(prefix=prefix_of(old_key)).expires_at == expires_at


@pytest.mark.parametrize(
    ("prefix", "grace", "message"),
    [
        ("pan_000000000000", "24h", "No API key"),
        ("nonsense", "24h", "No API key"),
        ("", "24h", "No API key"),
        (None, "tomorrow", "--grace"),
    ],
)
def test_rotate_api_key_bad_input(prefix: str | None, grace: str, message: str) -> None:
    key = run("create_api_key", "--email", "bad@example.com")[-1]
    with pytest.raises(CommandError, match=message):
        run("rotate_api_key", prefix_of(key) if prefix is None else prefix, "--grace", grace)
    assert ApiKey.objects.count() == 1


def test_rotating_twice_or_a_revoked_key_is_refused() -> None:
    key = run("create_api_key", "--email", "twice@example.com")[-1]
    run("rotate_api_key", prefix_of(key))
    with pytest.raises(CommandError, match="already rotated"):
        run("rotate_api_key", prefix_of(key))

    other = run("create_api_key", "--email", "revoked@example.com")[-1]
    api_key_revoke(api_key=ApiKey.objects.get(prefix=prefix_of(other)))
    with pytest.raises(CommandError, match="revoked or expired"):
        run("rotate_api_key", prefix_of(other))
