"""Under ASGI a request's middleware chain and view run in one thread hop (pantheon.asgi_handler).

Requests go through the application gunicorn serves (`pantheon.asgi.application`) on an event
loop of this process, and every `sync_to_async` / `async_to_sync` call made meanwhile is
counted. Three per request: Django's handler sends `request_started` and closes the response
through one each, and the chain with the view is the third. A middleware that cannot run in the
sync chain (async-only) would add two, and the last test shows that such a middleware is caught.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import AsyncToSync, SyncToAsync, iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.test import override_settings

from testing import factories

pytestmark = [
    pytest.mark.postgres,
    # The view runs in a thread of its own, on its own database connection: rows must be
    # committed to be seen there.
    pytest.mark.django_db(transaction=True),
]

# Django's handler itself: `request_started` and `response.close()`, one hop each.
HANDLER_HOPS = 2
CHAIN = "BaseHandler.get_response"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    hops: list[str] = field(default_factory=list)


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The name of the function behind every thread hop made while the test runs."""
    made: list[str] = []
    to_thread, to_loop = SyncToAsync.__call__, AsyncToSync.__call__

    def counted_to_thread(self: SyncToAsync, *args: Any, **kwargs: Any) -> Any:
        made.append(getattr(self.func, "__qualname__", repr(self.func)))
        return to_thread(self, *args, **kwargs)

    def counted_to_loop(self: AsyncToSync, *args: Any, **kwargs: Any) -> Any:
        made.append(getattr(self.awaitable, "__qualname__", repr(self.awaitable)))
        return to_loop(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted_to_thread)
    monkeypatch.setattr(AsyncToSync, "__call__", counted_to_loop)
    yield made
    # Each request's thread is gone; its database connection waits for the collector.
    gc.collect()


def serve(app: Any, path: str, hops: list[str], headers: dict[str, str] | None = None) -> Answer:
    """One GET through the ASGI application, as uvicorn would deliver it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        messages.put_nowait({"type": "http.request", "body": b""})

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, messages.get, send)

    before = len(hops)
    asyncio.run(run())
    start = sent[0]
    return Answer(
        status=start["status"],
        headers={k.decode().lower(): v.decode() for k, v in start["headers"]},
        body=b"".join(m.get("body", b"") for m in sent[1:]),
        hops=hops[before:],
    )


@pytest.fixture(scope="module")
def application() -> Any:
    from pantheon.asgi import application

    return application


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/health", None),  # 200, or 503 without a broker: the same path either way
        ("/api/v1/auth/me", 200),
        ("/api/v1/no-such-thing", 404),  # anonymous: counted by the throttle (Redis)
        ("/no-such-page", 404),  # no view at all: Django's 404 handler
        ("/admin/login/", 200),  # sessions, CSRF, messages, axes, the pages' CSP
    ],
)
def test_the_chain_and_the_view_make_one_hop(
    application: Any, hops: list[str], path: str, status: int | None
) -> None:
    _, key = factories.make_api_key()
    headers = {"Authorization": f"Bearer {key}"} if path == "/api/v1/auth/me" else {}
    serve(application, path, hops, headers)  # first request: lazy set-up off the record

    answer = serve(application, path, hops, headers)

    assert status is None or answer.status == status
    assert answer.hops.count(CHAIN) == 1, answer.hops
    assert len(answer.hops) == 1 + HANDLER_HOPS, answer.hops


def test_the_middleware_still_does_its_work_under_asgi(
    application: Any, hops: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The same middleware as before, in sync mode: the request log line and id, the security
    headers, and on the admin its session, CSRF cookie and Content-Security-Policy."""
    caplog.set_level(logging.INFO, logger="pantheon.request")

    api = serve(application, "/api/v1/health", hops, {"X-Request-ID": "probe-1"})
    page = serve(application, "/admin/login/", hops)

    assert api.headers["x-request-id"] == "probe-1"
    assert api.headers["x-content-type-options"] == "nosniff"
    logged = [r for r in caplog.records if r.name == "pantheon.request"]
    assert [(r.path, r.request_id) for r in logged][:1] == [("/api/v1/health", "probe-1")]
    assert "content-security-policy" not in api.headers  # the policy is for pages only
    assert "content-security-policy" in page.headers
    assert page.headers["x-frame-options"] == "DENY"
    assert b"csrfmiddlewaretoken" in page.body


class AsyncOnlyMiddleware:
    """A middleware that can only run on the event loop."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        assert iscoroutinefunction(get_response)
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: Any) -> Any:
        return await self.get_response(request)


def test_a_middleware_that_hops_is_counted(hops: list[str]) -> None:
    """The count above is not a constant: an async-only middleware in the middle of the list
    (here after RequestLogMiddleware) costs the sync chain a hop to the loop and one back."""
    from pantheon.api.presence import watch_disconnect
    from pantheon.asgi_handler import OneHopASGIHandler

    middleware = [*settings.MIDDLEWARE]
    middleware.insert(1, f"{__name__}.AsyncOnlyMiddleware")
    with override_settings(MIDDLEWARE=middleware):
        application = watch_disconnect(OneHopASGIHandler())
        serve(application, "/api/v1/health", hops)
        answer = serve(application, "/api/v1/health", hops)

    assert len(answer.hops) == 1 + HANDLER_HOPS + 2, answer.hops
