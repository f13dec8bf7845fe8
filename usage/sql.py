"""The usage app's hand-written statements: its share of the turn's one-round-trip writes, as
CTEs the caller composes with its own (see `pantheon.sql`). Each replaces an ORM path of
`usage.services` that stays for SQLite and for the cases named below, with the same effect on
the same rows; the tests run both.

- `reserve_ctes`: a call's reservation (`credits_reserve`): the account's reserved credits
  grow and the reservation row is written — only when the available credits cover it and no
  active reservation of the account has expired (the ORM path expires those first), under the
  account's row lock.
- `record_ctes`: a call's record (`call_event_record`): the event (skipped when its
  idempotency key or generation id was seen before: the ORM path then decides), the settlement
  of its reservation, the burn, the account's balance.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pantheon.sql import Cte, insert_cte
from usage.models import LedgerEntry, LedgerKind, LlmCallEvent, Reservation

# The account, locked, when it can take the reservation: covered, nothing expired to close first.
_ACCOUNT_FOR_RESERVATION = """
SELECT id FROM credit_accounts
WHERE user_id = %(ra_user)s
  AND balance_micro - reserved_micro >= %(ra_amount)s
  AND NOT EXISTS (
    SELECT 1 FROM credit_reservations x
    WHERE x.account_id = credit_accounts.id AND x.status = 'active' AND x.expires_at < %(ra_now)s
  )
  {guard}
FOR NO KEY UPDATE
"""

_RESERVE = """
UPDATE credit_accounts
SET reserved_micro = reserved_micro + %(ra_amount)s, updated_at = %(ra_now)s
WHERE id = (SELECT id FROM ra) {guard}
RETURNING id
"""


def reserve_ctes(
    *, reservation: Reservation, user_id: UUID, now: datetime, guard: str = ""
) -> list[Cte]:
    """`ra` (the account, locked, when it can take the reservation), `a` (its reserved credits
    grown, returning the account id) and `r` (the reservation row). `guard` is an SQL condition
    both must also meet, e.g. that another CTE returned a row."""
    params = {"ra_user": user_id, "ra_amount": reservation.amount_micro, "ra_now": now}
    and_guard = f"AND {guard}" if guard else ""
    return [
        Cte("ra", _ACCOUNT_FOR_RESERVATION.format(guard=and_guard), params),
        Cte("a", _RESERVE.format(guard=and_guard)),
        insert_cte("r", reservation, source="a", overrides={"account_id": "a.id"}),
    ]


_SETTLE = """
UPDATE credit_reservations
SET status = 'settled', closed_at = %(rs_now)s, event_id = (SELECT id FROM ev)
WHERE id = %(rs_id)s AND status = 'active' AND EXISTS (SELECT 1 FROM ev)
  AND account_id = (SELECT id FROM credit_accounts WHERE user_id = %(rs_user)s)
RETURNING amount_micro
"""

_ACCOUNT = """
UPDATE credit_accounts
SET balance_micro = balance_micro - %(ac_burn)s,
    reserved_micro = reserved_micro - {settled},
    updated_at = %(ac_now)s
WHERE user_id = %(ac_user)s AND EXISTS (SELECT 1 FROM ev)
RETURNING id, balance_micro
"""


def record_ctes(*, event: LlmCallEvent, reservation_id: UUID | None, now: datetime) -> list[Cte]:
    """`ev` (the event row, or nothing when its key or generation id was seen), then — only with
    it — `rs` (the reservation settled to it), `ac` (the account: the burn off the balance, the
    settled amount off the reserved credits) and `le` (the burn entry, when the call cost
    anything). `event` is complete and unsaved (`call_event_build`)."""
    ctes = [insert_cte("ev", event, suffix="ON CONFLICT DO NOTHING")]
    settled = "0"
    if reservation_id is not None:
        ctes.append(
            Cte("rs", _SETTLE, {"rs_now": now, "rs_id": reservation_id, "rs_user": event.user_id})
        )
        settled = "COALESCE((SELECT amount_micro FROM rs), 0)"
    burn = event.credits_burned
    if burn or reservation_id is not None:
        params = {"ac_burn": burn, "ac_now": now, "ac_user": event.user_id}
        ctes.append(Cte("ac", _ACCOUNT.format(settled=settled), params))
    if burn:
        entry = LedgerEntry(
            kind=LedgerKind.BURN,
            amount_micro=-burn,
            balance_after_micro=0,  # the account's new balance, from `ac`
            event_id=event.id,
            idempotency_key=f"burn:{event.id}",
            created_at=now,
        )
        overrides = {"account_id": "ac.id", "balance_after_micro": "ac.balance_micro"}
        ctes.append(insert_cte("le", entry, source="ac", overrides=overrides))
    return ctes
