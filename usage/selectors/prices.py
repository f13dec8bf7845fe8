"""Prices: the version in force at a moment, a model's prices for one call, and the price list
shown to clients (USD as decimal strings, e.g. `"0.15"`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import QuerySet, Subquery
from django.utils import timezone

from usage import metering
from usage.metering import Buckets, Charge, Prices
from usage.models import ModelPrice, PricingStatus, PricingVersion

_CENT = Decimal("0.01")


def format_usd(amount: Decimal) -> str:
    """USD without trailing zeros but with at least cents: 0.1500 → "0.15", 0.0750 → "0.075",
    10 → "10.00", 0.0000001500 → "0.00000015". Exact: only zeros are dropped."""
    normalized = amount.normalize()
    if normalized.as_tuple().exponent > -2:  # type: ignore[operator]
        normalized = normalized.quantize(_CENT)
    return f"{normalized:f}"


@dataclass(frozen=True)
class PricedModel:
    """A model's prices as used for one call: the version, the effective per-bucket prices and
    the snapshot stored on the call event."""

    version: PricingVersion
    prices: Prices

    @property
    def snapshot(self) -> dict[str, str]:
        return {
            "version": self.version.label,
            "input": str(self.prices.input),
            "output": str(self.prices.output),
            "cached_input": str(self.prices.cached_input),
            "cache_write": str(self.prices.cache_write),
            "reasoning": str(self.prices.reasoning),
            "markup": str(self.version.markup),
            "credits_per_usd": str(self.version.credits_per_usd),
        }

    def charge(self, buckets: Buckets) -> Charge:
        """What a call with these token buckets costs at these prices and this version's markup
        and credit rate."""
        return metering.charge(
            buckets,
            self.prices,
            markup=self.version.markup,
            credits_per_usd=self.version.credits_per_usd,
        )


def prices_of(price: ModelPrice) -> Prices:
    """A price row with its defaults applied: cached input and cache write default to the input
    price, reasoning to the output price."""
    return Prices(
        input=price.input,
        output=price.output,
        cached_input=price.input if price.cached_input is None else price.cached_input,
        cache_write=price.input if price.cache_write is None else price.cache_write,
        reasoning=price.output if price.reasoning is None else price.reasoning,
    )


def _published_at(at: datetime) -> QuerySet[PricingVersion]:
    return PricingVersion.objects.filter(
        status__in=(PricingStatus.ACTIVE, PricingStatus.RETIRED), effective_from__lte=at
    ).order_by("-effective_from")


def pricing_version_in_force(at: datetime | None = None) -> PricingVersion | None:
    """The published version with the newest `effective_from` not after `at` (drafts never)."""
    return _published_at(at or timezone.now()).first()


def model_price_at(model_id: str, at: datetime | None = None) -> PricedModel | None:
    """How `model_id` is priced for a call that started at `at` (one query); None when the
    version in force has no price for it, or no version is in force."""
    in_force = _published_at(at or timezone.now()).values("pk")[:1]
    price = (
        ModelPrice.objects.select_related("version")
        .filter(version=Subquery(in_force), model_id=model_id)
        .first()
    )
    if price is None:
        return None
    return PricedModel(version=price.version, prices=prices_of(price))


def current_prices(model_ids: list[str]) -> dict[str, dict[str, str]]:
    """USD per 1M tokens by bucket for each priced model id, by the version in force now:
    `{"openai/gpt-4o-mini": {"input": "0.15", "output": "0.60", ...}}`. Unpriced ids are
    absent. One query for the version, one for the prices."""
    version = pricing_version_in_force()
    if version is None or not model_ids:
        return {}
    result: dict[str, dict[str, str]] = {}
    for price in ModelPrice.objects.filter(version=version, model_id__in=list(model_ids)):
        prices = prices_of(price)
        result[price.model_id] = {
            "input": format_usd(prices.input),
            "output": format_usd(prices.output),
            "cached_input": format_usd(prices.cached_input),
            "cache_write": format_usd(prices.cache_write),
            "reasoning": format_usd(prices.reasoning),
        }
    return result
