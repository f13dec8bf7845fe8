"""Prices: the version in force at a moment, a model's prices for one call, and the price list
shown to clients (USD as decimal strings, e.g. `"0.15"`).

A call's prices come from a per-process price table (`PriceTable`) reloaded at least every
`PRICING_CACHE_SECONDS`. It answers exactly as the database would because published versions
never change and a new one is accepted only `PRICING_PUBLISH_LEAD_SECONDS` (longer than the
cache interval) before it takes effect: a version the table has not loaded cannot be in force
before the table is reloaded. Moments outside what the table covers — before the version that
was in force when it was loaded (repricing, a backfill), or past its reload time — are read
from the database."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Q, QuerySet, Subquery
from django.utils import timezone

from pantheon.process_cache import ProcessValue
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
    """The published version with the newest `effective_from` not after `at` (drafts never).
    Read from the database: for publishing and staff tools, not for pricing calls."""
    return _published_at(at or timezone.now()).first()


# --- the per-process price table ---------------------------------------------------------------


@dataclass(frozen=True)
class PriceTable:
    """The published versions a process prices calls with: the one in force when the table was
    loaded and every later one, oldest first, each with its models' prices. Answers for the
    moments in `[first version's effective_from, valid_until)`; `valid_until` is the load time
    plus `PRICING_CACHE_SECONDS`, by when the table has been replaced.

    The versions are shared by every thread of the process: read them, never change them."""

    valid_until: datetime
    starts: tuple[datetime, ...]
    prices: tuple[dict[str, PricedModel], ...]

    def covers(self, at: datetime) -> bool:
        """Whether this table knows the version in force at `at`."""
        return at < self.valid_until and (not self.starts or at >= self.starts[0])

    def prices_at(self, at: datetime) -> dict[str, PricedModel]:
        """The prices of the version in force at `at` by model id, {} when no version is
        (`covers(at)` must hold)."""
        index = bisect_right(self.starts, at) - 1
        return self.prices[index] if index >= 0 else {}


def _price_table_load() -> PriceTable:
    """Two queries: the versions (the one in force now and every later one), their prices."""
    loaded_at = timezone.now()
    in_force = _published_at(loaded_at).values("pk")[:1]
    versions = list(
        PricingVersion.objects.filter(status__in=(PricingStatus.ACTIVE, PricingStatus.RETIRED))
        .filter(Q(effective_from__gt=loaded_at) | Q(pk=Subquery(in_force)))
        .order_by("effective_from")
    )
    by_version: dict[int, dict[str, PricedModel]] = {version.pk: {} for version in versions}
    version_by_pk = {version.pk: version for version in versions}
    for price in ModelPrice.objects.filter(version__in=versions):
        by_version[price.version_id][price.model_id] = PricedModel(
            version=version_by_pk[price.version_id], prices=prices_of(price)
        )
    return PriceTable(
        valid_until=loaded_at + timedelta(seconds=settings.PRICING_CACHE_SECONDS),
        starts=tuple(version.effective_from for version in versions),
        prices=tuple(by_version[version.pk] for version in versions),
    )


_price_table = ProcessValue(load=_price_table_load, seconds_setting="PRICING_CACHE_SECONDS")


def _cached_table(at: datetime) -> PriceTable | None:
    """The process's price table when it can answer for `at`; None when the cache is off or
    `at` lies outside what it holds."""
    if _price_table.seconds <= 0:
        return None
    table = _price_table.get()
    return table if table.covers(at) else None


def model_price_at(model_id: str, at: datetime | None = None) -> PricedModel | None:
    """How `model_id` is priced for a call that started at `at` (default now); None when the
    version in force has no price for it, or no version is in force. From the process's price
    table; one query when `at` lies outside it (see the module's docstring)."""
    at = at or timezone.now()
    table = _cached_table(at)
    if table is not None:
        return table.prices_at(at).get(model_id)
    in_force = _published_at(at).values("pk")[:1]
    price = (
        ModelPrice.objects.select_related("version")
        .filter(version=Subquery(in_force), model_id=model_id)
        .first()
    )
    if price is None:
        return None
    return PricedModel(version=price.version, prices=prices_of(price))


def _prices_in_force_now(model_ids: list[str]) -> dict[str, Prices]:
    now = timezone.now()
    table = _cached_table(now)
    if table is not None:
        in_force = table.prices_at(now)
        return {
            model_id: in_force[model_id].prices for model_id in model_ids if model_id in in_force
        }
    version = pricing_version_in_force(now)
    if version is None:
        return {}
    return {
        price.model_id: prices_of(price)
        for price in ModelPrice.objects.filter(version=version, model_id__in=model_ids)
    }


def current_prices(model_ids: list[str]) -> dict[str, dict[str, str]]:
    """USD per 1M tokens by bucket for each priced model id, by the version in force now:
    `{"openai/gpt-4o-mini": {"input": "0.15", "output": "0.60", ...}}`. Unpriced ids are
    absent. From the process's price table (two queries without it)."""
    if not model_ids:
        return {}
    return {
        model_id: {
            "input": format_usd(prices.input),
            "output": format_usd(prices.output),
            "cached_input": format_usd(prices.cached_input),
            "cache_write": format_usd(prices.cache_write),
            "reasoning": format_usd(prices.reasoning),
        }
        for model_id, prices in _prices_in_force_now(list(model_ids)).items()
    }
