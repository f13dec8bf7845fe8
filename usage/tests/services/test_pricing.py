"""Publishing pricing versions (usage.services): published versions never change."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from usage.models import ModelPrice, PricingVersion
from usage.selectors import model_price_at
from usage.services import (
    PricingRefused,
    pricing_version_activate,
    pricing_version_ensure_editable,
    pricing_version_publish,
)
from usage.tests.builders import MINI

pytestmark = pytest.mark.django_db


def publish(**overrides):  # type: ignore[no-untyped-def]
    fields = {
        "label": "v2",
        "effective_from": timezone.now() + timedelta(days=1),
        "credits_per_usd": Decimal("100"),
        "markup": Decimal("1.5"),
        "prices": {MINI: {"input": Decimal("0.20"), "output": Decimal("0.80")}},
    }
    fields.update(overrides)
    return pricing_version_publish(**fields)


def test_publish_creates_an_active_version_and_retires_the_previous_one() -> None:
    result = publish()

    assert result.outcome == "created"
    assert result.version.status == "active"
    assert PricingVersion.objects.get(label="v1").status == "retired"
    price = ModelPrice.objects.get(version=result.version, model_id=MINI)
    assert (price.input, price.output) == (Decimal("0.20"), Decimal("0.80"))
    assert price.cached_input is None  # means: the input price
    priced = model_price_at(MINI, result.version.effective_from)
    assert priced is not None
    assert priced.prices.cached_input == Decimal("0.20")
    assert priced.prices.reasoning == Decimal("0.80")
    # Before it is in force, v1 still prices calls.
    assert model_price_at(MINI).version.label == "v1"


def test_publishing_the_same_version_again_changes_nothing() -> None:
    when = timezone.now() + timedelta(days=1)
    first = publish(effective_from=when)
    again = publish(effective_from=when)

    assert again.outcome == "unchanged"
    assert again.version.pk == first.version.pk
    assert PricingVersion.objects.filter(label="v2").count() == 1


@pytest.mark.parametrize(
    "change",
    [
        {"markup": Decimal("2")},
        {"credits_per_usd": Decimal("50")},
        {"prices": {MINI: {"input": Decimal("0.21"), "output": Decimal("0.80")}}},
    ],
)
def test_a_published_version_is_never_changed(change) -> None:  # type: ignore[no-untyped-def]
    when = timezone.now() + timedelta(days=1)
    publish(effective_from=when)

    with pytest.raises(PricingRefused):
        publish(effective_from=when, **change)

    version = PricingVersion.objects.get(label="v2")
    assert version.markup == Decimal("1.5")
    assert version.prices.get().input == Decimal("0.20")


def test_v1_itself_cannot_be_republished_differently() -> None:
    with pytest.raises(PricingRefused):
        publish(label="v1")


def test_effective_from_in_the_past_is_refused() -> None:
    with pytest.raises(PricingRefused) as caught:
        publish(effective_from=timezone.now() - timedelta(minutes=1))
    assert "effective_from" in caught.value.details


def test_effective_from_must_follow_every_published_version() -> None:
    publish(label="v2", effective_from=timezone.now() + timedelta(days=2))
    with pytest.raises(PricingRefused) as caught:
        publish(label="v3", effective_from=timezone.now() + timedelta(days=1))
    assert "effective_from" in caught.value.details


@pytest.mark.parametrize(
    "prices",
    [
        {},
        {MINI: {"input": Decimal("0.12345"), "output": Decimal("1")}},
        {MINI: {"input": Decimal("-1"), "output": Decimal("1")}},
        {MINI: {"input": Decimal("1")}},
        {MINI: {"input": Decimal("1"), "output": Decimal("1"), "surcharge": Decimal("1")}},
        {MINI: {"input": Decimal("NaN"), "output": Decimal("1")}},
    ],
)
def test_invalid_prices_are_refused(prices) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PricingRefused):
        publish(prices=prices)
    assert not PricingVersion.objects.filter(label="v2").exists()


@pytest.mark.parametrize(
    "fields",
    [
        {"markup": Decimal("0")},
        {"credits_per_usd": Decimal("-1")},
        {"credits_per_usd": Decimal("0.00001")},
        {"label": ""},
        {"label": "x" * 51},
    ],
)
def test_invalid_version_fields_are_refused(fields) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PricingRefused):
        publish(**fields)


def test_publishing_a_drafts_label_activates_it_with_the_given_prices() -> None:
    draft = PricingVersion.objects.create(
        label="v2",
        effective_from=timezone.now() + timedelta(days=5),
        credits_per_usd=Decimal("1"),
        markup=Decimal("1"),
    )
    draft.prices.create(model_id="old/model", input=Decimal("1"), output=Decimal("1"))

    result = publish()

    assert result.outcome == "activated"
    assert result.version.pk == draft.pk
    assert result.version.status == "active"
    assert list(result.version.prices.values_list("model_id", flat=True)) == [MINI]


def test_activating_a_draft_follows_the_publishing_rules() -> None:
    draft = PricingVersion.objects.create(
        label="v2",
        effective_from=timezone.now() + timedelta(days=1),
        credits_per_usd=Decimal("100"),
        markup=Decimal("1"),
    )
    with pytest.raises(PricingRefused):  # no prices yet
        pricing_version_activate(version=draft)
    draft.prices.create(model_id=MINI, input=Decimal("1"), output=Decimal("2"))

    pricing_version_activate(version=draft)

    draft.refresh_from_db()
    assert draft.status == "active"
    with pytest.raises(PricingRefused):
        pricing_version_activate(version=draft)
    with pytest.raises(PricingRefused):
        pricing_version_ensure_editable(version=draft)


def test_a_draft_is_editable() -> None:
    draft = PricingVersion.objects.create(
        label="v2",
        effective_from=timezone.now() + timedelta(days=1),
        credits_per_usd=Decimal("100"),
        markup=Decimal("1"),
    )
    pricing_version_ensure_editable(version=draft)  # does not raise
    assert draft.status == "draft"
