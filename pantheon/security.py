"""Security plumbing of Pantheon's HTML side (the admin and the API docs): the pages'
Content-Security-Policy and the admin login lockout's authentication backend.

django-csp builds the header from `settings.CONTENT_SECURITY_POLICY` and gives each request its
nonce (`request.csp_nonce`, for the pages' few inline <script>/<style> blocks). Its middleware
runs on every request, and under ASGI, as a `MiddlewareMixin`, moves to a worker thread twice to
do it. The API answers JSON, which a policy does not protect, and its per-request cost is
measured: so the policy is applied here only under `settings.CSP_PAGE_PATH_PREFIXES`, with
django-csp's own request and response steps (pure computation, no I/O) called inline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from axes.backends import AxesStandaloneBackend
from csp.middleware import CSPMiddleware
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase


class PageCSPMiddleware(CSPMiddleware):
    """django-csp's `CSPMiddleware` for the HTML pages only; every other path passes through
    untouched (one prefix test). Sync and async capable without a thread hop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)
        self._prefixes = tuple(settings.CSP_PAGE_PATH_PREFIXES)

    def __call__(self, request: HttpRequest) -> Any:
        if not request.path_info.startswith(self._prefixes):
            return self.get_response(request)
        if self.async_mode:
            return self._apage(request)
        self.process_request(request)
        return self.process_response(request, self.get_response(request))

    async def _apage(self, request: HttpRequest) -> HttpResponseBase:
        self.process_request(request)
        response = await self.get_response(request)
        return self.process_response(request, response)


class LoginLockoutBackend(AxesStandaloneBackend):
    """django-axes' lockout check (first in `AUTHENTICATION_BACKENDS`) for every login that
    comes over HTTP. `authenticate()` called in-process without a request — the test client's
    `login()`, a shell — has no client address and no login page to lock, and axes would raise
    for it: such a call goes straight to the password check of the next backend. Every web login
    (the admin's login form) passes its request, so none of them skips the lockout."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)
