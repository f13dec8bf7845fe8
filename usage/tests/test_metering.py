"""The OE formula v1 (usage.metering): pure functions, no database."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from usage.metering import (
    Buckets,
    Prices,
    buckets_from_usage,
    charge,
    reservation_micro,
)

SONNET_PRICES = Prices(
    input=Decimal("3"),
    output=Decimal("15"),
    cached_input=Decimal("0.30"),
    cache_write=Decimal("3.75"),
    reasoning=Decimal("15"),
)
ONE = Decimal("1")
HUNDRED = Decimal("100")


def test_worked_example_to_the_micro_credit() -> None:
    buckets = Buckets(
        uncached_input=2_000,
        cached_input=8_000,
        cache_write=2_000,
        visible_output=600,
        reasoning=400,
    )

    result = charge(buckets, SONNET_PRICES, markup=ONE, credits_per_usd=HUNDRED)

    assert result.cost_usd == Decimal("0.0309")
    assert result.oe_tokens == Decimal("2060")
    assert str(result.oe_tokens) == "2060.0000"
    assert result.credits_micro == 3_090_000


def test_worked_example_from_the_provider_usage_block() -> None:
    buckets = buckets_from_usage(
        prompt_tokens=12_000,
        completion_tokens=1_000,
        cached_tokens=8_000,
        cache_write_tokens=2_000,
        reasoning_tokens=400,
    )

    assert buckets == Buckets(2_000, 8_000, 2_000, 600, 400)
    assert charge(buckets, SONNET_PRICES, markup=ONE, credits_per_usd=HUNDRED).credits_micro == (
        3_090_000
    )


def test_markup_and_credits_per_usd_scale_the_credits_not_the_cost() -> None:
    buckets = Buckets(2_000, 8_000, 2_000, 600, 400)

    result = charge(buckets, SONNET_PRICES, markup=Decimal("1.25"), credits_per_usd=Decimal("200"))

    assert result.cost_usd == Decimal("0.0309")
    assert result.oe_tokens == Decimal("2060")
    assert result.credits_micro == 7_725_000  # 0.0309 x 1.25 x 200 credits


def test_zero_output_price_counts_every_token_as_one_oe_token() -> None:
    prices = Prices(
        input=Decimal("0.10"),
        output=Decimal("0"),
        cached_input=Decimal("0.10"),
        cache_write=Decimal("0.10"),
        reasoning=Decimal("0"),
    )
    buckets = buckets_from_usage(prompt_tokens=1_000, completion_tokens=500, reasoning_tokens=100)

    result = charge(buckets, prices, markup=ONE, credits_per_usd=HUNDRED)

    assert result.oe_tokens == Decimal("1500")
    assert result.cost_usd == Decimal("0.0001")  # only the input is billed
    assert result.credits_micro == 10_000


def test_a_free_model_costs_nothing() -> None:
    free = Prices(*(Decimal(0),) * 5)
    result = charge(Buckets(10, 0, 0, 5, 0), free, markup=ONE, credits_per_usd=HUNDRED)
    assert result.cost_usd == 0
    assert result.credits_micro == 0
    assert result.oe_tokens == Decimal(15)


def test_usage_block_without_details() -> None:
    # {"prompt_tokens": 1200, "completion_tokens": 300} — no *_details at all.
    buckets = buckets_from_usage(prompt_tokens=1_200, completion_tokens=300)

    assert buckets == Buckets(
        uncached_input=1_200, cached_input=0, cache_write=0, visible_output=300, reasoning=0
    )


def test_openrouter_usage_block_with_cached_and_reasoning_details() -> None:
    block = {
        "prompt_tokens": 10_339,
        "completion_tokens": 2_560,
        "total_tokens": 12_899,
        "prompt_tokens_details": {"cached_tokens": 10_318, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 2_048},
        "cost": 0.0123,
    }
    buckets = buckets_from_usage(
        prompt_tokens=block["prompt_tokens"],
        completion_tokens=block["completion_tokens"],
        cached_tokens=block["prompt_tokens_details"]["cached_tokens"],
        cache_write_tokens=block["prompt_tokens_details"]["cache_write_tokens"],
        reasoning_tokens=block["completion_tokens_details"]["reasoning_tokens"],
    )
    o3_mini = Prices(
        input=Decimal("1.10"),
        output=Decimal("4.40"),
        cached_input=Decimal("0.55"),
        cache_write=Decimal("1.10"),
        reasoning=Decimal("4.40"),
    )

    result = charge(buckets, o3_mini, markup=ONE, credits_per_usd=HUNDRED)

    assert buckets == Buckets(21, 10_318, 0, 512, 2_048)
    # 21x1.10 + 10318x0.55 + 512x4.40 + 2048x4.40 = 23.1 + 5674.9 + 2252.8 + 9011.2 = 16962
    assert result.cost_usd == Decimal("0.016962")
    assert result.oe_tokens == Decimal("3855.0000")  # 16962 / 4.40
    assert result.credits_micro == 1_696_200


def test_details_larger_than_their_totals_are_clamped() -> None:
    buckets = buckets_from_usage(
        prompt_tokens=100,
        completion_tokens=10,
        cached_tokens=80,
        cache_write_tokens=50,
        reasoning_tokens=25,
    )
    assert buckets == Buckets(0, 80, 20, 0, 10)


def test_negative_or_missing_counts_are_zero() -> None:
    buckets = buckets_from_usage(
        prompt_tokens=-5,
        completion_tokens=None,
        cached_tokens=-1,  # type: ignore[arg-type]
    )
    assert buckets == Buckets(0, 0, 0, 0, 0)


def test_credits_round_half_up_to_the_micro_credit() -> None:
    prices = Prices(*(Decimal("0.0001"),) * 5)
    # 50 tokens x $0.0001 / 1M = $0.000000005 → x 100 credits = 0.5 micro-credits → 1.
    result = charge(Buckets(50, 0, 0, 0, 0), prices, markup=ONE, credits_per_usd=HUNDRED)
    assert result.credits_micro == 1
    # 49 tokens → 0.49 micro-credits → 0.
    less = charge(Buckets(49, 0, 0, 0, 0), prices, markup=ONE, credits_per_usd=HUNDRED)
    assert less.credits_micro == 0


def test_oe_tokens_round_half_up_to_four_places() -> None:
    prices = Prices(
        input=Decimal("0.0001"),
        output=Decimal("2"),
        cached_input=Decimal("0.0001"),
        cache_write=Decimal("0.0001"),
        reasoning=Decimal("2"),
    )
    # 1 x 0.0001 / 2 = 0.00005 → half-up → 0.0001 (half-even would give 0.0000).
    result = charge(Buckets(1, 0, 0, 0, 0), prices, markup=ONE, credits_per_usd=HUNDRED)
    assert result.oe_tokens == Decimal("0.0001")


def test_reservation_covers_input_plus_ten_percent_and_the_output_reserve() -> None:
    # 1,000 x 1.1 x max(3, 3.75) + 100 x max(15, 15) = 4,125 + 1,500 = 5,625 → $0.005625
    amount = reservation_micro(
        estimated_input_tokens=1_000,
        output_reserve=100,
        prices=SONNET_PRICES,
        markup=ONE,
        credits_per_usd=HUNDRED,
    )
    assert amount == 562_500


def test_reservation_uses_the_higher_of_output_and_reasoning_prices() -> None:
    prices = Prices(
        input=Decimal("1"),
        output=Decimal("2"),
        cached_input=Decimal("1"),
        cache_write=Decimal("1"),
        reasoning=Decimal("8"),
    )
    amount = reservation_micro(
        estimated_input_tokens=0,
        output_reserve=1_000,
        prices=prices,
        markup=ONE,
        credits_per_usd=HUNDRED,
    )
    assert amount == 800_000  # 1,000 x $8 / 1M x 100 credits


def test_reservation_rounds_up() -> None:
    prices = Prices(*(Decimal("0.0001"),) * 5)
    # 1 token x 1.1 x 0.0001 / 1M x 100 credits = 0.011 micro-credits → 1 (never 0).
    amount = reservation_micro(
        estimated_input_tokens=1,
        output_reserve=0,
        prices=prices,
        markup=ONE,
        credits_per_usd=HUNDRED,
    )
    assert amount == 1


# --- properties ----------------------------------------------------------------------------------

tokens = st.integers(min_value=0, max_value=5_000_000)
detail = st.integers(min_value=-10, max_value=6_000_000)
price = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False)


@given(prompt=tokens, completion=tokens, cached=detail, cache_write=detail, reasoning=detail)
def test_buckets_are_disjoint_and_add_up_to_the_provider_totals(
    prompt: int, completion: int, cached: int, cache_write: int, reasoning: int
) -> None:
    buckets = buckets_from_usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
    )
    parts = (
        buckets.uncached_input,
        buckets.cached_input,
        buckets.cache_write,
        buckets.visible_output,
        buckets.reasoning,
    )
    assert all(part >= 0 for part in parts)
    assert buckets.uncached_input + buckets.cached_input + buckets.cache_write == prompt
    assert buckets.visible_output + buckets.reasoning == completion
    assert sum(parts) == prompt + completion  # no token counted twice, none lost
    assert buckets.cached_input <= max(cached, 0)
    assert buckets.reasoning <= max(reasoning, 0)


bucket_values = st.tuples(tokens, tokens, tokens, tokens, tokens)
price_values = st.tuples(price, price, price, price, price)


def in_bucket_order(values: tuple[Decimal, ...]) -> Prices:
    """Prices whose i-th value prices the i-th bucket (uncached, cached, cache write, visible
    output, reasoning)."""
    uncached, cached, cache_write, visible, reasoning = values
    return Prices(
        input=uncached,
        output=visible,
        cached_input=cached,
        cache_write=cache_write,
        reasoning=reasoning,
    )


@given(
    counts=bucket_values,
    prices=price_values,
    which=st.integers(min_value=0, max_value=4),
    extra=st.integers(min_value=1, max_value=1_000_000),
)
def test_cost_oe_and_credits_are_monotone_in_every_bucket(
    counts: tuple[int, ...], prices: tuple[Decimal, ...], which: int, extra: int
) -> None:
    price_set = in_bucket_order(prices)
    more = list(counts)
    more[which] += extra
    base = charge(Buckets(*counts), price_set, markup=ONE, credits_per_usd=HUNDRED)
    bigger = charge(Buckets(*more), price_set, markup=ONE, credits_per_usd=HUNDRED)

    assert bigger.cost_usd >= base.cost_usd
    assert bigger.credits_micro >= base.credits_micro
    assert bigger.oe_tokens >= base.oe_tokens
    if prices[which] > 0:
        assert bigger.cost_usd > base.cost_usd


@given(counts=bucket_values, prices=price_values)
def test_cost_is_exact_and_credits_follow_it(
    counts: tuple[int, ...], prices: tuple[Decimal, ...]
) -> None:
    result = charge(Buckets(*counts), in_bucket_order(prices), markup=ONE, credits_per_usd=HUNDRED)
    exact = sum(Decimal(n) * p for n, p in zip(counts, prices, strict=True)) / Decimal(1_000_000)

    assert result.cost_usd == exact  # 4-place prices: 10 places hold every cost exactly
    assert result.credits_micro == int(
        (exact * 100 * 1_000_000).to_integral_value(rounding="ROUND_HALF_UP")
    )


@given(
    estimate=tokens,
    reserve=st.integers(min_value=0, max_value=200_000),
    prices=price_values,
    cached_share=st.floats(min_value=0, max_value=1),
    reasoning_share=st.floats(min_value=0, max_value=1),
)
def test_a_reservation_covers_any_call_within_its_estimate(
    estimate: int,
    reserve: int,
    prices: tuple[Decimal, ...],
    cached_share: float,
    reasoning_share: float,
) -> None:
    price_set = Prices(*prices)
    amount = reservation_micro(
        estimated_input_tokens=estimate,
        output_reserve=reserve,
        prices=price_set,
        markup=ONE,
        credits_per_usd=HUNDRED,
    )
    # Any split of up to the estimated input into uncached/cache-write (cached is never
    # dearer than input in real price lists) and of the output reserve into visible/reasoning.
    if price_set.cached_input > price_set.input:
        price_set = Prices(
            price_set.input,
            price_set.output,
            price_set.input,
            price_set.cache_write,
            price_set.reasoning,
        )
    cache_write = int(estimate * cached_share)
    reasoning = int(reserve * reasoning_share)
    actual = charge(
        Buckets(estimate - cache_write, 0, cache_write, reserve - reasoning, reasoning),
        price_set,
        markup=ONE,
        credits_per_usd=HUNDRED,
    )
    assert amount >= actual.credits_micro
