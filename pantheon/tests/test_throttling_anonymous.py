"""Requests without valid credentials are throttled per client address (`PANTHEON_THROTTLE_ANON`):
no token at all and a failing bearer count in the same sliding window, and past the rate the
answer is 429 `throttled` with Retry-After, in the contract's error shape."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory
from rest_framework.test import APIClient

from pantheon.api.throttling import AnonymousThrottleMiddleware, client_address
from testing import factories

pytestmark = pytest.mark.django_db

ME = "/api/v1/auth/me"
RATE = 3


@pytest.fixture(autouse=True)
def _anon_rate(settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "anon": f"{RATE}/min",
        },
    }


def _fresh_address() -> str:
    """An address no earlier test or run has used, so no counter left in Redis counts."""
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


@pytest.fixture
def address() -> str:
    return _fresh_address()


def _client(address: str, authorization: str | None = None) -> APIClient:
    client = APIClient(REMOTE_ADDR=address)
    if authorization:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


def _assert_throttled(response: Any) -> None:
    assert response.status_code == 429, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "throttled"
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    assert error["details"] == {"retry_after": retry_after}


def test_requests_without_a_token_past_the_rate_are_429(address: str) -> None:
    client = _client(address)
    for _ in range(RATE):
        assert client.get(ME).status_code == 401
    _assert_throttled(client.get(ME))
    _assert_throttled(client.post("/api/v1/rooms", {}, format="json"))


def test_failed_bearers_count_in_the_same_window(address: str) -> None:
    assert _client(address).get(ME).status_code == 401  # no token
    bad = _client(address, "Bearer pan_0123abcd_not-the-secret")
    for _ in range(RATE - 1):
        assert bad.get(ME).status_code == 401
    _assert_throttled(bad.get(ME))
    _assert_throttled(_client(address, "Basic dXNlcjpwYXNz").get(ME))
    _assert_throttled(_client(address).get(ME))


def test_valid_credentials_and_other_addresses_are_not_refused(address: str) -> None:
    for _ in range(RATE + 1):
        _client(address).get(ME)
    _assert_throttled(_client(address).get(ME))

    _, key = factories.make_api_key()
    assert _client(address, f"Bearer {key}").get(ME).status_code == 200
    assert _client(_fresh_address()).get(ME).status_code == 401


def test_the_health_probe_is_not_counted(address: str) -> None:
    for _ in range(RATE + 2):
        assert _client(address).get("/api/v1/health").status_code in (200, 503)
    assert _client(address).get(ME).status_code == 401


def test_loopback_clients_are_counted_too() -> None:
    # Behind a proxy on the same host every client is loopback: one shared bucket, never none.
    loopback = "127.{}.{}.{}".format(*uuid.uuid4().bytes[:3])
    for _ in range(RATE):
        assert _client(loopback).get(ME).status_code == 401
    _assert_throttled(_client(loopback).get(ME))


def test_a_forged_forwarded_for_header_does_not_change_the_address(address: str) -> None:
    for n in range(RATE):
        _client(address).get(ME, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
    _assert_throttled(_client(address).get(ME, HTTP_X_FORWARDED_FOR="198.51.100.99"))


def test_behind_a_trusted_proxy_the_forwarded_address_counts(settings: Any) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    request = RequestFactory().get(ME, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert client_address(request) == "203.0.113.9"
    forged = RequestFactory().get(ME, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="not-an-ip")
    assert client_address(forged) == "10.0.0.1"


def test_under_asgi_the_middleware_counts_without_blocking_the_loop(address: str) -> None:
    async def unauthenticated(request: HttpRequest) -> HttpResponse:
        return HttpResponse(status=401)

    middleware = AnonymousThrottleMiddleware(unauthenticated)
    factory = RequestFactory()

    async def run() -> list[int]:
        statuses = []
        for authorization in ("", "Bearer junk", "", "Bearer junk"):
            headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
            request = factory.get(ME, REMOTE_ADDR=address, **headers)
            statuses.append((await middleware(request)).status_code)
        return statuses

    assert asyncio.iscoroutinefunction(middleware)
    assert asyncio.run(run()) == [401, 401, 401, 429]
