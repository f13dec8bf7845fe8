"""The metering formula (OE formula v1): token buckets, cost, output-equivalent tokens, credits.

The one place that knows how a call is priced. Pure functions over plain values: `Decimal` for
money, `int` for tokens and micro-credits, never floats. Worked example, at $3 in, $15 out,
$0.30 cached and $3.75 cache write per 1M tokens, 100 credits per USD, markup 1: 2,000 uncached
input, 8,000 cached, 2,000 cache write, 600 output and 400 reasoning tokens cost $0.0309, which
is 2,060 OE tokens and 3.09 credits — floats make it 2059.9999… OE tokens.

    cost_usd       = Σ n_b * p_b / 1,000,000        (p_b: USD per 1M tokens of bucket b)
    oe_tokens      = cost_usd * 1,000,000 / p_out   (if p_out = 0: Σ n_b), half-up to 4 places
    credits_burned = cost_usd * markup * credits_per_usd, in micro-credits, half-up
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from pantheon.credits import MICRO_PER_CREDIT

TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)  # prices are USD per 1M tokens
# A reservation covers the estimated input plus this margin (the estimate is a tokenizer's guess).
RESERVATION_INPUT_MARGIN = Decimal("1.10")

COST_QUANTUM = Decimal("1E-10")  # llm_call_events.cost_usd is numeric(20, 10)
OE_QUANTUM = Decimal("1E-4")  # oe_tokens is numeric(20, 4)
_ONE = Decimal(1)
# Wide enough that no product or quotient below is ever rounded before the final quantize.
_CONTEXT = decimal.Context(prec=80, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Buckets:
    """Disjoint token counts of one call: every provider token is in exactly one bucket."""

    uncached_input: int
    cached_input: int
    cache_write: int
    visible_output: int
    reasoning: int

    @property
    def input_total(self) -> int:
        return self.uncached_input + self.cached_input + self.cache_write

    @property
    def output_total(self) -> int:
        return self.visible_output + self.reasoning

    @property
    def total(self) -> int:
        return self.input_total + self.output_total


@dataclass(frozen=True)
class Prices:
    """USD per 1M tokens for each bucket (defaults already applied: cached and cache-write
    default to input, reasoning to output)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    reasoning: Decimal


@dataclass(frozen=True)
class Charge:
    """What one call costs: USD (10 places), OE tokens (4 places), integer micro-credits."""

    cost_usd: Decimal
    oe_tokens: Decimal
    credits_micro: int


def _non_negative(value: int | None) -> int:
    return max(0, int(value or 0))


def buckets_from_usage(
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> Buckets:
    """Split an OpenAI-compatible `usage` block into disjoint buckets.

    `prompt_tokens` and `completion_tokens` are the provider's totals; cached, cache-write and
    reasoning counts are *parts* of them. Missing details are 0. A detail larger than what is
    left of its total is clamped, so the buckets always add up to the totals exactly and no
    token is billed twice."""
    prompt = _non_negative(prompt_tokens)
    completion = _non_negative(completion_tokens)
    cached = min(_non_negative(cached_tokens), prompt)
    cache_write = min(_non_negative(cache_write_tokens), prompt - cached)
    reasoning = min(_non_negative(reasoning_tokens), completion)
    return Buckets(
        uncached_input=prompt - cached - cache_write,
        cached_input=cached,
        cache_write=cache_write,
        visible_output=completion - reasoning,
        reasoning=reasoning,
    )


def _weighted_sum(buckets: Buckets, prices: Prices) -> Decimal:
    """Σ n_b * p_b (USD * 1M), exact."""
    return _CONTEXT.add(
        _CONTEXT.add(
            _CONTEXT.add(
                _CONTEXT.multiply(Decimal(buckets.uncached_input), prices.input),
                _CONTEXT.multiply(Decimal(buckets.cached_input), prices.cached_input),
            ),
            _CONTEXT.multiply(Decimal(buckets.cache_write), prices.cache_write),
        ),
        _CONTEXT.add(
            _CONTEXT.multiply(Decimal(buckets.visible_output), prices.output),
            _CONTEXT.multiply(Decimal(buckets.reasoning), prices.reasoning),
        ),
    )


def _credits_micro(cost_usd: Decimal, *, markup: Decimal, credits_per_usd: Decimal) -> Decimal:
    """cost * markup * credits_per_usd * 1e6, exact (not yet rounded)."""
    return _CONTEXT.multiply(
        _CONTEXT.multiply(_CONTEXT.multiply(cost_usd, markup), credits_per_usd),
        Decimal(MICRO_PER_CREDIT),
    )


def charge(
    buckets: Buckets, prices: Prices, *, markup: Decimal, credits_per_usd: Decimal
) -> Charge:
    """Price one call by OE formula v1.

    OE tokens and credits are derived from the exact cost; only the stored `cost_usd` is
    rounded (half-up to 10 places, which is exact for prices with up to 4 decimal places)."""
    weighted = _weighted_sum(buckets, prices)
    cost = _CONTEXT.divide(weighted, TOKENS_PER_PRICE_UNIT)
    # OE expresses the call in the model's output tokens; a free-output model has no such
    # unit, so its OE is the plain token count.
    oe = _CONTEXT.divide(weighted, prices.output) if prices.output > 0 else Decimal(buckets.total)
    credits = _credits_micro(cost, markup=markup, credits_per_usd=credits_per_usd)
    return Charge(
        cost_usd=cost.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP, context=_CONTEXT),
        oe_tokens=oe.quantize(OE_QUANTUM, rounding=ROUND_HALF_UP, context=_CONTEXT),
        credits_micro=int(credits.quantize(_ONE, rounding=ROUND_HALF_UP, context=_CONTEXT)),
    )


def reservation_micro(
    *,
    estimated_input_tokens: int,
    output_reserve: int,
    prices: Prices,
    markup: Decimal,
    credits_per_usd: Decimal,
) -> int:
    """The worst case of a call, in micro-credits, rounded up (a reservation must cover it):
    the estimated input plus 10 % at the higher of the input and cache-write prices, plus the
    output reserve at the higher of the output and reasoning prices."""
    input_tokens = _CONTEXT.multiply(
        Decimal(_non_negative(estimated_input_tokens)), RESERVATION_INPUT_MARGIN
    )
    weighted = _CONTEXT.add(
        _CONTEXT.multiply(input_tokens, max(prices.input, prices.cache_write)),
        _CONTEXT.multiply(
            Decimal(_non_negative(output_reserve)), max(prices.output, prices.reasoning)
        ),
    )
    cost = _CONTEXT.divide(weighted, TOKENS_PER_PRICE_UNIT)
    credits = _credits_micro(cost, markup=markup, credits_per_usd=credits_per_usd)
    return int(credits.quantize(_ONE, rounding=ROUND_CEILING, context=_CONTEXT))
