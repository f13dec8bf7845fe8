"""Writes for usage, one module per concern:

    ledger.py        credit accounts and ledger entries: grant, refund, adjust
    reservations.py  a call's worst case held before it: reserve, release, expire
    call_events.py   recording a call (`CallRecord`): its event, its burn, its settlement
    pricing.py       validating and publishing pricing versions, repricing past events
    errors.py        the refusals (402 insufficient credits, 422 unpriced model, 409 pricing)

Other apps import from here. The services work inside a caller's transaction (the turn
pipeline's) as well as on their own: each opens `transaction.atomic()`, which is a savepoint
when nested (or, where a savepoint would be wasted, joins the caller's transaction).
"""

from usage.services.call_events import CallRecord, call_event_build, call_event_record
from usage.services.errors import InsufficientCredits, ModelNotPriced, PricingRefused
from usage.services.ledger import credits_adjust, credits_grant, credits_refund
from usage.services.pricing import (
    PRICE_FIELDS,
    PublishResult,
    RepriceResult,
    events_reprice,
    pricing_version_activate,
    pricing_version_ensure_editable,
    pricing_version_publish,
)
from usage.services.reservations import (
    credits_reserve,
    reservation_amount,
    reservation_draft,
    reservation_release,
    reservations_expire,
)

__all__ = [
    "PRICE_FIELDS",
    "CallRecord",
    "InsufficientCredits",
    "ModelNotPriced",
    "PricingRefused",
    "PublishResult",
    "RepriceResult",
    "call_event_build",
    "call_event_record",
    "credits_adjust",
    "credits_grant",
    "credits_refund",
    "credits_reserve",
    "events_reprice",
    "pricing_version_activate",
    "pricing_version_ensure_editable",
    "pricing_version_publish",
    "reservation_amount",
    "reservation_draft",
    "reservation_release",
    "reservations_expire",
]
