"""Spending limits: caps per UTC day or month on what a user spends, on one of their rooms or
through one of their API keys.

- The check (`limits_refusal`) runs inside `credits_reserve`, under the credit account's row lock
  that every reservation of the user takes: the limits that apply, what each subject burned in
  the window (`SpendTotal`, a running total) and what is reserved for it now (active
  reservations) must leave room for the call's worst case. Concurrent
  calls queue on that lock, so they can never pass a limit together. Three queries whatever the
  history (one when the user has no limit).
- The running totals grow in the transaction that writes each burn (`spend_totals_add`, and its
  one-statement twin in `usage.sql.record_ctes`) and shrink with a refund of that call. A call
  counts in the window in which it started.
- The user manages their limits (`spending_limit_create` / `_update` / `_delete`); a limit staff
  set cannot be raised or removed by its user (403).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

from django.db import IntegrityError, connection, transaction

from pantheon.errors import ApplicationError
from usage.models import (
    LimitScope,
    LimitWindow,
    Refusal,
    RefusalReason,
    SpendingLimit,
    SpendTotal,
)
from usage.selectors.limits import applicable_limits, limit_states, period_start
from usage.services.errors import ReservationRefused, SpendingLimitReached


def limits_refusal(
    *,
    user_id: Any,
    room_id: UUID | None,
    api_key_id: UUID | None,
    amount_micro: int,
    now: datetime,
) -> SpendingLimitReached | None:
    """The refusal of the first limit that applies (user, room, key; day before month) and
    cannot take `amount_micro` more, else None. The caller holds the account lock; it raises the
    refusal once its transaction block has ended."""
    limits = applicable_limits(user_id=user_id, room_id=room_id, api_key_id=api_key_id)
    for state in limit_states(limits, now=now):
        if state.spent_micro + state.reserved_micro + amount_micro > state.limit.limit_micro:
            return SpendingLimitReached(state=state, required_micro=amount_micro)
    return None


# --- running totals --------------------------------------------------------------------------


def spend_subjects(
    *, user_id: Any, room_id: UUID | None, api_key_id: UUID | None, started_at: datetime
) -> list[tuple[str, Any, str, date]]:
    """The (scope, subject, window, period) totals a call started at `started_at` counts in."""
    subjects = [(LimitScope.USER.value, user_id)]
    if room_id is not None:
        subjects.append((LimitScope.ROOM.value, room_id))
    if api_key_id is not None:
        subjects.append((LimitScope.API_KEY.value, api_key_id))
    return [
        (scope, subject, window, period_start(window, started_at))
        for scope, subject in subjects
        for window in LimitWindow.values
    ]


def _db_values(subject: tuple[str, Any, str, date]) -> tuple[Any, ...]:
    """A total's key as the database stores it (a UUID is text on SQLite, a date too)."""
    scope, subject_id, window, start = subject
    uuid_field = SpendTotal._meta.get_field("subject_id")
    return (
        scope,
        uuid_field.get_db_prep_value(subject_id, connection),
        window,
        connection.ops.adapt_datefield_value(start),
    )


_TOTALS_UPSERT = """
INSERT INTO spend_totals (scope, subject_id, "window", period_start, burned_micro)
VALUES {rows}
ON CONFLICT (scope, subject_id, "window", period_start)
DO UPDATE SET burned_micro = spend_totals.burned_micro + EXCLUDED.burned_micro
"""

_TOTALS_TAKE_BACK = """
UPDATE spend_totals
SET burned_micro = CASE WHEN burned_micro > %s THEN burned_micro - %s ELSE 0 END
WHERE {rows}
"""


def spend_totals_add(*, event: Any, amount_micro: int) -> None:
    """Count a call's burn (`amount_micro` > 0) or take back a refund of it (< 0) in the totals of
    its user, room and key for the day and the month it started in. In the caller's
    transaction, under the account lock."""
    if not amount_micro:
        return
    subjects = [
        _db_values(s)
        for s in spend_subjects(
            user_id=event.user_id,
            room_id=event.room_id,
            api_key_id=event.api_key_id,
            started_at=event.started_at,
        )
    ]
    with connection.cursor() as cursor:
        if amount_micro > 0:
            rows = ", ".join(["(%s, %s, %s, %s, %s)"] * len(subjects))
            params = [v for s in subjects for v in (*s, amount_micro)]
            cursor.execute(_TOTALS_UPSERT.format(rows=rows), params)
        else:
            match = " OR ".join(
                ['(scope = %s AND subject_id = %s AND "window" = %s AND period_start = %s)']
                * len(subjects)
            )
            params = [-amount_micro, -amount_micro, *[v for s in subjects for v in s]]
            cursor.execute(_TOTALS_TAKE_BACK.format(rows=match), params)


# --- refusals, for the staff dashboard ------------------------------------------------------


def refusal_record(*, user_id: Any, refusal: ReservationRefused, purpose: str) -> None:
    """Note a refused reservation (outside the refused transaction, which rolled back)."""
    if isinstance(refusal, SpendingLimitReached):
        reason, limit_id = RefusalReason.LIMIT, refusal.limit_id
    else:
        reason, limit_id = RefusalReason.CREDITS, None
    Refusal.objects.create(
        user_id=user_id,
        reason=reason,
        purpose=purpose,
        limit_id=limit_id,
        required_micro=refusal.required_micro,
    )


# --- the user's own limits -------------------------------------------------------------------


def _staff_refuses(message: str) -> ApplicationError:
    return ApplicationError(message, code="permission_denied")


def spending_limit_create(
    *,
    user: Any,
    scope: str,
    window: str,
    limit_micro: int,
    room_id: UUID | None = None,
    api_key_id: UUID | None = None,
    set_by_staff: bool = False,
) -> SpendingLimit:
    """A new limit (the caller checked the room or key is the user's). 409
    `spending_limit_exists` when the target already has one for this window."""
    limit = SpendingLimit(
        user=user,
        scope=scope,
        room_id=room_id if scope == LimitScope.ROOM else None,
        api_key_id=api_key_id if scope == LimitScope.API_KEY else None,
        window=window,
        limit_micro=limit_micro,
        set_by_staff=set_by_staff,
    )
    try:
        with transaction.atomic():
            limit.save(force_insert=True)
    except IntegrityError as exc:
        same_target = SpendingLimit.objects.filter(
            user=user,
            scope=scope,
            room_id=limit.room_id,
            api_key_id=limit.api_key_id,
            window=window,
        )
        if not same_target.exists():  # another rule than one limit per target and window
            raise
        raise ApplicationError(
            f"There is already a {window} limit on this {scope}: change that one instead.",
            code="spending_limit_exists",
        ) from exc
    return limit


def spending_limit_update(*, limit: SpendingLimit, limit_micro: int) -> SpendingLimit:
    """Change a limit's amount; a staff limit can only be lowered by its user (403)."""
    if limit.set_by_staff and limit_micro > limit.limit_micro:
        raise _staff_refuses("This limit was set by staff: you can lower it, not raise it.")
    limit.limit_micro = limit_micro
    limit.save(update_fields=["limit_micro", "updated_at"])
    return limit


def spending_limit_delete(*, limit: SpendingLimit) -> None:
    """Remove a limit; a staff limit cannot be removed by its user (403)."""
    if limit.set_by_staff:
        raise _staff_refuses("This limit was set by staff: it cannot be removed.")
    limit.delete()
