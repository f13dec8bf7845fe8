"""Throttles: per user (DRF throttle classes) and, for requests without valid credentials, per
client address (`AnonymousThrottleMiddleware`). Counters live in the cache (Redis when
configured) so limits hold across worker processes; every throttle counts in the same atomic
sliding window (`_AtomicRedisMixin`).

When Redis cannot be reached the throttles fail open: the request is allowed and a warning is
logged (at most once per `_WARN_EVERY_SECONDS` per process). Throttling is protection against
floods; what guards money is the credit ledger in PostgreSQL, which every turn still goes
through, so an unreachable cache must not turn every API request into a 500."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.exceptions
from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponseBase
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle, UserRateThrottle

# A sliding window kept atomically in Redis: DRF's read-then-write of the request history lets a
# simultaneous burst through (every request sees the same count). Returns -1 when the request is
# allowed, else the seconds until the oldest request leaves the window.
_SLIDING_WINDOW = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
  return '-1'
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(tonumber(oldest[2]) + window - now)
"""

logger = logging.getLogger(__name__)

# Only "Redis is not there" fails open; any other error (a bad script, a wrong reply) still raises.
_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_WARN_EVERY_SECONDS = 60.0
_warn_lock = threading.Lock()
_last_warning: float | None = None


def _warn_unreachable(exc: Exception) -> None:
    """Log that throttling is off, at most once per `_WARN_EVERY_SECONDS` in this process. The
    error is named by its class and redis-py's message (host and port, never the URL with its
    credentials)."""
    global _last_warning
    now = time.monotonic()
    with _warn_lock:
        if _last_warning is not None and now - _last_warning < _WARN_EVERY_SECONDS:
            return
        _last_warning = now
    logger.warning(
        "throttling skipped: the Redis cache is unreachable (%s: %s); requests are allowed "
        "until it is back",
        type(exc).__name__,
        exc,
    )


class _CurrentRatesMixin:
    """DRF copies `DEFAULT_THROTTLE_RATES` into the class attribute `THROTTLE_RATES` once, at
    import time, so a later settings change (an override in tests, a reload) is ignored. Read the
    rate from the live settings instead; `api_settings` is reloaded when REST_FRAMEWORK changes."""

    scope: str

    def get_rate(self) -> str | None:
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError as exc:
            raise ImproperlyConfigured(f"No throttle rate set for scope '{self.scope}'.") from exc


class _AtomicRedisMixin:
    """With Redis as the cache, count requests atomically (one Lua call per request), so the
    limit holds exactly for simultaneous requests across worker processes. Without Redis (the
    first-run, single-process setup) DRF's own cache-history algorithm is used. Redis
    unreachable: the request is allowed (see the module docstring)."""

    _wait: float | None = None

    def allow_request(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        backend = caches["default"]
        if not isinstance(backend, RedisCache) or self.rate is None:
            return super().allow_request(request, view)  # type: ignore[misc]
        key = self.get_cache_key(request, view)  # type: ignore[attr-defined]
        if key is None:
            return True
        now = time.time()
        try:
            client = backend._cache.get_client(key, write=True)
            answer = client.eval(
                _SLIDING_WINDOW,
                1,
                backend.make_key(key),
                repr(now),
                self.duration,  # type: ignore[attr-defined]
                self.num_requests,  # type: ignore[attr-defined]
                f"{now}:{uuid.uuid4().hex}",
            )
        except _UNREACHABLE as exc:
            _warn_unreachable(exc)
            return True
        wait = float(answer)
        if wait < 0:
            return True
        self._wait = wait
        return False

    def wait(self) -> float | None:
        if self._wait is not None:
            return self._wait
        return super().wait()  # type: ignore[misc]


class UserThrottle(_CurrentRatesMixin, _AtomicRedisMixin, UserRateThrottle):
    scope = "user"


class TurnCreateThrottle(_CurrentRatesMixin, _AtomicRedisMixin, UserRateThrottle):
    """The extra, tighter limit on starting turns (each one spends credits)."""

    scope = "turns"

    def allow_request(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        if request.method != "POST":
            return True
        return super().allow_request(request, view)


def client_address(request: HttpRequest) -> str | None:
    """The client's address as every per-address limit sees it: the anonymous throttle below and
    the admin login lockout (django-axes' `AXES_CLIENT_IP_CALLABLE`). DRF's rule (`NUM_PROXIES`,
    from `PANTHEON_NUM_PROXIES`): `REMOTE_ADDR`, or the address the outermost trusted proxy wrote
    into `X-Forwarded-For`; anything that is not an IP address there (a forged header) counts as
    `REMOTE_ADDR`. In canonical form (one spelling per address); None when there is none."""
    for candidate in (BaseThrottle().get_ident(request), request.META.get("REMOTE_ADDR")):
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


class AnonymousThrottle(_CurrentRatesMixin, _AtomicRedisMixin, SimpleRateThrottle):
    """Requests without valid credentials, per client address (`PANTHEON_THROTTLE_ANON`). Run by
    `AnonymousThrottleMiddleware`, not listed on views: DRF never reaches a view's throttles for
    such a request (see there)."""

    scope = "anon"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        address = client_address(request)
        if address is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": address}


# The liveness probe answers without authentication and is never throttled (HealthView).
_UNTHROTTLED_PATHS = frozenset({"/api/v1/health"})


def _anonymous_refusal(request: HttpRequest) -> HttpResponseBase | None:
    """Count one credential-less request from this client; the 429 to answer when its address is
    over the rate, else None. Loopback clients count like any other: behind a proxy on the same
    host every client is loopback, and they then share one bucket rather than none."""
    if client_address(request) is None:
        return None
    throttle = AnonymousThrottle()
    if throttle.allow_request(request, None):
        return None
    # Rendered by the API's one exception handler: the contract's shape, with Retry-After.
    response = api_settings.EXCEPTION_HANDLER(exceptions.Throttled(throttle.wait()), {})
    response.accepted_renderer = JSONRenderer()
    response.accepted_media_type = JSONRenderer.media_type
    response.renderer_context = {}
    return response.render()


# Under ASGI the count (a blocking Redis call that may wait for a timeout) runs off the event loop.
_anonymous_refusal_off_loop = sync_to_async(_anonymous_refusal, thread_sensitive=False)


class AnonymousThrottleMiddleware:
    """Throttles API requests that carry no valid credentials, per client address.

    A middleware, because DRF authenticates and checks permissions before it runs a view's
    throttles: a request without a token (refused by the permission check) or with a failing
    bearer (refused by authentication) is a 401 before any throttle class is asked. So:

    - no `Authorization` header: counted before any view work, refused at once (429) when the
      address is over the rate — a flood costs one Redis call per request;
    - credentials that fail: counted when their 401 comes back; over the rate the client gets the
      429 instead, so guessing keys is throttled like any anonymous traffic (the failed lookup,
      one indexed query, is already paid).

    Requests with valid credentials cost a path prefix test, a header lookup and a status check
    here, nothing else (they are throttled per user by `UserThrottle`). Sync and async capable:
    no thread hop under ASGI except to count a request."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        if not _counted_path(request):
            return self.get_response(request)
        if "HTTP_AUTHORIZATION" not in request.META:
            return _anonymous_refusal(request) or self.get_response(request)
        response = self.get_response(request)
        if response.status_code == 401:
            return _anonymous_refusal(request) or response
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        if not _counted_path(request):
            return await self.get_response(request)
        if "HTTP_AUTHORIZATION" not in request.META:
            refusal = await _anonymous_refusal_off_loop(request)
            return refusal or await self.get_response(request)
        response = await self.get_response(request)
        if response.status_code == 401:
            return await _anonymous_refusal_off_loop(request) or response
        return response


def _counted_path(request: HttpRequest) -> bool:
    path = request.path_info
    return path.startswith("/api/") and path not in _UNTHROTTLED_PATHS
