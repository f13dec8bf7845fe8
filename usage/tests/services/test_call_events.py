"""Recording LLM calls: pricing, the burn, settlement, idempotency
(usage.services.call_events)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from testing.factories import make_user
from usage.models import CreditAccount, LedgerEntry, LlmCallEvent, PricingVersion
from usage.selectors import credits_for_user, current_prices
from usage.services import (
    InsufficientCredits,
    credits_reserve,
    pricing_version_publish,
    reservation_release,
)
from usage.tests.builders import (
    MINI,
    SONNET,
    WORKED_EXAMPLE_MICRO,
    account_of,
    grant,
    record,
    reserve,
)

pytestmark = pytest.mark.django_db


def balance_of(user) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(user=user).balance_micro


def test_the_worked_example_is_billed_to_the_micro_credit(funded_user) -> None:  # type: ignore[no-untyped-def]
    event = record(funded_user, generation_id="gen-worked-example")

    event.refresh_from_db()
    assert event.cost_usd == Decimal("0.0309")
    assert event.oe_tokens == Decimal("2060")
    assert event.credits_burned == WORKED_EXAMPLE_MICRO
    assert (event.input_tokens, event.cached_input_tokens, event.cache_write_tokens) == (
        12_000,
        8_000,
        2_000,
    )
    assert (event.output_tokens, event.reasoning_tokens) == (1_000, 400)
    assert event.pricing_version.label == "v1"
    assert event.price_snapshot == {
        "version": "v1",
        "input": "3.0000",
        "output": "15.0000",
        "cached_input": "0.3000",
        "cache_write": "3.7500",
        "reasoning": "15.0000",
        "markup": "1.0000",
        "credits_per_usd": "100.0000",
    }
    burn = LedgerEntry.objects.get(event=event)
    assert burn.kind == "burn"
    assert burn.amount_micro == -WORKED_EXAMPLE_MICRO
    assert burn.idempotency_key == f"burn:{event.id}"
    assert credits_for_user(funded_user)["balance"] == "96.910000"


def test_a_failed_call_is_billed_for_what_it_consumed(funded_user) -> None:  # type: ignore[no-untyped-def]
    event = record(
        funded_user,
        status="timeout",
        error_code="timeout",
        model_id=MINI,
        prompt_tokens=1_000,
        completion_tokens=200,
        cached_tokens=0,
        cache_write_tokens=0,
        reasoning_tokens=0,
        usage_source="estimated",
    )

    # 1,000 x $0.15 + 200 x $0.60 = 150 + 120 = 270 / 1M USD = 0.027 credits
    assert event.credits_burned == 27_000
    assert event.status == "timeout"
    assert event.usage_source == "estimated"
    assert LedgerEntry.objects.filter(event=event, kind="burn").count() == 1
    assert balance_of(funded_user) == 100_000_000 - 27_000


def test_a_failed_call_that_consumed_nothing_writes_no_burn(funded_user) -> None:  # type: ignore[no-untyped-def]
    reservation = credits_reserve(
        user=funded_user,
        model_id=MINI,
        estimated_input_tokens=100,
        output_reserve=100,
        purpose="agent_reply",
    )

    event = record(
        funded_user,
        reservation=reservation,
        status="error",
        error_code="provider_error",
        model_id=MINI,
        prompt_tokens=0,
        completion_tokens=0,
        cached_tokens=0,
        cache_write_tokens=0,
        reasoning_tokens=0,
    )

    assert event.credits_burned == 0
    assert not LedgerEntry.objects.filter(event=event).exists()
    assert reservation.status == "settled"
    assert credits_for_user(funded_user) == {
        "balance": "100.000000",
        "reserved": "0.000000",
        "available": "100.000000",
    }


def test_recording_twice_with_one_key_writes_once(funded_user) -> None:  # type: ignore[no-untyped-def]
    reservation = credits_reserve(
        user=funded_user,
        model_id=SONNET,
        estimated_input_tokens=12_000,
        output_reserve=1_000,
        purpose="agent_reply",
    )
    first = record(funded_user, reservation=reservation, idempotency_key="turn-1:agent-1")
    second = record(
        funded_user, reservation=reservation, idempotency_key="turn-1:agent-1", prompt_tokens=99
    )

    assert second.pk == first.pk
    assert LlmCallEvent.objects.filter(user=funded_user).count() == 1
    assert LedgerEntry.objects.filter(kind="burn").count() == 1
    assert balance_of(funded_user) == 100_000_000 - WORKED_EXAMPLE_MICRO
    assert CreditAccount.objects.get(user=funded_user).reserved_micro == 0


def test_a_repeated_generation_id_never_hides_a_real_call(funded_user) -> None:  # type: ignore[no-untyped-def]
    first = record(funded_user, generation_id="gen-1")
    second = record(funded_user, generation_id="gen-1")

    assert first.generation_id == "gen-1"
    assert second.pk != first.pk
    assert second.generation_id is None
    assert balance_of(funded_user) == 100_000_000 - 2 * WORKED_EXAMPLE_MICRO


def test_the_database_refuses_a_duplicate_generation_id(funded_user) -> None:  # type: ignore[no-untyped-def]
    event = record(funded_user, generation_id="gen-unique")
    with pytest.raises(IntegrityError), transaction.atomic():
        LlmCallEvent.objects.create(
            user=funded_user,
            started_at=event.started_at,
            purpose="agent_reply",
            provider="openrouter",
            model=SONNET,
            status="ok",
            usage_source="provider",
            generation_id="gen-unique",
            idempotency_key="another-key",
        )


@pytest.mark.parametrize(
    "tokens",
    [
        {"input_tokens": 10, "cached_input_tokens": 8, "cache_write_tokens": 3},
        {"output_tokens": 5, "reasoning_tokens": 6},
        {"input_tokens": -1},
    ],
)
def test_the_database_refuses_inconsistent_token_buckets(user, tokens) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntegrityError), transaction.atomic():
        LlmCallEvent.objects.create(
            user=user,
            started_at=timezone.now(),
            purpose="agent_reply",
            provider="openrouter",
            model=SONNET,
            status="ok",
            usage_source="provider",
            idempotency_key="bad-buckets",
            **tokens,
        )


def test_details_beyond_the_totals_are_clamped_before_billing(funded_user) -> None:  # type: ignore[no-untyped-def]
    event = record(
        funded_user,
        prompt_tokens=100,
        completion_tokens=10,
        cached_tokens=500,
        cache_write_tokens=0,
        reasoning_tokens=50,
    )
    assert (event.input_tokens, event.cached_input_tokens, event.cache_write_tokens) == (
        100,
        100,
        0,
    )
    assert (event.output_tokens, event.reasoning_tokens) == (10, 10)
    # 100 x $0.30 + 10 x $15 = 180 / 1M USD = 0.018 credits
    assert event.credits_burned == 18_000


def test_an_unpriced_model_is_recorded_free(funded_user) -> None:  # type: ignore[no-untyped-def]
    event = record(funded_user, model_id="someone/new-model")

    assert event.pricing_version is None
    assert event.credits_burned == 0
    assert event.price_snapshot == {}
    assert balance_of(funded_user) == 100_000_000


def test_a_reservation_of_another_user_is_refused(funded_user) -> None:  # type: ignore[no-untyped-def]
    other = make_user()
    grant(other, 10_000_000)
    reservation = credits_reserve(
        user=other,
        model_id=MINI,
        estimated_input_tokens=10,
        output_reserve=10,
        purpose="agent_reply",
    )
    with pytest.raises(ValueError):
        record(funded_user, reservation=reservation)
    assert not LlmCallEvent.objects.exists()


@pytest.mark.parametrize(
    "wrong",
    [
        {"purpose": "shopping"},
        {"status": "fine"},
        {"usage_source": "guessed"},
        {"idempotency_key": ""},
    ],
)
def test_a_call_with_an_unknown_purpose_status_or_source_or_no_key_is_refused(
    funded_user,  # type: ignore[no-untyped-def]
    wrong,  # type: ignore[no-untyped-def]
) -> None:
    with pytest.raises(ValueError):
        record(funded_user, **wrong)
    assert not LlmCallEvent.objects.exists()
    assert balance_of(funded_user) == 100_000_000


def test_the_event_burn_and_settlement_roll_back_with_the_callers_transaction(
    funded_user,  # type: ignore[no-untyped-def]
) -> None:
    reservation = credits_reserve(
        user=funded_user,
        model_id=MINI,
        estimated_input_tokens=10,
        output_reserve=10,
        purpose="agent_reply",
    )

    class PipelineFailed(Exception):
        pass

    with pytest.raises(PipelineFailed), transaction.atomic():
        record(funded_user, reservation=reservation)
        raise PipelineFailed

    reservation.refresh_from_db()
    assert reservation.status == "active"
    assert not LlmCallEvent.objects.exists()
    assert balance_of(funded_user) == 100_000_000


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


def test_settling_a_released_reservation_does_not_unreserve_twice(funded_user) -> None:  # type: ignore[no-untyped-def]
    kept = reserve(funded_user)
    released = reserve(funded_user)
    reservation_release(reservation=released)

    record(funded_user, reservation=released)

    assert account_of(funded_user).reserved_micro == kept.amount_micro
    released.refresh_from_db()
    assert released.status == "released"


def test_created_at_can_be_given_for_a_backfill(funded_user) -> None:  # type: ignore[no-untyped-def]
    when = timezone.now() - timedelta(days=3)
    event = record(funded_user, created_at=when, started_at=when)
    assert event.created_at == when


def test_a_call_that_straddles_a_new_version_is_priced_by_the_old_one(  # type: ignore[no-untyped-def]
    funded_user, process_clock
) -> None:
    started_at = timezone.now()
    assert current_prices([SONNET])[SONNET]["input"] == "3.00"  # this process knows v1 only
    v2 = pricing_version_publish(
        label="v2",
        effective_from=timezone.now() + timedelta(seconds=120),  # the shortest lead allowed
        credits_per_usd=Decimal("100"),
        markup=Decimal("2"),
        prices={SONNET: {"input": Decimal("6"), "output": Decimal("30")}},
    ).version
    process_clock.advance(120)  # the call ends (and is recorded) after v2 came into force
    assert current_prices([SONNET])[SONNET]["input"] == "6.00"

    straddling = record(funded_user, started_at=started_at)
    after = record(funded_user, started_at=timezone.now())

    assert straddling.pricing_version.label == "v1"
    assert straddling.credits_burned == WORKED_EXAMPLE_MICRO
    assert after.pricing_version == v2
    # v2: 2,000 x 6 + 8,000 x 6 + 2,000 x 6 + 600 x 30 + 400 x 30 = 102,000 / 1M USD x 2 x 100
    assert after.cost_usd == Decimal("0.102")
    assert after.credits_burned == 20_400_000
    assert after.oe_tokens == Decimal("3400")
    assert PricingVersion.objects.get(label="v1").status == "retired"


def test_a_draft_version_never_prices_a_call(funded_user) -> None:  # type: ignore[no-untyped-def]
    draft = PricingVersion.objects.create(
        label="draft-cheap",
        effective_from=timezone.now() - timedelta(hours=1),
        credits_per_usd=Decimal("1"),
        markup=Decimal("1"),
    )
    draft.prices.create(model_id=SONNET, input=Decimal("0"), output=Decimal("0"))

    event = record(funded_user)

    assert event.pricing_version.label == "v1"
    assert event.credits_burned == WORKED_EXAMPLE_MICRO


def test_reserve_and_record_take_a_small_constant_number_of_queries(
    funded_user,  # type: ignore[no-untyped-def]
    django_assert_max_num_queries,  # type: ignore[no-untyped-def]
) -> None:
    # The turn pipeline calls both once per LLM call: their cost is part of every turn.
    with django_assert_max_num_queries(7):
        reservation = credits_reserve(
            user=funded_user,
            model_id=SONNET,
            estimated_input_tokens=12_000,
            output_reserve=1_000,
            purpose="agent_reply",
        )
    with django_assert_max_num_queries(10):
        record(funded_user, reservation=reservation, generation_id="gen-queries")
