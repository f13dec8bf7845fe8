"""Credit accounts and their ledger: grants, refunds and adjustments.

Every change to a credit account happens under that account's row lock
(`select_for_update(no_key=True)`, taken before any reservation row), and every ledger entry is
written in the same transaction as the balance it changes. Entries are append-only and each has
a unique idempotency key, so a retried write returns the first entry instead of paying twice.

`account_for_update` and `ledger_append` are the building blocks the reservation and call-event
services share; other apps use the services.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import Sum

from pantheon.errors import ApplicationError
from usage.models import CreditAccount, LedgerEntry, LedgerKind, LlmCallEvent
from usage.services.limits import spend_totals_add


def account_for_update(user: Any) -> CreditAccount:
    """The user's credit account, locked for this transaction; created when missing.

    ON CONFLICT DO NOTHING makes a concurrent first creation safe without a savepoint: the
    loser's insert waits for the winner and then does nothing."""
    locked = CreditAccount.objects.select_for_update(no_key=True)
    account = locked.filter(user_id=user.pk).first()
    if account is None:
        CreditAccount.objects.bulk_create([CreditAccount(user_id=user.pk)], ignore_conflicts=True)
        account = locked.get(user_id=user.pk)
    return account


def ledger_append(
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


def _idempotency_key_reused(key: str) -> ApplicationError:
    return ApplicationError(
        "This idempotency key was already used for a different ledger entry.",
        code="idempotency_key_reused",
        details={"idempotency_key": key},
    )


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
        account = account_for_update(user)
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
        if event is not None and kind != LedgerKind.GRANT:
            _count_in_spending(account=account, event=event, amount_micro=amount_micro)
        return ledger_append(
            account=account,
            kind=kind,
            amount_micro=amount_micro,
            idempotency_key=idempotency_key,
            event=event,
            note=note,
            created_by=created_by,
        )


def _count_in_spending(*, account: CreditAccount, event: LlmCallEvent, amount_micro: int) -> None:
    """A refund or an adjustment of a call changes what the call counts toward its spending
    limits, in the window it counted in: an extra charge adds to it, credits given back take
    from it — never more than the call is still charged, so other calls' spending stays."""
    if event.user_id != account.user_id:
        raise ApplicationError(
            "This call event is another user's.",
            code="validation_error",
            details={"event": ["Must be one of this user's call events."]},
        )
    if amount_micro < 0:  # charged more
        spend_totals_add(event=event, amount_micro=-amount_micro)
        return
    net = LedgerEntry.objects.filter(event=event).aggregate(net=Sum("amount_micro"))["net"] or 0
    still_charged = max(0, -net)
    spend_totals_add(event=event, amount_micro=-min(amount_micro, still_charged))


def _check_amount(kind: str, amount_micro: int) -> None:
    """Grants and refunds add credits (positive); an adjustment corrects either way (non-zero)."""
    if isinstance(amount_micro, int) and (
        amount_micro > 0 or (kind == LedgerKind.ADJUSTMENT and amount_micro != 0)
    ):
        return
    if kind == LedgerKind.ADJUSTMENT:
        message, rule = "An adjustment must be a non-zero number of credits.", "Must not be zero."
    else:
        message = "The amount must be a positive number of credits."
        rule = "Must be greater than zero."
    raise ApplicationError(message, code="validation_error", details={"amount": [rule]})


def credits_entry(
    *,
    kind: str,
    user: Any,
    amount_micro: int,
    idempotency_key: str,
    note: str = "",
    event: LlmCallEvent | None = None,
    created_by: Any = None,
) -> LedgerEntry:
    """Append a `grant` (credits given), a `refund` (credits given back for a call) or an
    `adjustment` (a signed correction, e.g. a reprice of one call event) to `user`'s ledger.
    Idempotent on `idempotency_key`: a repeat returns the first entry; the same key for a
    different entry is refused (422)."""
    _check_amount(kind, amount_micro)
    return _ledger_write(
        user=user,
        kind=kind,
        amount_micro=amount_micro,
        idempotency_key=idempotency_key,
        event=event,
        note=note,
        created_by=created_by,
    )


# The three kinds a caller writes, by name.
credits_grant = partial(credits_entry, kind=LedgerKind.GRANT)
credits_refund = partial(credits_entry, kind=LedgerKind.REFUND)
credits_adjust = partial(credits_entry, kind=LedgerKind.ADJUSTMENT)
