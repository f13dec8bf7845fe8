"""Reads: USD formatting, prices in force, and the v1 price list (usage.selectors.prices)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.apps import apps

from usage.models import ModelPrice, PricingVersion
from usage.selectors import current_prices, format_usd, pricing_version_in_force


def catalog_ids() -> set[str]:
    """The model catalog as the llm app's data migration loaded it (read through the app
    registry: usage does not import llm)."""
    return set(apps.get_model("llm", "ModelConfig").objects.values_list("id", flat=True))


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        ("0.1500", "0.15"),
        ("0.0750", "0.075"),
        ("10.0000", "10.00"),
        ("2.5", "2.50"),
        ("0", "0.00"),
        ("0.0000001500", "0.00000015"),
        ("0.0309000000", "0.0309"),
    ],
)
def test_format_usd(amount: str, text: str) -> None:
    assert format_usd(Decimal(amount)) == text


@pytest.mark.django_db
def test_current_prices_apply_the_defaults() -> None:
    prices = current_prices(["openai/gpt-4o-mini", "anthropic/claude-sonnet-4", "no/such-model"])

    assert prices == {
        "openai/gpt-4o-mini": {
            "input": "0.15",
            "output": "0.60",
            "cached_input": "0.075",
            "cache_write": "0.15",
            "reasoning": "0.60",
        },
        "anthropic/claude-sonnet-4": {
            "input": "3.00",
            "output": "15.00",
            "cached_input": "0.30",
            "cache_write": "3.75",
            "reasoning": "15.00",
        },
    }


@pytest.mark.django_db
def test_current_prices_take_two_queries_then_none(django_assert_num_queries, settings) -> None:  # type: ignore[no-untyped-def]
    ids = sorted(catalog_ids())
    with django_assert_num_queries(2):  # the process's price table: versions, prices
        assert len(current_prices(ids)) == len(ids)
    with django_assert_num_queries(0):
        assert len(current_prices(ids)) == len(ids)
    settings.PRICING_CACHE_SECONDS = 0
    with django_assert_num_queries(2):  # without the cache: the version in force, its prices
        assert len(current_prices(ids)) == len(ids)


@pytest.mark.django_db
def test_v1_prices_every_catalog_model_above_zero() -> None:
    v1 = PricingVersion.objects.get(label="v1")
    assert v1.status == "active"
    assert v1.effective_from.isoformat() == "2026-01-01T00:00:00+00:00"
    assert (v1.credits_per_usd, v1.markup) == (Decimal("100"), Decimal("1"))
    assert pricing_version_in_force() == v1
    priced = {price.model_id: price for price in ModelPrice.objects.filter(version=v1)}
    assert len(catalog_ids()) == 14
    assert set(priced) == catalog_ids()
    for price in priced.values():
        assert price.input > 0
        assert price.output > 0
    assert (priced["openai/o3-mini"].input, priced["openai/o3-mini"].output) == (
        Decimal("1.10"),
        Decimal("4.40"),
    )
