"""Credit accounts and their ledger: grants, refunds, adjustments, and the database's guards on
entries (usage.services.ledger)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from pantheon.errors import ApplicationError
from usage.models import LedgerEntry, LedgerImmutableError
from usage.selectors import credits_for_user
from usage.services import credits_adjust, credits_grant, credits_refund
from usage.tests.builders import account_of, grant, record

pytestmark = pytest.mark.django_db


def test_a_new_user_starts_at_zero(user) -> None:  # type: ignore[no-untyped-def]
    assert credits_for_user(user) == {
        "balance": "0.000000",
        "reserved": "0.000000",
        "available": "0.000000",
    }


def test_grant_is_idempotent_on_its_key(user) -> None:  # type: ignore[no-untyped-def]
    first = credits_grant(user=user, amount_micro=5_000_000, idempotency_key="welcome", note="hi")
    again = credits_grant(user=user, amount_micro=5_000_000, idempotency_key="welcome", note="hi")

    assert again.pk == first.pk
    assert LedgerEntry.objects.filter(account__user=user).count() == 1
    assert credits_for_user(user)["balance"] == "5.000000"
    assert first.balance_after_micro == 5_000_000


def test_grant_key_reused_for_another_amount_is_refused(user) -> None:  # type: ignore[no-untyped-def]
    credits_grant(user=user, amount_micro=5_000_000, idempotency_key="welcome")
    with pytest.raises(ApplicationError) as caught:
        credits_grant(user=user, amount_micro=6_000_000, idempotency_key="welcome")
    assert caught.value.code == "idempotency_key_reused"
    assert credits_for_user(user)["balance"] == "5.000000"


@pytest.mark.parametrize("amount", [0, -5])
def test_grant_needs_a_positive_amount(user, amount) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ApplicationError) as caught:
        credits_grant(user=user, amount_micro=amount, idempotency_key="k")
    assert caught.value.code == "validation_error"


def test_adjust_and_refund_move_the_balance_both_ways(user) -> None:  # type: ignore[no-untyped-def]
    grant(user, 10_000_000)
    event = record(user)
    credits_refund(user=user, amount_micro=90_000, event=event, idempotency_key="r1")
    credits_adjust(user=user, amount_micro=-1_000_000, idempotency_key="a1", note="fix")
    credits_adjust(user=user, amount_micro=-1_000_000, idempotency_key="a1", note="fix")

    assert account_of(user).balance_micro == 10_000_000 - 3_090_000 + 90_000 - 1_000_000
    with pytest.raises(ApplicationError):
        credits_adjust(user=user, amount_micro=0, idempotency_key="a2")


def test_ledger_entries_are_append_only(user) -> None:  # type: ignore[no-untyped-def]
    entry = credits_grant(user=user, amount_micro=1_000_000, idempotency_key="g")

    entry.note = "changed"
    with pytest.raises(LedgerImmutableError):
        entry.save()
    with pytest.raises(LedgerImmutableError):
        entry.delete()
    with pytest.raises(LedgerImmutableError):
        LedgerEntry.objects.filter(pk=entry.pk).update(note="changed")
    with pytest.raises(LedgerImmutableError):
        LedgerEntry.objects.filter(pk=entry.pk).delete()
    entry.refresh_from_db()
    assert entry.note == ""


def test_the_database_refuses_a_second_burn_for_one_event(funded_user) -> None:  # type: ignore[no-untyped-def]
    event = record(funded_user)
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(
            account=account_of(funded_user),
            kind="burn",
            amount_micro=-1,
            balance_after_micro=0,
            event=event,
            idempotency_key="second-burn",
        )


@pytest.mark.parametrize(
    ("kind", "amount"), [("grant", -1), ("burn", 5), ("refund", 0), ("adjustment", 0)]
)
def test_the_database_refuses_a_wrongly_signed_entry(user, kind, amount) -> None:  # type: ignore[no-untyped-def]
    grant(user, 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(
            account=account_of(user),
            kind=kind,
            amount_micro=amount,
            balance_after_micro=0,
            idempotency_key=f"bad-{kind}",
        )
