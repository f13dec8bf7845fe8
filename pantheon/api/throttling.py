"""Per-user throttles. Counters live in the cache (Redis when configured) so limits hold across
worker processes."""

from __future__ import annotations

import time
import uuid

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
    first-run, single-process setup) DRF's own cache-history algorithm is used."""

    _wait: float | None = None

    def allow_request(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        backend = caches["default"]
        if not isinstance(backend, RedisCache) or self.rate is None:
            return super().allow_request(request, view)  # type: ignore[misc]
        key = self.get_cache_key(request, view)  # type: ignore[attr-defined]
        if key is None:
            return True
        client = backend._cache.get_client(key, write=True)
        now = time.time()
        answer = client.eval(
            _SLIDING_WINDOW,
            1,
            backend.make_key(key),
            repr(now),
            self.duration,  # type: ignore[attr-defined]
            self.num_requests,  # type: ignore[attr-defined]
            f"{now}:{uuid.uuid4().hex}",
        )
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
