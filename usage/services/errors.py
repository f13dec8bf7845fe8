"""The refusals of the usage services, as application errors the API renders with their
status and code."""

from __future__ import annotations

from pantheon.credits import format_credits
from pantheon.errors import ApplicationError


class InsufficientCredits(ApplicationError):
    """The available credits (balance minus reservations) cannot cover a call's worst case."""

    code = "insufficient_credits"

    def __init__(self, *, required_micro: int, available_micro: int) -> None:
        super().__init__(
            "Not enough credits for this call.",
            details={
                "required": format_credits(required_micro),
                "available": format_credits(available_micro),
            },
        )


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
