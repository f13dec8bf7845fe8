"""Settings as the process sees them at start-up: each case runs `manage.py` (or a short script)
in a fresh interpreter, because settings are read once, at import."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parents[2]
REQUIRED_IN_PRODUCTION = ("SECRET_KEY", "DATABASE_URL", "PANTHEON_ENCRYPTION_KEYS")

# Settings that change what these checks report; each case sets them explicitly. An empty value
# also beats a developer's .env file, which never overrides the environment.
_CONTROLLED = (
    *REQUIRED_IN_PRODUCTION,
    "PANTHEON_ENV",
    "PANTHEON_HTTPS",
    "DEBUG",
    "ALLOWED_HOSTS",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "REDIS_URL",
)


def _production_env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _CONTROLLED}
    env.update(
        PANTHEON_ENV="production",
        DEBUG="0",
        PANTHEON_HTTPS="0",
        SECRET_KEY="x" * 20 + Fernet.generate_key().decode(),
        DATABASE_URL="postgres://pantheon@127.0.0.1:5432/pantheon",
        PANTHEON_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        REDIS_URL="",
        DJANGO_SETTINGS_MODULE="pantheon.settings",
    )
    env.update(overrides)
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _missing_line(output: str) -> str:
    lines = [line for line in output.splitlines() if "cannot start in production without" in line]
    assert lines, output
    return lines[-1]


@pytest.mark.parametrize("missing", REQUIRED_IN_PRODUCTION)
def test_production_refuses_to_start_without_a_required_setting(missing: str) -> None:
    result = _run(["manage.py", "check"], _production_env(**{missing: ""}))

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    line = _missing_line(result.stderr)
    assert missing in line
    for present in set(REQUIRED_IN_PRODUCTION) - {missing}:
        assert present not in line


def test_production_names_every_missing_setting() -> None:
    result = _run(
        ["manage.py", "check"], _production_env(**dict.fromkeys(REQUIRED_IN_PRODUCTION, ""))
    )

    assert result.returncode != 0
    line = _missing_line(result.stderr)
    for name in REQUIRED_IN_PRODUCTION:
        assert name in line


def test_development_needs_no_setting() -> None:
    env = _production_env(PANTHEON_ENV="development")
    for name in REQUIRED_IN_PRODUCTION:
        del env[name]
    result = _run(["manage.py", "check"], env)

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_deploy_check_is_clean_in_production_behind_https() -> None:
    result = _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        _production_env(PANTHEON_HTTPS="1"),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_deploy_check_warns_without_https_settings() -> None:
    result = _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        _production_env(PANTHEON_HTTPS="0"),
    )

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "security.W008" in output  # SECURE_SSL_REDIRECT
    assert "security.W004" in output  # SECURE_HSTS_SECONDS


# What a client sees over plain http (and behind a TLS proxy), with production settings and an
# in-memory database: status codes and the redirect target, printed as JSON.
_REQUESTS_SCRIPT = """
import json

import django

django.setup()
from django.conf import settings
from django.test import Client

client = Client()
health = client.get("/api/v1/health")
other = client.get("/api/v1/rooms")
proxied = client.get("/api/v1/rooms", headers={"x-forwarded-proto": "https"})
print(json.dumps({
    "debug": settings.DEBUG,
    "health": health.status_code,
    "health_location": health.headers.get("Location"),
    "other": other.status_code,
    "other_location": other.headers.get("Location"),
    "proxied": proxied.status_code,
}))
"""


def _requests(https: str) -> dict[str, object]:
    env = _production_env(PANTHEON_HTTPS=https, DATABASE_URL="sqlite://:memory:")
    result = _run(["-c", _REQUESTS_SCRIPT], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_plain_http_is_served_when_https_is_off() -> None:
    seen = _requests(https="0")

    assert seen["debug"] is False
    assert seen["health"] == 200
    assert seen["health_location"] is None
    assert seen["other"] != 301
    assert seen["other_location"] is None


def test_https_redirects_plain_http_except_the_health_probe() -> None:
    seen = _requests(https="1")

    assert seen["debug"] is False
    assert seen["health"] == 200
    assert seen["other"] == 301
    assert seen["other_location"] == "https://testserver/api/v1/rooms"
    # Behind the TLS proxy (X-Forwarded-Proto: https) nothing is redirected.
    assert seen["proxied"] != 301


@pytest.mark.django_db
def test_health_over_plain_http_in_the_test_configuration(api_client) -> None:  # type: ignore[no-untyped-def]
    response = api_client.get("/api/v1/health")

    assert response.status_code == 200
    assert response.json()["database"] == "ok"


def _settings_read_from_environment() -> set[str]:
    tree = ast.parse((BASE_DIR / "pantheon" / "settings.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        reads_env = (isinstance(func, ast.Name) and func.id == "env") or (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "env"
        )
        first = node.args[0]
        if reads_env and isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.add(first.value)
    return names


def test_readme_documents_exactly_the_settings_read_from_the_environment() -> None:
    readme = (BASE_DIR / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", section, re.MULTILINE))
    in_settings = _settings_read_from_environment()

    assert len(in_settings) > 30  # the parser found the settings
    assert in_settings - documented == set(), "undocumented in README 'Configuration'"
    assert documented - in_settings == set(), "documented in README but not read by settings"
