"""Reservations: holding a call's worst case, releasing and expiring it
(usage.services.reservations)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from pantheon.api.exceptions import http_status_of
from testing.factories import make_user
from usage.models import CreditAccount, LedgerEntry, Reservation
from usage.selectors import credits_for_user
from usage.services import (
    InsufficientCredits,
    ModelNotPriced,
    reservation_release,
    reservations_expire,
)
from usage.tests.builders import MINI, SONNET_1000_500, account_of, grant, reserve

pytestmark = pytest.mark.django_db


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

    assert http_status_of(caught.value.code) == 402  # the API layer's mapping
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


def test_release_returns_the_credits_without_a_burn_and_is_idempotent(funded_user) -> None:  # type: ignore[no-untyped-def]
    reservation = reserve(funded_user)

    reservation_release(reservation=reservation)
    reservation_release(reservation=reservation)

    assert reservation.status == "released"
    assert account_of(funded_user).reserved_micro == 0
    assert account_of(funded_user).balance_micro == 100_000_000
    assert LedgerEntry.objects.filter(kind="burn").count() == 0


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


def test_reserving_a_cheap_model_costs_less(funded_user) -> None:  # type: ignore[no-untyped-def]
    cheap = reserve(funded_user, model_id=MINI)
    # 1,000 x 1.1 x $0.15 + 500 x $0.60 = 165 + 300 = 465 / 1M USD = 0.0465 credits
    assert cheap.amount_micro == 46_500
