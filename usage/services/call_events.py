"""Recording a provider call: its event row, its burn, and the settlement of its reservation,
all in one transaction, so the ledger never shows a call without its bill or a bill without
its call.

The outcome of a call crosses into usage as one frozen `CallRecord` of plain values: the apps
that make calls (the turn pipeline, the summarizer, backfills) copy their own outcome into it,
and usage imports none of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from usage import metering
from usage.models import (
    CallPurpose,
    CallStatus,
    CreditAccount,
    LedgerKind,
    LlmCallEvent,
    Reservation,
    ReservationStatus,
    UsageSource,
)
from usage.selectors.prices import PricedModel, model_price_at
from usage.services.ledger import account_for_update, ledger_append
from usage.services.limits import spend_totals_add
from usage.services.reservations import reservation_close

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CallRecord:
    """One finished provider call — success, error, timeout or cancelled — as its caller saw
    it: everything `call_event_record` needs besides the user and the reservation."""

    # What was called, and why.
    purpose: str  # a CallPurpose: agent_reply, routing, summary
    provider: str
    model_id: str
    # How it ended.
    status: str  # a CallStatus: ok, error, timeout, cancelled
    error_code: str = ""
    started_at: datetime  # picks the pricing version in force
    latency_ms: int | None
    time_to_first_token_ms: int | None
    # What it consumed, as an OpenAI-compatible `usage` block counts it: the details are parts
    # of the prompt and completion totals. A failed call passes what the provider reported.
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    usage_source: str  # a UsageSource: provider, or estimated
    generation_id: str | None  # the provider's id of the generation, when it gave one
    # A repeat with the same key returns the first event and writes nothing.
    idempotency_key: str
    # Where it happened.
    room_id: UUID | None = None
    session_id: UUID | None = None
    turn_id: UUID | None = None
    agent_id: UUID | None = None
    api_key_id: UUID | None = None  # the API key that asked for it (spending limits)
    # When it is recorded: now, unless a backfill keeps the original time of the call.
    created_at: datetime | None = None


@dataclass(frozen=True)
class _Bill:
    """How a call is billed: its token buckets, the prices used (None when the model has no
    price) and what it costs."""

    buckets: metering.Buckets
    priced: PricedModel | None
    charge: metering.Charge


def _validate_choice(name: str, value: str, choices: list[str]) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {choices}.")


def _validate(call: CallRecord) -> None:
    _validate_choice("purpose", call.purpose, CallPurpose.values)
    _validate_choice("status", call.status, CallStatus.values)
    _validate_choice("usage_source", call.usage_source, UsageSource.values)
    if not call.idempotency_key:
        raise ValueError("A call event needs an idempotency key.")


def call_event_record(
    *, user: Any, reservation: Reservation | None, call: CallRecord
) -> LlmCallEvent:
    """Record one provider call, bill it and settle its reservation, in one transaction
    (the caller's, when called inside `transaction.atomic()`).

    The call is priced by the version in force at `call.started_at`; failed calls are billed
    for the tokens passed (what the provider reports as consumed). One `burn` entry is written
    when the call costs anything; if it cost more than its reservation, the actual cost is
    burned all the same. Idempotent on `call.idempotency_key`: a repeat returns the first event
    and writes nothing. A model without a price is recorded unpriced and free (and logged)."""
    _validate(call)
    # Checked before any write (the reservation's account is in memory when it came from
    # `credits_reserve`), so the refusal leaves a caller's transaction usable.
    if reservation is not None and reservation.account.user_id != user.pk:
        raise ValueError("The reservation belongs to another user's account.")

    # No savepoint: in a turn this runs inside the call's own transaction, where a savepoint
    # would cost two round trips for nothing.
    with transaction.atomic(savepoint=False):
        account = account_for_update(user)
        generation_id = call.generation_id or None
        # One look for both: a repeat of this call, and an earlier call with the same
        # generation id.
        seen = Q(idempotency_key=call.idempotency_key)
        if generation_id is not None:
            seen |= Q(generation_id=generation_id)
        earlier = list(LlmCallEvent.objects.filter(seen).values_list("pk", "idempotency_key")[:2])
        repeat = next((pk for pk, key in earlier if key == call.idempotency_key), None)
        if repeat is not None:
            return LlmCallEvent.objects.get(pk=repeat)

        event = call_event_build(user_id=user.pk, call=call)
        if earlier:  # not this call's key, so the generation id's
            # The idempotency key is what deduplicates a call; a provider that repeats a
            # generation id must not make a real call go unrecorded or unbilled.
            logger.warning("generation id %s seen before; recorded without it", generation_id)
            event.generation_id = None
        event.save(force_insert=True)
        _settle(account=account, reservation=reservation, event=event)
    return event


def _bill(call: CallRecord) -> _Bill:
    """The call's buckets priced by the version in force when it started (one query)."""
    buckets = metering.buckets_from_usage(
        prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens,
        cached_tokens=call.cached_tokens,
        cache_write_tokens=call.cache_write_tokens,
        reasoning_tokens=call.reasoning_tokens,
    )
    priced = model_price_at(call.model_id, call.started_at)
    if priced is None:
        logger.error("call to unpriced model %s recorded without charge", call.model_id)
        free = metering.Charge(cost_usd=Decimal(0), oe_tokens=Decimal(0), credits_micro=0)
        return _Bill(buckets=buckets, priced=None, charge=free)
    return _Bill(buckets=buckets, priced=priced, charge=priced.charge(buckets))


def _non_negative_or_none(value: int | None) -> int | None:
    return max(0, value) if value is not None else None


def call_event_build(*, user_id: Any, call: CallRecord) -> LlmCallEvent:
    """The event of a call, complete and unsaved: validated, its buckets priced by the version
    in force when it started. `call_event_record` saves it; the turn's one-statement write
    (`usage.sql.record_ctes`) inserts it."""
    _validate(call)
    bill = _bill(call)
    buckets, priced = bill.buckets, bill.priced
    return LlmCallEvent(
        created_at=call.created_at or timezone.now(),
        started_at=call.started_at,
        user_id=user_id,
        room_id=call.room_id,
        session_id=call.session_id,
        turn_id=call.turn_id,
        agent_id=call.agent_id,
        api_key_id=call.api_key_id,
        purpose=call.purpose,
        provider=call.provider,
        model=call.model_id,
        status=call.status,
        error_code=call.error_code,
        latency_ms=_non_negative_or_none(call.latency_ms),
        time_to_first_token_ms=_non_negative_or_none(call.time_to_first_token_ms),
        input_tokens=buckets.input_total,
        cached_input_tokens=buckets.cached_input,
        cache_write_tokens=buckets.cache_write,
        output_tokens=buckets.output_total,
        reasoning_tokens=buckets.reasoning,
        usage_source=call.usage_source,
        generation_id=call.generation_id or None,
        idempotency_key=call.idempotency_key,
        pricing_version=priced.version if priced else None,
        price_snapshot=priced.snapshot if priced else {},
        cost_usd=bill.charge.cost_usd,
        oe_tokens=bill.charge.oe_tokens,
        credits_burned=bill.charge.credits_micro,
    )


def _settle(
    *, account: CreditAccount, reservation: Reservation | None, event: LlmCallEvent
) -> None:
    """Settle the call's reservation to its event and burn what the call cost — the whole cost,
    even beyond the reservation. The caller holds the account lock; the account is saved once
    for both changes."""
    changed = False
    if reservation is not None:
        changed = reservation_close(
            account=account,
            reservation=reservation,
            status=ReservationStatus.SETTLED,
            now=timezone.now(),
            event=event,
        )
    if event.credits_burned > 0:
        ledger_append(
            account=account,
            kind=LedgerKind.BURN,
            amount_micro=-event.credits_burned,
            idempotency_key=f"burn:{event.pk}",
            event=event,
            save=False,
        )
        spend_totals_add(event=event, amount_micro=event.credits_burned)
        changed = True
    if changed:
        account.save(update_fields=["balance_micro", "reserved_micro", "updated_at"])
