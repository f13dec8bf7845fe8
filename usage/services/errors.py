"""The refusals of the usage services, as application errors the API renders with their
status and code."""

from __future__ import annotations

from typing import Any

from pantheon.credits import format_credits
from pantheon.errors import ApplicationError


class ReservationRefused(ApplicationError):
    """A call's reservation was refused (402): the credits or a spending limit cannot take its
    worst case. Whoever made the call reports it as that call's error."""

    required_micro: int


class InsufficientCredits(ReservationRefused):
    """The available credits (balance minus reservations) cannot cover a call's worst case."""

    code = "insufficient_credits"

    def __init__(self, *, required_micro: int, available_micro: int) -> None:
        self.required_micro = required_micro
        super().__init__(
            "Not enough credits for this call.",
            details={
                "required": format_credits(required_micro),
                "available": format_credits(available_micro),
            },
        )


class SpendingLimitReached(ReservationRefused):
    """A spending limit that applies cannot take a call's worst case on top of what its
    subject burned and holds reserved in the window."""

    code = "spending_limit_reached"

    def __init__(self, *, state: Any, required_micro: int) -> None:
        limit = state.limit
        self.required_micro = required_micro
        self.limit_id = limit.id
        super().__init__(
            f"The {_WINDOW_NAMES[limit.window]} spending limit on this "
            f"{_SCOPE_NAMES[limit.scope]} is reached; it resets at "
            f"{state.resets_at:%Y-%m-%d %H:%M} UTC.",
            details={
                "limit_id": str(limit.id),
                "scope": limit.scope,
                "window": limit.window,
                "limit": format_credits(limit.limit_micro),
                "spent": format_credits(state.spent_micro),
                "reserved": format_credits(state.reserved_micro),
                "required": format_credits(required_micro),
                "resets_at": state.resets_at.isoformat().replace("+00:00", "Z"),
            },
        )


_SCOPE_NAMES = {"user": "account", "room": "room", "api_key": "API key"}
_WINDOW_NAMES = {"day": "daily", "month": "monthly"}


class ModelNotPriced(ApplicationError):
    """No published pricing version prices this model, so a call to it cannot be billed."""

    code = "model_not_priced"

    def __init__(self, *, model_id: str) -> None:
        super().__init__(
            f"The model {model_id!r} has no price; it cannot be used until one is published.",
            details={"model": model_id},
        )


class PricingRefused(ApplicationError):
    """A pricing version cannot be published as asked (invalid, or it would change a
    published version)."""

    code = "pricing_refused"
