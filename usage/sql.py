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
  of its reservation, the burn, the account's balance, the spending totals.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pantheon.sql import Cte, insert_cte
from usage.models import LedgerEntry, LedgerKind, LimitWindow, LlmCallEvent, Reservation
from usage.selectors.limits import period_bounds
from usage.services.limits import spend_subjects

# The account, locked, when it can take the reservation: covered, nothing expired to close first,
# and the spending limits (`{limits}`) met.
_ACCOUNT_FOR_RESERVATION = """
SELECT id FROM credit_accounts
WHERE user_id = %(ra_user)s
  AND balance_micro - reserved_micro >= %(ra_amount)s
  AND NOT EXISTS (
    SELECT 1 FROM credit_reservations x
    WHERE x.account_id = credit_accounts.id AND x.status = 'active' AND x.expires_at < %(ra_now)s
  )
  AND {limits}
  {guard}
FOR NO KEY UPDATE
"""

# No limit at all: the statement, taking the account's lock, then reads nothing else.
_NO_LIMITS = "NOT EXISTS (SELECT 1 FROM spending_limits WHERE user_id = %(ra_user)s)"

# Every limit that applies has room for the call: what its subject burned in the window (the
# running total) plus what is reserved for it now (every active reservation: one made just before
# midnight may burn in the new day).
# Only sound when the caller's transaction already holds the account's lock: a statement's
# snapshot is taken when it starts, so one that waited for the lock would not see the
# reservations committed meanwhile (`credits_reserve` is the ORM twin).
_LIMITS_MET = """NOT EXISTS (
    SELECT 1 FROM spending_limits l
    WHERE l.user_id = %(ra_user)s
      AND (l.scope = 'user' OR (l.scope = 'room' AND l.room_id = %(ra_room)s)
           OR (l.scope = 'api_key' AND l.api_key_id = %(ra_key)s))
      AND l.limit_micro < %(ra_amount)s
        + COALESCE((
            SELECT t.burned_micro FROM spend_totals t
            WHERE t.scope = l.scope
              AND t.subject_id = CASE l.scope WHEN 'user' THEN l.user_id
                                              WHEN 'room' THEN l.room_id
                                              ELSE l.api_key_id END
              AND t."window" = l."window"
              AND t.period_start = CASE l."window" WHEN 'day' THEN %(ra_day)s
                                                   ELSE %(ra_month)s END
          ), 0)
        + COALESCE((
            SELECT SUM(y.amount_micro) FROM credit_reservations y
            WHERE y.account_id = credit_accounts.id AND y.status = 'active'
              AND (l.scope = 'user' OR (l.scope = 'room' AND y.room_id = l.room_id)
                   OR (l.scope = 'api_key' AND y.api_key_id = l.api_key_id))
          ), 0)
  )"""

_RESERVE = """
UPDATE credit_accounts
SET reserved_micro = reserved_micro + %(ra_amount)s, updated_at = %(ra_now)s
WHERE id = (SELECT id FROM ra) {guard}
RETURNING id
"""


def reserve_ctes(
    *,
    reservation: Reservation,
    user_id: UUID,
    now: datetime,
    guard: str = "",
    account_locked: bool = False,
) -> list[Cte]:
    """`ra` (the account, locked, when it can take the reservation), `a` (its reserved credits
    grown, returning the account id) and `r` (the reservation row). `guard` is an SQL condition
    both must also meet, e.g. that another CTE returned a row.

    Spending limits: by default the user must have none (else nothing is written and the caller
    goes on with its locked path); with `account_locked` — the caller's transaction holds the
    account's lock — every limit that applies must take the reservation."""
    params = {"ra_user": user_id, "ra_amount": reservation.amount_micro, "ra_now": now}
    limits = _NO_LIMITS
    if account_locked:
        limits = _LIMITS_MET
        day_at, _ = period_bounds(LimitWindow.DAY, now)
        month_at, _ = period_bounds(LimitWindow.MONTH, now)
        params |= {
            "ra_room": reservation.room_id,
            "ra_key": reservation.api_key_id,
            "ra_day": day_at.date(),
            "ra_month": month_at.date(),
        }
    and_guard = f"AND {guard}" if guard else ""
    return [
        Cte("ra", _ACCOUNT_FOR_RESERVATION.format(guard=and_guard, limits=limits), params),
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
        ctes.append(_totals_cte(event))
    return ctes


_TOTALS = """
INSERT INTO spend_totals (scope, subject_id, "window", period_start, burned_micro)
SELECT * FROM (VALUES {rows}) AS v (scope, subject_id, "window", period_start, burned_micro)
WHERE EXISTS (SELECT 1 FROM ac)
ON CONFLICT (scope, subject_id, "window", period_start)
DO UPDATE SET burned_micro = spend_totals.burned_micro + EXCLUDED.burned_micro
RETURNING 1
"""


def _totals_cte(event: LlmCallEvent) -> Cte:
    """`st`: the burn counted in the running totals of the call's user, room and key
    (`spend_totals_add`'s twin). It reads `ac`, so it runs after the account's row is locked:
    every writer of the totals takes that lock first (two orders would deadlock)."""
    subjects = spend_subjects(
        user_id=event.user_id,
        room_id=event.room_id,
        api_key_id=event.api_key_id,
        started_at=event.started_at,
    )
    rows, params = [], {"st_burn": event.credits_burned}
    for i, (scope, subject, window, start) in enumerate(subjects):
        rows.append(
            f"(%(st_scope{i})s, %(st_subject{i})s::uuid, %(st_window{i})s, "
            f"%(st_start{i})s::date, %(st_burn)s::bigint)"
        )
        params |= {
            f"st_scope{i}": scope,
            f"st_subject{i}": subject,
            f"st_window{i}": window,
            f"st_start{i}": start,
        }
    return Cte("st", _TOTALS.format(rows=", ".join(rows)), params)
