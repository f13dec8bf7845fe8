"""The Content-Security-Policy of the HTML pages (admin, API docs): present with a fresh nonce on
every page, matched by every inline <script>/<style> the page has, and absent from the API's JSON
answers. (The browser test checks that Chromium reports no violation on the real pages.)"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import User
from testing import factories

pytestmark = pytest.mark.django_db

NONCE = re.compile(r"'nonce-([A-Za-z0-9+/=]+)'")


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(email="csp@example.com", password="x"))
    return client


def _policy(response: Any) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {
        name: values for name, *values in (directive.split() for directive in header.split(";"))
    }


def _nonce(response: Any) -> str | None:
    """The nonce of the page's policy; django-csp adds one only when the page used it."""
    match = NONCE.search(response["Content-Security-Policy"])
    return match.group(1) if match else None


def test_the_policy_allows_the_site_itself_and_nothing_else(staff: Client) -> None:
    for url in ("/admin/", "/api/docs/"):
        response = staff.get(url)
        policy = _policy(response)
        assert policy["default-src"] == ["'none'"]
        nonce = [f"'nonce-{_nonce(response)}'"] if _nonce(response) else []
        assert policy["script-src"] == ["'self'", *nonce]
        assert policy["style-src"] == ["'self'", *nonce]
        assert policy["img-src"] == ["'self'", "data:"]
        assert policy["connect-src"] == ["'self'"] and policy["font-src"] == ["'self'"]
        assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"]
        assert policy["form-action"] == ["'self'"]
    assert _nonce(response)  # the docs page's inline script and style need it


def _pages(client: Client) -> list[str]:
    user, _ = factories.make_api_key()
    return [
        "/admin/",
        "/admin/accounts/user/",
        f"/admin/accounts/user/{user.pk}/change/",
        "/admin/llm/provider/add/",
        "/admin/usage/llmcallevent/",
        "/admin/usage/ledgerentry/",
        "/admin/usage/llmcallevent/dashboard/",
        "/api/docs/",
    ]


def test_every_inline_script_and_style_carries_the_pages_nonce(staff: Client) -> None:
    for url in _pages(staff):
        response = staff.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        nonce = _nonce(response)
        for tag in re.findall(r"<(?:script|style)\b[^>]*>", html):
            assert "src=" in tag or (nonce and f'nonce="{nonce}"' in tag), (url, tag)
        assert not re.search(r"\sstyle=\"", html), url  # style attributes would be refused
        assert not re.search(r"\son[a-z]+=\"", html), url  # and so would event handlers


def test_a_fresh_nonce_per_page(staff: Client) -> None:
    assert _nonce(staff.get("/api/docs/")) != _nonce(staff.get("/api/docs/"))


def test_the_login_page_has_the_policy_too() -> None:
    response = Client().get("/admin/login/")
    assert response.status_code == 200
    assert "default-src 'none'" in response["Content-Security-Policy"]


def test_api_answers_have_no_policy() -> None:
    _, key = factories.make_api_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    for response in (client.get("/api/v1/auth/me"), client.get("/api/v1/health")):
        assert "Content-Security-Policy" not in response
    assert "Content-Security-Policy" not in APIClient().get("/api/schema/")
