"""Writes for usage, one module per concern:

    ledger.py        credit accounts and ledger entries: grant, refund, adjust
    reservations.py  a call's worst case held before it: reserve, release, expire
    call_events.py   recording a call (`CallRecord`): its event, its burn, its settlement
    pricing.py       validating and publishing pricing versions, repricing past events
    limits.py        spending limits: the check under the account lock, the running totals
    errors.py        the refusals (402 credits or limit, 422 unpriced model, 409 pricing)

Other apps import from here. The services work inside a caller's transaction (the turn
pipeline's) as well as on their own: each opens `transaction.atomic()`, which is a savepoint
when nested (or, where a savepoint would be wasted, joins the caller's transaction).
"""

from usage.services.call_events import CallRecord, call_event_build, call_event_record
from usage.services.errors import (
    InsufficientCredits,
    ModelNotPriced,
    PricingRefused,
    ReservationRefused,
    SpendingLimitReached,
)
from usage.services.ledger import (
    account_for_update,
    credits_adjust,
    credits_grant,
    credits_refund,
)
from usage.services.limits import (
    refusal_record,
    spending_limit_create,
    spending_limit_delete,
    spending_limit_update,
)
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
    "ReservationRefused",
    "SpendingLimitReached",
    "account_for_update",
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
    "refusal_record",
    "reservation_amount",
    "reservation_draft",
    "reservation_release",
    "reservations_expire",
    "spending_limit_create",
    "spending_limit_delete",
    "spending_limit_update",
]
