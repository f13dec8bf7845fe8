"""Writes for usage: pricing versions, credit reservations, call events with their burns,
grants and adjustments.

Every change to a credit account happens under that account's row lock
(`select_for_update(no_key=True)`, taken before any reservation row), and every ledger entry is
written in the same transaction as the balance it changes. The services work inside a caller's
transaction (the turn pipeline's) as well as on their own: each opens `transaction.atomic()`,
which is a savepoint when nested.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from pantheon.errors import ApplicationError
from usage import metering
from usage.models import (
    PRICE_DECIMAL_PLACES,
    RESERVATION_TTL,
    CallPurpose,
    CallStatus,
    CreditAccount,
    LedgerEntry,
    LedgerKind,
    LlmCallEvent,
    ModelPrice,
    PricingStatus,
    PricingVersion,
    Reservation,
    ReservationStatus,
    UsageSource,
)
from usage.selectors import PricedModel, format_credits, model_price_at, prices_of

logger = logging.getLogger(__name__)

PRICE_FIELDS = ("input", "output", "cached_input", "cache_write", "reasoning")
_PRICE_MAX = Decimal("99999999.9999")  # numeric(12, 4)


# --- errors ------------------------------------------------------------------------------------


class InsufficientCredits(ApplicationError):
    """The available credits (balance minus reservations) cannot cover a call's worst case."""

    status_code = 402
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

    status_code = 422
    code = "model_not_priced"

    def __init__(self, *, model_id: str) -> None:
        super().__init__(
            f"The model {model_id!r} has no price; it cannot be used until one is published.",
            details={"model": model_id},
        )


class PricingRefused(ApplicationError):
    """A pricing version cannot be published as asked (invalid, or it would change a
    published version)."""

    status_code = 409
    code = "pricing_refused"


def _idempotency_key_reused(key: str) -> ApplicationError:
    return ApplicationError(
        "This idempotency key was already used for a different ledger entry.",
        code="idempotency_key_reused",
        status_code=422,
        details={"idempotency_key": key},
    )


# --- accounts and the ledger -------------------------------------------------------------------


def _account_for_update(user: Any) -> CreditAccount:
    """The user's credit account, locked for this transaction; created when missing.

    ON CONFLICT DO NOTHING makes a concurrent first creation safe without a savepoint: the
    loser's insert waits for the winner and then does nothing."""
    locked = CreditAccount.objects.select_for_update(no_key=True)
    account = locked.filter(user_id=user.pk).first()
    if account is None:
        CreditAccount.objects.bulk_create([CreditAccount(user_id=user.pk)], ignore_conflicts=True)
        account = locked.get(user_id=user.pk)
    return account


def _ledger_append(
    *,
    account: CreditAccount,
    kind: str,
    amount_micro: int,
    idempotency_key: str,
    event: LlmCallEvent | None = None,
    note: str = "",
    created_by: Any = None,
    save: bool = True,
) -> LedgerEntry:
    """Append one entry and move the balance (saved unless `save=False`, when the caller saves
    the account itself). The caller holds the account's lock."""
    account.balance_micro += amount_micro
    entry = LedgerEntry.objects.create(
        account=account,
        kind=kind,
        amount_micro=amount_micro,
        balance_after_micro=account.balance_micro,
        event=event,
        idempotency_key=idempotency_key,
        note=note[:500],
        created_by=created_by,
    )
    if save:
        account.save(update_fields=["balance_micro", "updated_at"])
    return entry


def _ledger_write(
    *,
    user: Any,
    kind: str,
    amount_micro: int,
    idempotency_key: str,
    event: LlmCallEvent | None,
    note: str,
    created_by: Any,
) -> LedgerEntry:
    if not idempotency_key:
        raise ValueError("A ledger entry needs an idempotency key.")
    with transaction.atomic():
        account = _account_for_update(user)
        existing = LedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            same = (
                existing.account_id == account.pk
                and existing.kind == kind
                and existing.amount_micro == amount_micro
                and existing.event_id == (event.pk if event else None)
            )
            if not same:
                raise _idempotency_key_reused(idempotency_key)
            return existing
        return _ledger_append(
            account=account,
            kind=kind,
            amount_micro=amount_micro,
            idempotency_key=idempotency_key,
            event=event,
            note=note,
            created_by=created_by,
        )


def _require_positive(amount_micro: int) -> None:
    if not isinstance(amount_micro, int) or amount_micro <= 0:
        raise ApplicationError(
            "The amount must be a positive number of credits.",
            code="validation_error",
            details={"amount": ["Must be greater than zero."]},
        )


def credits_grant(
    *,
    user: Any,
    amount_micro: int,
    note: str = "",
    idempotency_key: str,
    created_by: Any = None,
) -> LedgerEntry:
    """Give `user` credits (a positive `grant` entry). Idempotent on `idempotency_key`: a
    repeat returns the first entry; the same key for a different grant is refused (422)."""
    _require_positive(amount_micro)
    return _ledger_write(
        user=user,
        kind=LedgerKind.GRANT,
        amount_micro=amount_micro,
        idempotency_key=idempotency_key,
        event=None,
        note=note,
        created_by=created_by,
    )


def credits_refund(
    *,
    user: Any,
    amount_micro: int,
    note: str = "",
    idempotency_key: str,
    event: LlmCallEvent | None = None,
    created_by: Any = None,
) -> LedgerEntry:
    """Give back credits for a call (a positive `refund` entry), idempotent on the key."""
    _require_positive(amount_micro)
    return _ledger_write(
        user=user,
        kind=LedgerKind.REFUND,
        amount_micro=amount_micro,
        idempotency_key=idempotency_key,
        event=event,
        note=note,
        created_by=created_by,
    )


def credits_adjust(
    *,
    user: Any,
    amount_micro: int,
    note: str = "",
    idempotency_key: str,
    event: LlmCallEvent | None = None,
    created_by: Any = None,
) -> LedgerEntry:
    """Correct a balance by a signed, non-zero amount (an `adjustment` entry), optionally
    about one call event (a reprice). Idempotent on the key."""
    if not isinstance(amount_micro, int) or amount_micro == 0:
        raise ApplicationError(
            "An adjustment must be a non-zero number of credits.",
            code="validation_error",
            details={"amount": ["Must not be zero."]},
        )
    return _ledger_write(
        user=user,
        kind=LedgerKind.ADJUSTMENT,
        amount_micro=amount_micro,
        idempotency_key=idempotency_key,
        event=event,
        note=note,
        created_by=created_by,
    )


# --- reservations ------------------------------------------------------------------------------


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


def _close_one(
    *,
    account: CreditAccount,
    reservation: Reservation,
    status: str,
    now: datetime,
    event: LlmCallEvent | None = None,
) -> bool:
    """Close one reservation if it is still active and give its amount back (in memory: the
    caller saves the account). Caller holds the account lock."""
    closed = Reservation.objects.filter(
        pk=reservation.pk, account=account, status=ReservationStatus.ACTIVE
    ).update(status=status, closed_at=now, event=event)
    if closed:
        account.reserved_micro -= reservation.amount_micro
        reservation.status, reservation.closed_at, reservation.event = status, now, event
    else:
        reservation.refresh_from_db(fields=["status", "closed_at", "event"])
    return bool(closed)


def credits_reserve(
    *,
    user: Any,
    model_id: str,
    estimated_input_tokens: int,
    output_reserve: int,
    purpose: str,
    session_id: Any = None,
    turn_id: Any = None,
    at: datetime | None = None,
) -> Reservation:
    """Hold a call's worst case (see `metering.reservation_micro`) priced by the version in
    force at `at` (default now).

    Raises `ModelNotPriced` (422) when the model has no price and `InsufficientCredits` (402)
    when balance - reserved cannot cover it. Locks the user's account row; works inside the
    caller's transaction (e.g. after it locked the session row) or on its own. Expired
    reservations of this account are released first, so a crashed call never holds credits
    past its expiry."""
    if purpose not in CallPurpose.values:
        raise ValueError(f"Unknown purpose {purpose!r}.")
    now = timezone.now()
    priced = model_price_at(model_id, at or now)
    if priced is None:
        raise ModelNotPriced(model_id=model_id)
    amount = metering.reservation_micro(
        estimated_input_tokens=estimated_input_tokens,
        output_reserve=output_reserve,
        prices=priced.prices,
        markup=priced.version.markup,
        credits_per_usd=priced.version.credits_per_usd,
    )
    # No savepoint: inside a caller's transaction (a turn's admission) it would cost two round
    # trips for nothing, and the refusal below is raised only after the block has ended.
    with transaction.atomic(savepoint=False):
        account = _account_for_update(user)
        # With nothing reserved (the usual case) no active reservation can have expired.
        if account.reserved_micro and _close_expired(account=account, now=now):
            account.save(update_fields=["reserved_micro", "updated_at"])
        available = account.available_micro
        if available >= amount:
            reservation = Reservation.objects.create(
                account=account,
                amount_micro=amount,
                purpose=purpose,
                model_id=model_id,
                session_id=session_id,
                turn_id=turn_id,
                created_at=now,
                expires_at=now + RESERVATION_TTL,
            )
            account.reserved_micro += amount
            account.save(update_fields=["reserved_micro", "updated_at"])
    if available < amount:
        raise InsufficientCredits(required_micro=amount, available_micro=available)
    return reservation


def reservation_release(*, reservation: Reservation) -> None:
    """Give an active reservation back without a burn (its call never happened). Releasing a
    reservation that is no longer active does nothing."""
    now = timezone.now()
    with transaction.atomic():
        account = CreditAccount.objects.select_for_update(no_key=True).get(
            pk=reservation.account_id
        )
        if _close_one(
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


# --- call events -------------------------------------------------------------------------------


def _validate_choice(name: str, value: str, choices: list[str]) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {choices}.")


def call_event_record(
    *,
    user: Any,
    reservation: Reservation | None,
    purpose: str,
    provider: str,
    model_id: str,
    status: str,
    error_code: str = "",
    started_at: datetime,
    latency_ms: int,
    time_to_first_token_ms: int | None,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
    usage_source: str,
    generation_id: str | None,
    idempotency_key: str,
    room_id: Any = None,
    session_id: Any = None,
    turn_id: Any = None,
    agent_id: Any = None,
    created_at: datetime | None = None,
) -> LlmCallEvent:
    """Record one provider call, bill it and settle its reservation, in one transaction
    (the caller's, when called inside `transaction.atomic()`).

    The call is priced by the version in force at `started_at`; failed calls are billed for the
    tokens passed (what the provider reports as consumed). One `burn` entry is written when the
    call costs anything; if it cost more than its reservation, the actual cost is burned all
    the same. Idempotent on `idempotency_key`: a repeat returns the first event and writes
    nothing. A model without a price is recorded unpriced and free (and logged).
    `created_at` (default now) lets a backfill keep the original time of a call."""
    _validate_choice("purpose", purpose, CallPurpose.values)
    _validate_choice("status", status, CallStatus.values)
    _validate_choice("usage_source", usage_source, UsageSource.values)
    if not idempotency_key:
        raise ValueError("A call event needs an idempotency key.")

    # Checked before any write (the reservation's account is in memory when it came from
    # `credits_reserve`), so the refusal leaves a caller's transaction usable.
    if reservation is not None and reservation.account.user_id != user.pk:
        raise ValueError("The reservation belongs to another user's account.")

    # No savepoint: in a turn this runs inside the call's own transaction, where a savepoint
    # would cost two round trips for nothing.
    with transaction.atomic(savepoint=False):
        account = _account_for_update(user)
        generation_id = generation_id or None
        # One look for both: a repeat of this call, and an earlier call with the same
        # generation id.
        seen = Q(idempotency_key=idempotency_key)
        if generation_id is not None:
            seen |= Q(generation_id=generation_id)
        earlier = list(LlmCallEvent.objects.filter(seen).values_list("pk", "idempotency_key")[:2])
        repeat = next((pk for pk, key in earlier if key == idempotency_key), None)
        if repeat is not None:
            return LlmCallEvent.objects.get(pk=repeat)

        buckets = metering.buckets_from_usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            cache_write_tokens=cache_write_tokens,
            reasoning_tokens=reasoning_tokens,
        )
        priced = model_price_at(model_id, started_at)
        if priced is None:
            logger.error("call to unpriced model %s recorded without charge", model_id)
            result = metering.Charge(cost_usd=Decimal(0), oe_tokens=Decimal(0), credits_micro=0)
        else:
            result = metering.charge(
                buckets,
                priced.prices,
                markup=priced.version.markup,
                credits_per_usd=priced.version.credits_per_usd,
            )
        if earlier:  # not this call's key, so the generation id's
            # The idempotency key is what deduplicates a call; a provider that repeats a
            # generation id must not make a real call go unrecorded or unbilled.
            logger.warning("generation id %s seen before; recorded without it", generation_id)
            generation_id = None

        event = LlmCallEvent.objects.create(
            created_at=created_at or timezone.now(),
            started_at=started_at,
            user_id=user.pk,
            room_id=room_id,
            session_id=session_id,
            turn_id=turn_id,
            agent_id=agent_id,
            purpose=purpose,
            provider=provider,
            model=model_id,
            status=status,
            error_code=error_code,
            latency_ms=max(0, latency_ms) if latency_ms is not None else None,
            time_to_first_token_ms=(
                max(0, time_to_first_token_ms) if time_to_first_token_ms is not None else None
            ),
            input_tokens=buckets.input_total,
            cached_input_tokens=buckets.cached_input,
            cache_write_tokens=buckets.cache_write,
            output_tokens=buckets.output_total,
            reasoning_tokens=buckets.reasoning,
            usage_source=usage_source,
            generation_id=generation_id,
            idempotency_key=idempotency_key,
            pricing_version=priced.version if priced else None,
            price_snapshot=priced.snapshot if priced else {},
            cost_usd=result.cost_usd,
            oe_tokens=result.oe_tokens,
            credits_burned=result.credits_micro,
        )
        changed = False
        if reservation is not None:
            changed = _close_one(
                account=account,
                reservation=reservation,
                status=ReservationStatus.SETTLED,
                now=timezone.now(),
                event=event,
            )
        if result.credits_micro > 0:
            _ledger_append(
                account=account,
                kind=LedgerKind.BURN,
                amount_micro=-result.credits_micro,
                idempotency_key=f"burn:{event.pk}",
                event=event,
                save=False,
            )
            changed = True
        if changed:
            account.save(update_fields=["balance_micro", "reserved_micro", "updated_at"])
    return event


# --- pricing versions --------------------------------------------------------------------------


def _validate_price(model_id: str, field: str, value: Any) -> Decimal | None:
    if value is None:
        if field in ("input", "output"):
            raise PricingRefused(
                f"{model_id}: the {field} price is required.",
                details={"prices": {model_id: {field: ["This field is required."]}}},
            )
        return None
    if not isinstance(value, Decimal) or not value.is_finite():
        raise PricingRefused(
            f"{model_id}: the {field} price must be a decimal number.",
            details={"prices": {model_id: {field: ["Must be a decimal number."]}}},
        )
    if value < 0 or value > _PRICE_MAX:
        raise PricingRefused(
            f"{model_id}: the {field} price is out of range.",
            details={"prices": {model_id: {field: [f"Must be between 0 and {_PRICE_MAX}."]}}},
        )
    if value != value.quantize(Decimal(1).scaleb(-PRICE_DECIMAL_PLACES)):
        raise PricingRefused(
            f"{model_id}: the {field} price has more than {PRICE_DECIMAL_PLACES} decimals.",
            details={
                "prices": {model_id: {field: [f"At most {PRICE_DECIMAL_PLACES} decimal places."]}}
            },
        )
    return value


def _clean_prices(
    prices: Mapping[str, Mapping[str, Decimal | None]],
) -> dict[str, dict[str, Decimal | None]]:
    if not prices:
        raise PricingRefused(
            "A pricing version needs at least one model price.",
            details={"prices": ["At least one model is required."]},
        )
    cleaned: dict[str, dict[str, Decimal | None]] = {}
    for model_id, fields in prices.items():
        unknown = set(fields) - set(PRICE_FIELDS)
        if not model_id or unknown:
            raise PricingRefused(
                f"{model_id or '(empty)'}: unknown price fields {sorted(unknown)}.",
                details={"prices": {model_id: [f"Allowed fields: {', '.join(PRICE_FIELDS)}."]}},
            )
        cleaned[model_id] = {f: _validate_price(model_id, f, fields.get(f)) for f in PRICE_FIELDS}
    return cleaned


def _version_prices(version: PricingVersion) -> dict[str, dict[str, Decimal | None]]:
    return {
        price.model_id: {f: getattr(price, f) for f in PRICE_FIELDS}
        for price in version.prices.all()
    }


def _same_content(
    version: PricingVersion,
    *,
    effective_from: datetime,
    credits_per_usd: Decimal,
    markup: Decimal,
    prices: dict[str, dict[str, Decimal | None]],
) -> bool:
    return (
        version.effective_from == effective_from
        and version.credits_per_usd == credits_per_usd
        and version.markup == markup
        and _version_prices(version) == prices
    )


def _check_publishable(*, label: str, effective_from: datetime, now: datetime) -> None:
    if timezone.is_naive(effective_from):
        raise PricingRefused(
            "effective_from must carry a time zone.",
            details={"effective_from": ["Give a time zone, e.g. 2026-02-01T00:00:00Z."]},
        )
    if effective_from < now:
        raise PricingRefused(
            f"{label}: effective_from is in the past; published prices never apply to calls "
            "that already started.",
            details={"effective_from": ["Must not be in the past."]},
        )
    latest = (
        PricingVersion.objects.exclude(status=PricingStatus.DRAFT)
        .order_by("-effective_from")
        .first()
    )
    if latest is not None and effective_from <= latest.effective_from:
        raise PricingRefused(
            f"{label}: effective_from must be after the latest published version "
            f"({latest.label}, {latest.effective_from.isoformat()}).",
            details={"effective_from": [f"Must be after {latest.effective_from.isoformat()}."]},
        )


@dataclass(frozen=True)
class PublishResult:
    """What `pricing_version_publish` did: `created`, `activated` (a draft) or `unchanged`."""

    version: PricingVersion
    outcome: str


def pricing_version_publish(
    *,
    label: str,
    effective_from: datetime,
    credits_per_usd: Decimal,
    markup: Decimal,
    prices: Mapping[str, Mapping[str, Decimal | None]],
    now: datetime | None = None,
) -> PublishResult:
    """Publish a new active pricing version (or a draft of the same label, replacing its
    prices). Publishing exactly what is already published is a no-op (`unchanged`); changing
    a published version is refused — publish a new label instead. `effective_from` must not be
    in the past and must follow every published version. Earlier active versions become
    `retired` (they still price the calls that started while they were in force)."""
    now = now or timezone.now()
    label = (label or "").strip()
    if not label or len(label) > 50:
        raise PricingRefused(
            "A pricing version needs a label of 1 to 50 characters.",
            details={"label": ["1 to 50 characters."]},
        )
    for name, value in (("credits_per_usd", credits_per_usd), ("markup", markup)):
        if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
            raise PricingRefused(
                f"{name} must be a positive decimal number.",
                details={name: ["Must be a positive decimal number."]},
            )
        if value != value.quantize(Decimal("0.0001")) or value >= Decimal("1E10"):
            raise PricingRefused(
                f"{name} has too many digits.",
                details={name: ["At most 4 decimal places."]},
            )
    cleaned = _clean_prices(prices)

    with transaction.atomic():
        # One publisher at a time: the lock makes "after the latest version" hold.
        list(PricingVersion.objects.select_for_update(no_key=True).order_by("pk"))
        existing = PricingVersion.objects.filter(label=label).first()
        if existing is not None and existing.is_published:
            if _same_content(
                existing,
                effective_from=effective_from,
                credits_per_usd=credits_per_usd,
                markup=markup,
                prices=cleaned,
            ):
                return PublishResult(version=existing, outcome="unchanged")
            raise PricingRefused(
                f"Pricing version {label!r} is already published ({existing.status}) and is "
                "never changed; publish a new version with another label.",
                details={"label": ["A published version with this label exists."]},
            )
        _check_publishable(label=label, effective_from=effective_from, now=now)
        if existing is None:
            version = PricingVersion.objects.create(
                label=label,
                effective_from=effective_from,
                credits_per_usd=credits_per_usd,
                markup=markup,
                status=PricingStatus.DRAFT,
            )
            outcome = "created"
        else:
            version = existing
            version.effective_from = effective_from
            version.credits_per_usd = credits_per_usd
            version.markup = markup
            version.save(update_fields=["effective_from", "credits_per_usd", "markup"])
            version.prices.all().delete()
            outcome = "activated"
        ModelPrice.objects.bulk_create(
            ModelPrice(version=version, model_id=model_id, **fields)
            for model_id, fields in cleaned.items()
        )
        _activate(version)
    return PublishResult(version=version, outcome=outcome)


def _activate(version: PricingVersion) -> None:
    PricingVersion.objects.filter(
        status=PricingStatus.ACTIVE, effective_from__lt=version.effective_from
    ).update(status=PricingStatus.RETIRED)
    version.status = PricingStatus.ACTIVE
    version.save(update_fields=["status"])


def pricing_version_activate(*, version: PricingVersion, now: datetime | None = None) -> None:
    """Publish a draft prepared in the admin, under the same rules as `pricing_version_publish`
    (it needs prices, and an effective_from not in the past and after every published one)."""
    now = now or timezone.now()
    with transaction.atomic():
        list(PricingVersion.objects.select_for_update(no_key=True).order_by("pk"))
        version.refresh_from_db()
        if version.is_published:
            raise PricingRefused(
                f"Pricing version {version.label!r} is already published.",
                details={"status": [version.status]},
            )
        if not version.prices.exists():
            raise PricingRefused(
                f"Pricing version {version.label!r} has no prices.",
                details={"prices": ["At least one model is required."]},
            )
        _check_publishable(label=version.label, effective_from=version.effective_from, now=now)
        _activate(version)


def pricing_version_ensure_editable(*, version: PricingVersion) -> None:
    """Refuse any change to a published version (the admin and services call this)."""
    if version.pk is not None:
        stored = PricingVersion.objects.filter(pk=version.pk).values_list("status", flat=True)
        if stored and stored[0] != PricingStatus.DRAFT:
            raise PricingRefused(
                f"Pricing version {version.label!r} is published and is never changed.",
                details={"status": [stored[0]]},
            )


# --- repricing ---------------------------------------------------------------------------------


@dataclass
class RepriceResult:
    """Totals of a reprice run (micro-credits; a positive delta is charged to users)."""

    examined: int = 0
    adjusted: int = 0
    unpriced: int = 0
    charged_micro: int = 0
    refunded_micro: int = 0


def _reprice_target(event: LlmCallEvent, priced: PricedModel) -> int:
    buckets = metering.Buckets(
        uncached_input=event.input_tokens - event.cached_input_tokens - event.cache_write_tokens,
        cached_input=event.cached_input_tokens,
        cache_write=event.cache_write_tokens,
        visible_output=event.output_tokens - event.reasoning_tokens,
        reasoning=event.reasoning_tokens,
    )
    return metering.charge(
        buckets,
        priced.prices,
        markup=priced.version.markup,
        credits_per_usd=priced.version.credits_per_usd,
    ).credits_micro


def events_reprice(
    *,
    version: PricingVersion,
    dry_run: bool = False,
    batch_size: int = 500,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> RepriceResult:
    """Bring what each call event has cost its user to what it costs under `version`, as
    `adjustment` ledger entries about the event (the event rows never change).

    Each event's net charge so far (its burn plus earlier adjustments and refunds) is compared
    with its cost under `version`; a difference becomes one adjustment whose idempotency key
    is derived from the event, the version and the number of earlier adjustments, so a re-run
    (or a concurrent run) writes nothing more. Events are walked by primary key in batches."""
    if not version.is_published:
        raise PricingRefused(
            f"Pricing version {version.label!r} is a draft; publish it before repricing.",
            details={"version": ["Must be published."]},
        )
    result = RepriceResult()
    prices = {
        price.model_id: PricedModel(version=version, prices=prices_of(price))
        for price in version.prices.all()
    }
    events = LlmCallEvent.objects.select_related("user").order_by("pk")
    if since is not None:
        events = events.filter(created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    last_pk = None
    while True:
        page = events if last_pk is None else events.filter(pk__gt=last_pk)
        batch = list(page[:batch_size])
        if not batch:
            break
        last_pk = batch[-1].pk
        ids = [event.pk for event in batch]
        net = dict(
            LedgerEntry.objects.filter(event_id__in=ids)
            .values("event_id")
            .annotate(total=Sum("amount_micro"))
            .values_list("event_id", "total")
        )
        adjustments = dict(
            LedgerEntry.objects.filter(event_id__in=ids, kind=LedgerKind.ADJUSTMENT)
            .values("event_id")
            .annotate(n=Count("id"))
            .values_list("event_id", "n")
        )
        for event in batch:
            result.examined += 1
            priced = prices.get(event.model)
            if priced is None:
                result.unpriced += 1
                continue
            delta = -_reprice_target(event, priced) - net.get(event.pk, 0)
            if delta == 0:
                continue
            result.adjusted += 1
            if delta < 0:
                result.charged_micro += -delta
            else:
                result.refunded_micro += delta
            if not dry_run:
                credits_adjust(
                    user=event.user,
                    amount_micro=delta,
                    event=event,
                    note=f"reprice under {version.label}",
                    idempotency_key=(
                        f"reprice:{event.pk}:{version.label}:{adjustments.get(event.pk, 0)}"
                    ),
                )
        if progress is not None:
            progress(result.examined)
    return result
