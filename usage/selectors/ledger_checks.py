"""Verification of the ledger (`manage.py verify_ledger`): every balance is the sum of its
account's entries, every reservation total the sum of its active reservations, every billed
call has exactly one burn of exactly its credits, and no reservation outlives its expiry.

Large tables are walked by primary key in batches (never OFFSET), and each check reports its
progress per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from django.db.models import F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from pantheon.credits import format_credits
from pantheon.db import pk_batches
from usage.models import (
    CreditAccount,
    LedgerEntry,
    LedgerKind,
    LlmCallEvent,
    Reservation,
    ReservationStatus,
)

Report = Callable[[str], None]


def ledger_problems(
    *,
    now: datetime | None = None,
    expiry_margin: timedelta,
    batch_size: int = 1000,
    progress: Report | None = None,
) -> Iterator[str]:
    """Every inconsistency between accounts, ledger entries, call events and reservations, as
    one human-readable line each. Nothing yielded means the ledger is consistent. Rows are
    walked in primary-key batches; `progress` hears about each batch."""
    now = now or timezone.now()
    report = progress or (lambda message: None)
    yield from _account_problems(batch_size=batch_size, report=report)
    yield from _burn_problems(batch_size=batch_size, report=report)
    yield from _stray_burns()
    yield from _overdue_reservations(now=now, expiry_margin=expiry_margin)


def _account_problems(*, batch_size: int, report: Report) -> Iterator[str]:
    """Balances that are not the sum of their entries; reserved credits that are not the sum of
    the active reservations."""
    checked = 0
    accounts = CreditAccount.objects.select_related("user").annotate(
        entries_total=Coalesce(Sum("entries__amount_micro"), 0)
    )
    for batch in pk_batches(accounts, batch_size=batch_size):
        ids = [account.pk for account in batch]
        active = dict(
            Reservation.objects.filter(account_id__in=ids, status=ReservationStatus.ACTIVE)
            .values("account_id")
            .annotate(total=Sum("amount_micro"))
            .values_list("account_id", "total")
        )
        for account in batch:
            if account.balance_micro != account.entries_total:
                yield (
                    f"account {account.pk} ({account.user.email}): balance "
                    f"{format_credits(account.balance_micro)} != sum of its ledger entries "
                    f"{format_credits(account.entries_total)}"
                )
            if account.reserved_micro != active.get(account.pk, 0):
                yield (
                    f"account {account.pk} ({account.user.email}): reserved "
                    f"{format_credits(account.reserved_micro)} != sum of its active "
                    f"reservations {format_credits(active.get(account.pk, 0))}"
                )
        checked += len(batch)
        report(f"{checked} accounts checked")


def _burn_problems(*, batch_size: int, report: Report) -> Iterator[str]:
    """Billed calls without exactly one burn of exactly their credits."""
    billed = LlmCallEvent.objects.filter(credits_burned__gt=0).only("id", "credits_burned")
    checked = 0
    for batch in pk_batches(billed, batch_size=batch_size):
        burns: dict[Any, list[int]] = {}
        for event_id, amount in LedgerEntry.objects.filter(
            kind=LedgerKind.BURN, event_id__in=[event.pk for event in batch]
        ).values_list("event_id", "amount_micro"):
            burns.setdefault(event_id, []).append(amount)
        for event in batch:
            found = burns.get(event.pk, [])
            if len(found) != 1:
                yield f"event {event.pk}: credits_burned > 0 but {len(found)} burn entries"
            elif found[0] != -event.credits_burned:
                yield (
                    f"event {event.pk}: burned {format_credits(-found[0])} but the event "
                    f"charged {format_credits(event.credits_burned)}"
                )
        checked += len(batch)
        report(f"{checked} billed call events checked")


def _stray_burns() -> Iterator[str]:
    """Burns that do not belong to their event: a burn for a free call, or on another user's
    account."""
    stray = LedgerEntry.objects.filter(kind=LedgerKind.BURN).filter(
        Q(event__credits_burned=0) | ~Q(account__user_id=F("event__user_id"))
    )
    for entry_id, event_id in stray.values_list("id", "event_id").order_by("id"):
        yield f"burn {entry_id}: does not match its event {event_id} (user or amount)"


def _overdue_reservations(*, now: datetime, expiry_margin: timedelta) -> Iterator[str]:
    """Reservations still active well past their expiry: the expiry sweep is not running."""
    overdue = Reservation.objects.filter(
        status=ReservationStatus.ACTIVE, expires_at__lt=now - expiry_margin
    )
    for reservation_id, expires_at in overdue.values_list("id", "expires_at").order_by("id"):
        yield (
            f"reservation {reservation_id}: still active, expired at {expires_at.isoformat()} "
            f"(more than {expiry_margin} ago; is the expiry sweep running?)"
        )
