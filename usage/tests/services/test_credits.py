"""Credit accounts, reservations, grants and adjustments (usage.services), on the database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from pantheon.errors import ApplicationError
from testing.factories import make_user
from usage.models import (
    CreditAccount,
    LedgerEntry,
    LedgerImmutableError,
    Reservation,
)
from usage.selectors import credits_for_user
from usage.services import (
    InsufficientCredits,
    ModelNotPriced,
    credits_adjust,
    credits_grant,
    credits_refund,
    credits_reserve,
    reservation_release,
    reservations_expire,
)
from usage.tests.builders import MINI, SONNET, grant, record

pytestmark = pytest.mark.django_db

# Sonnet 4: 1,000 x 1.1 x $3.75 + 500 x $15 = 4,125 + 7,500 = 11,625 / 1M USD = 1.1625 credits
SONNET_1000_500 = 1_162_500


def reserve(user, **overrides):  # type: ignore[no-untyped-def]
    fields = {
        "user": user,
        "model_id": SONNET,
        "estimated_input_tokens": 1_000,
        "output_reserve": 500,
        "purpose": "agent_reply",
    }
    fields.update(overrides)
    return credits_reserve(**fields)


def account_of(user) -> CreditAccount:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(user=user)


def test_a_new_user_starts_at_zero(user) -> None:  # type: ignore[no-untyped-def]
    assert credits_for_user(user) == {
        "balance": "0.000000",
        "reserved": "0.000000",
        "available": "0.000000",
    }


def test_reserve_holds_the_worst_case_priced_by_the_version_in_force(funded_user) -> None:  # type: ignore[no-untyped-def]
    session_id = "7d7b7c26-9b7f-4a43-8f0c-2c1b9a6c3f10"

    reservation = reserve(funded_user, session_id=session_id)

    assert reservation.amount_micro == SONNET_1000_500
    assert reservation.status == "active"
    assert str(reservation.session_id) == session_id
    assert reservation.expires_at - reservation.created_at == timedelta(minutes=15)
    assert credits_for_user(funded_user) == {
        "balance": "100.000000",
        "reserved": "1.162500",
        "available": "98.837500",
    }


def test_reserve_refuses_when_available_credits_cannot_cover_it(user) -> None:  # type: ignore[no-untyped-def]
    grant(user, SONNET_1000_500 * 2 - 1)
    reserve(user)

    with pytest.raises(InsufficientCredits) as caught:
        reserve(user)

    assert caught.value.status_code == 402
    assert caught.value.code == "insufficient_credits"
    assert caught.value.details == {"required": "1.162500", "available": "1.162499"}
    assert Reservation.objects.filter(account__user=user).count() == 1
    assert account_of(user).reserved_micro == SONNET_1000_500


def test_reserve_exactly_the_available_amount_succeeds(user) -> None:  # type: ignore[no-untyped-def]
    grant(user, SONNET_1000_500)
    reserve(user)
    assert credits_for_user(user)["available"] == "0.000000"


def test_reserve_for_a_user_without_account_creates_it_and_refuses(user) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InsufficientCredits) as caught:
        reserve(user)
    assert caught.value.details["available"] == "0.000000"


def test_insufficient_credits_leaves_the_callers_transaction_usable(user) -> None:  # type: ignore[no-untyped-def]
    grant(user, 1)
    with transaction.atomic():
        with pytest.raises(InsufficientCredits):
            reserve(user)
        # The pipeline goes on writing in the same transaction after a refusal.
        assert CreditAccount.objects.filter(user=user).count() == 1
        grant(user, SONNET_1000_500)
        reserve(user)
    assert account_of(user).reserved_micro == SONNET_1000_500


def test_reserve_an_unpriced_model_is_refused(funded_user) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelNotPriced) as caught:
        reserve(funded_user, model_id="nobody/unknown-model")
    assert caught.value.details == {"model": "nobody/unknown-model"}


def test_reserve_validates_the_purpose(funded_user) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        reserve(funded_user, purpose="shopping")


def test_settle_gives_back_the_reservation_and_burns_the_actual_cost(funded_user) -> None:  # type: ignore[no-untyped-def]
    reservation = reserve(funded_user, estimated_input_tokens=12_000, output_reserve=1_000)

    event = record(funded_user, reservation=reservation)

    reservation.refresh_from_db()
    assert reservation.status == "settled"
    assert reservation.closed_at is not None
    assert reservation.event_id == event.id
    assert event.credits_burned == 3_090_000
    assert credits_for_user(funded_user) == {
        "balance": "96.910000",
        "reserved": "0.000000",
        "available": "96.910000",
    }


def test_overspend_beyond_the_reservation_burns_the_actual_cost(user) -> None:  # type: ignore[no-untyped-def]
    # Reserve for 10 input / 10 output tokens; the call then uses the worked example's usage.
    grant(user, 20_000)
    reservation = reserve(user, estimated_input_tokens=10, output_reserve=10)
    assert reservation.amount_micro == 19_125  # 10 x 1.1 x $3.75 + 10 x $15 = 191.25 / 1M USD

    event = record(user, reservation=reservation)

    account = account_of(user)
    assert event.credits_burned == 3_090_000
    assert account.reserved_micro == 0
    # The balance dips below zero by exactly the excess over what was available.
    assert account.balance_micro == 20_000 - 3_090_000
    burn = LedgerEntry.objects.get(event=event)
    assert burn.kind == "burn"
    assert burn.amount_micro == -3_090_000
    assert burn.balance_after_micro == account.balance_micro


def test_a_second_reservation_is_refused_after_an_overspend(user) -> None:  # type: ignore[no-untyped-def]
    grant(user, 20_000)
    record(user, reservation=reserve(user, estimated_input_tokens=10, output_reserve=10))
    with pytest.raises(InsufficientCredits):
        reserve(user, estimated_input_tokens=0, output_reserve=1)


def test_release_returns_the_credits_without_a_burn_and_is_idempotent(funded_user) -> None:  # type: ignore[no-untyped-def]
    reservation = reserve(funded_user)

    reservation_release(reservation=reservation)
    reservation_release(reservation=reservation)

    assert reservation.status == "released"
    assert account_of(funded_user).reserved_micro == 0
    assert account_of(funded_user).balance_micro == 100_000_000
    assert LedgerEntry.objects.filter(kind="burn").count() == 0


def test_settling_a_released_reservation_does_not_unreserve_twice(funded_user) -> None:  # type: ignore[no-untyped-def]
    kept = reserve(funded_user)
    released = reserve(funded_user)
    reservation_release(reservation=released)

    record(funded_user, reservation=released)

    assert account_of(funded_user).reserved_micro == kept.amount_micro
    released.refresh_from_db()
    assert released.status == "released"


def test_expire_releases_only_reservations_past_their_expiry(funded_user) -> None:  # type: ignore[no-untyped-def]
    first = reserve(funded_user)
    second = reserve(funded_user)
    other = make_user()
    grant(other, 10_000_000)
    third = reserve(other)

    assert reservations_expire() == 0
    later = timezone.now() + timedelta(minutes=16)
    assert reservations_expire(now=later) == 3
    assert reservations_expire(now=later) == 0

    for reservation in (first, second, third):
        reservation.refresh_from_db()
        assert reservation.status == "expired"
    assert account_of(funded_user).reserved_micro == 0
    assert account_of(other).reserved_micro == 0


def test_reserve_expires_the_accounts_stale_reservations_first(user) -> None:  # type: ignore[no-untyped-def]
    grant(user, SONNET_1000_500)
    stale = reserve(user)
    Reservation.objects.filter(pk=stale.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    fresh = reserve(user)

    stale.refresh_from_db()
    assert stale.status == "expired"
    assert account_of(user).reserved_micro == fresh.amount_micro


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


def test_reserving_a_cheap_model_costs_less(funded_user) -> None:  # type: ignore[no-untyped-def]
    cheap = reserve(funded_user, model_id=MINI)
    # 1,000 x 1.1 x $0.15 + 500 x $0.60 = 165 + 300 = 465 / 1M USD = 0.0465 credits
    assert cheap.amount_micro == 46_500
