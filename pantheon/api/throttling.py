"""Per-user throttles. Counters live in the cache (Redis when configured) so limits hold across
worker processes."""

from __future__ import annotations

from rest_framework.throttling import UserRateThrottle


class UserThrottle(UserRateThrottle):
    scope = "user"


class TurnCreateThrottle(UserRateThrottle):
    """The extra, tighter limit on starting turns (each one spends credits)."""

    scope = "turns"

    def allow_request(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        if request.method != "POST":
            return True
        return super().allow_request(request, view)
