"""Reading spending limits: the UTC windows, and what each limit stands at — what its subject
burned in the window (`SpendTotal`, a running total) and what is reserved for it now (its
active reservations)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from usage.models import (
    LimitScope,
    LimitWindow,
    Reservation,
    ReservationStatus,
    SpendingLimit,
    SpendTotal,
)

# Reported first when several limits refuse: the user's, the room's, the key's; day, month.
_SCOPE_ORDER = {LimitScope.USER: 0, LimitScope.ROOM: 1, LimitScope.API_KEY: 2}
WARNING_SHARE = 0.8  # `auth/me` warns about the limits spent to 80 % or more

# --- windows -------------------------------------------------------------------------------


def period_start(window: str, at: datetime) -> date:
    """The UTC day, or the first day of the UTC month, that `at` falls in."""
    day = at.astimezone(UTC).date()
    return day if window == LimitWindow.DAY else day.replace(day=1)


def period_bounds(window: str, at: datetime) -> tuple[datetime, datetime]:
    """When the window holding `at` began, and when it resets (both UTC)."""
    start = period_start(window, at)
    if window == LimitWindow.DAY:
        end = start + timedelta(days=1)
    else:
        end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return datetime.combine(start, time(), UTC), datetime.combine(end, time(), UTC)


# --- what a limit stands at ------------------------------------------------------------------


@dataclass(frozen=True)
class LimitState:
    """A limit with what its subject burned and holds reserved in the current window."""

    limit: SpendingLimit
    spent_micro: int
    reserved_micro: int
    resets_at: datetime

    @property
    def remaining_micro(self) -> int:
        return max(0, self.limit.limit_micro - self.spent_micro)


def _reservation_subject(limit: SpendingLimit) -> Q:
    if limit.scope == LimitScope.ROOM:
        return Q(room_id=limit.room_id)
    if limit.scope == LimitScope.API_KEY:
        return Q(api_key_id=limit.api_key_id)
    return Q()


def limit_states(
    limits: list[SpendingLimit], *, now: datetime, with_reserved: bool = True
) -> list[LimitState]:
    """The states of one user's `limits` at `now`: two queries (one without the reservations)."""
    if not limits:
        return []
    periods = {
        (lim.scope, lim.subject_id, lim.window, period_start(lim.window, now)) for lim in limits
    }
    totals_filter = Q(pk__in=[])
    for scope, subject, window, start in periods:
        totals_filter |= Q(scope=scope, subject_id=subject, window=window, period_start=start)
    burned = {
        (t.scope, t.subject_id, t.window): t.burned_micro
        for t in SpendTotal.objects.filter(totals_filter)
    }
    reserved: dict[str, int] = {}
    if with_reserved:
        sums = {
            f"r{i}": Sum(
                "amount_micro",
                # Every active one, whatever its window: one made just before midnight may
                # burn in the new day.
                filter=_reservation_subject(lim) or None,
                default=0,
            )
            for i, lim in enumerate(limits)
        }
        reserved = Reservation.objects.filter(
            account__user_id=limits[0].user_id, status=ReservationStatus.ACTIVE
        ).aggregate(**sums)
    return [
        LimitState(
            limit=lim,
            spent_micro=burned.get((lim.scope, lim.subject_id, lim.window), 0),
            reserved_micro=reserved.get(f"r{i}", 0),
            resets_at=period_bounds(lim.window, now)[1],
        )
        for i, lim in enumerate(limits)
    ]


def applicable_limits(
    *, user_id: Any, room_id: UUID | None, api_key_id: UUID | None
) -> list[SpendingLimit]:
    """The limits a call of the user in `room_id` through `api_key_id` must fit under, in the
    order they are reported."""
    applies = Q(scope=LimitScope.USER)
    if room_id is not None:
        applies |= Q(scope=LimitScope.ROOM, room_id=room_id)
    if api_key_id is not None:
        applies |= Q(scope=LimitScope.API_KEY, api_key_id=api_key_id)
    limits = list(SpendingLimit.objects.filter(Q(user_id=user_id) & applies))
    limits.sort(key=lambda lim: (_SCOPE_ORDER[lim.scope], lim.window != LimitWindow.DAY))
    return limits


def user_has_limits(user_id: Any) -> bool:
    return SpendingLimit.objects.filter(user_id=user_id).exists()


def limits_for_user(*, user: Any) -> QuerySet[SpendingLimit]:
    """The user's limits, in a stable order (scope, window, creation)."""
    return SpendingLimit.objects.filter(user=user).order_by("scope", "window", "created_at", "id")


def limit_get_for_user(*, user: Any, limit_id: Any) -> SpendingLimit | None:
    """One of the user's limits; None when missing or another user's."""
    return SpendingLimit.objects.filter(user=user, pk=limit_id).first()


def limit_states_for_user(*, user: Any, now: datetime | None = None) -> list[LimitState]:
    """The user's limits with what each stands at (burned, not reserved)."""
    limits = list(limits_for_user(user=user))
    return limit_states(limits, now=now or timezone.now(), with_reserved=False)


def limit_state(limit: SpendingLimit, *, now: datetime | None = None) -> LimitState:
    return limit_states([limit], now=now or timezone.now(), with_reserved=False)[0]


def spending_warnings_for_user(*, user: Any) -> list[LimitState]:
    """The user's limits spent to 80 % or more."""
    return [
        state
        for state in limit_states_for_user(user=user)
        if state.spent_micro >= WARNING_SHARE * state.limit.limit_micro
    ]
