"""Reservations: a call's worst case held against the available credits before the call, so
concurrent calls of one user can never spend the same credits twice.

A reservation is closed exactly once — settled by its call event, released when the call never
happened, or expired when its holder crashed — and its amount goes back to the available
credits at that moment. Statuses change only under the account's row lock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from usage import metering
from usage.models import (
    RESERVATION_TTL,
    CallPurpose,
    CreditAccount,
    LlmCallEvent,
    Reservation,
    ReservationStatus,
)
from usage.selectors.prices import model_price_at
from usage.services.errors import InsufficientCredits, ModelNotPriced
from usage.services.ledger import account_for_update
from usage.services.limits import limits_refusal


def _close_expired(*, account: CreditAccount, now: datetime) -> int:
    """Expire the account's active reservations past their expiry and give their amount back
    (in memory: the caller saves the account). Returns how many. Caller holds the account
    lock, under which reservation statuses are only ever changed, so the read is stable."""
    due = list(
        Reservation.objects.filter(
            account=account, status=ReservationStatus.ACTIVE, expires_at__lt=now
        ).values_list("pk", "amount_micro")
    )
    if due:
        Reservation.objects.filter(pk__in=[pk for pk, _ in due]).update(
            status=ReservationStatus.EXPIRED, closed_at=now
        )
        account.reserved_micro -= sum(amount for _, amount in due)
    return len(due)


def reservation_close(
    *,
    account: CreditAccount,
    reservation: Reservation,
    status: str,
    now: datetime,
    event: LlmCallEvent | None = None,
) -> bool:
    """Close one reservation if it is still active and give its amount back (in memory: the
    caller saves the account); False when it was already closed. Caller holds the account
    lock."""
    closed = Reservation.objects.filter(
        pk=reservation.pk, account=account, status=ReservationStatus.ACTIVE
    ).update(status=status, closed_at=now, event=event)
    if closed:
        account.reserved_micro -= reservation.amount_micro
        reservation.status, reservation.closed_at, reservation.event = status, now, event
    else:
        reservation.refresh_from_db(fields=["status", "closed_at", "event"])
    return bool(closed)


def reservation_amount(
    *,
    model_id: str,
    estimated_input_tokens: int,
    output_reserve: int,
    at: datetime | None = None,
) -> int:
    """A call's worst case in micro-credits (see `metering.reservation_micro`), priced by the
    version in force at `at` (default now). Raises `ModelNotPriced` (422) when the model has no
    price."""
    priced = model_price_at(model_id, at or timezone.now())
    if priced is None:
        raise ModelNotPriced(model_id=model_id)
    return metering.reservation_micro(
        estimated_input_tokens=estimated_input_tokens,
        output_reserve=output_reserve,
        prices=priced.prices,
        markup=priced.version.markup,
        credits_per_usd=priced.version.credits_per_usd,
    )


def reservation_draft(
    *,
    amount_micro: int,
    purpose: str,
    model_id: str,
    session_id: Any = None,
    turn_id: Any = None,
    room_id: Any = None,
    api_key_id: Any = None,
    now: datetime,
) -> Reservation:
    """A reservation, unsaved and without its account: what `credits_reserve` writes, and what
    the turn's one-statement opening (`usage.sql.reserve_ctes`) inserts."""
    if purpose not in CallPurpose.values:
        raise ValueError(f"Unknown purpose {purpose!r}.")
    return Reservation(
        amount_micro=amount_micro,
        purpose=purpose,
        model_id=model_id,
        session_id=session_id,
        turn_id=turn_id,
        room_id=room_id,
        api_key_id=api_key_id,
        created_at=now,
        expires_at=now + RESERVATION_TTL,
    )


def credits_reserve(
    *,
    user: Any,
    model_id: str,
    estimated_input_tokens: int,
    output_reserve: int,
    purpose: str,
    session_id: Any = None,
    turn_id: Any = None,
    room_id: Any = None,
    api_key_id: Any = None,
    at: datetime | None = None,
    amount_micro: int | None = None,
) -> Reservation:
    """Hold a call's worst case (`reservation_amount`, unless `amount_micro` gives it) priced
    by the version in force at `at` (default now), for a call in `room_id` asked for through
    `api_key_id` (what its spending limits are about).

    Raises `ModelNotPriced` (422) when the model has no price, `InsufficientCredits` (402)
    when balance - reserved cannot cover it, and `SpendingLimitReached` (402) when a limit of
    the user, the room or the key cannot (credits are reported first). Locks the user's
    account row; works inside the caller's transaction (e.g. after it locked the session row)
    or on its own. Expired
    reservations of this account are released first, so a crashed call never holds credits
    past its expiry."""
    now = timezone.now()
    if amount_micro is None:
        amount_micro = reservation_amount(
            model_id=model_id,
            estimated_input_tokens=estimated_input_tokens,
            output_reserve=output_reserve,
            at=at or now,
        )
    reservation = reservation_draft(
        amount_micro=amount_micro,
        purpose=purpose,
        model_id=model_id,
        session_id=session_id,
        turn_id=turn_id,
        room_id=room_id,
        api_key_id=api_key_id,
        now=now,
    )
    # No savepoint: inside a caller's transaction (a turn's admission) it would cost two round
    # trips for nothing, and the refusal below is raised only after the block has ended.
    with transaction.atomic(savepoint=False):
        account = account_for_update(user)
        # With nothing reserved (the usual case) no active reservation can have expired.
        if account.reserved_micro and _close_expired(account=account, now=now):
            account.save(update_fields=["reserved_micro", "updated_at"])
        available = account.available_micro
        refused = None
        if available >= amount_micro:
            refused = limits_refusal(
                user_id=account.user_id,
                room_id=room_id,
                api_key_id=api_key_id,
                amount_micro=amount_micro,
                now=now,
            )
        if available >= amount_micro and refused is None:
            reservation.account = account
            reservation.save(force_insert=True)
            account.reserved_micro += amount_micro
            account.save(update_fields=["reserved_micro", "updated_at"])
    if available < amount_micro:
        raise InsufficientCredits(required_micro=amount_micro, available_micro=available)
    if refused is not None:
        raise refused
    return reservation


def reservation_release(*, reservation: Reservation) -> None:
    """Give an active reservation back without a burn (its call never happened). Releasing a
    reservation that is no longer active does nothing."""
    now = timezone.now()
    with transaction.atomic():
        account = CreditAccount.objects.select_for_update(no_key=True).get(
            pk=reservation.account_id
        )
        if reservation_close(
            account=account, reservation=reservation, status=ReservationStatus.RELEASED, now=now
        ):
            account.save(update_fields=["reserved_micro", "updated_at"])


def reservations_expire(*, now: datetime | None = None) -> int:
    """Expire every active reservation past its `expires_at`, one account at a time (each in a
    short transaction under that account's lock). Returns how many were expired."""
    now = now or timezone.now()
    expired = 0
    account_ids = (
        Reservation.objects.filter(status=ReservationStatus.ACTIVE, expires_at__lt=now)
        .values_list("account_id", flat=True)
        .distinct()
        .order_by("account_id")
    )
    for account_id in list(account_ids):
        with transaction.atomic():
            account = CreditAccount.objects.select_for_update(no_key=True).get(pk=account_id)
            count = _close_expired(account=account, now=now)
            if count:
                account.save(update_fields=["reserved_micro", "updated_at"])
            expired += count
    return expired
