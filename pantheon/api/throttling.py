"""Per-user throttles. Counters live in the cache (Redis when configured) so limits hold across
worker processes.

When Redis cannot be reached the throttles fail open: the request is allowed and a warning is
logged (at most once per `_WARN_EVERY_SECONDS` per process). Throttling is protection against
floods; what guards money is the credit ledger in PostgreSQL, which every turn still goes
through, so an unreachable cache must not turn every API request into a 500."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import redis.exceptions
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle

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
