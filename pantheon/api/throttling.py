"""Per-user throttles. Counters live in the cache (Redis when configured) so limits hold across
worker processes."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle


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


class UserThrottle(_CurrentRatesMixin, UserRateThrottle):
    scope = "user"


class TurnCreateThrottle(_CurrentRatesMixin, UserRateThrottle):
    """The extra, tighter limit on starting turns (each one spends credits)."""

    scope = "turns"

    def allow_request(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        if request.method != "POST":
            return True
        return super().allow_request(request, view)
