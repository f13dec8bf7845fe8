"""The per-process price table (usage.selectors.prices): a version published ahead prices every
call that starts after its `effective_from`, in every process, and the table answers exactly as
the database does at every moment — no call is ever mispriced."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from testing.clock import ProcessClock
from usage.models import PricingVersion
from usage.selectors import model_price_at
from usage.services import PricingRefused, pricing_version_activate, pricing_version_publish
from usage.tests.builders import SONNET, SONNET_1000_500, record, reserve

pytestmark = pytest.mark.django_db

LEAD = timedelta(seconds=120)  # PRICING_PUBLISH_LEAD_SECONDS' default
# v2 doubles Sonnet 4's prices: 1,000 x 1.1 x $7.50 (cache write) + 500 x $30 = 23,250 / 1M USD
# x 100 credits.
SONNET_1000_500_V2 = 2_325_000
V2_WORKED_EXAMPLE_MICRO = 6_180_000  # the worked example at twice the prices


def publish_v2(effective_from: datetime, *, now: datetime | None = None) -> PricingVersion:
    return pricing_version_publish(
        label="v2",
        effective_from=effective_from,
        credits_per_usd=Decimal("100"),
        markup=Decimal("1"),
        prices={
            SONNET: {
                "input": Decimal("6"),
                "output": Decimal("30"),
                "cached_input": Decimal("0.6"),
                "cache_write": Decimal("7.5"),
            }
        },
        now=now,
    ).version


def pricing_queries(queries: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if "pricing_versions" in q["sql"] or "model_prices" in q["sql"]
    ]


# --- publishing ahead ----------------------------------------------------------------------------


def test_a_version_inside_the_lead_time_is_refused(process_clock: ProcessClock) -> None:
    now = timezone.now()
    with pytest.raises(PricingRefused) as caught:
        publish_v2(now + LEAD - timedelta(microseconds=1))
    assert "PRICING_PUBLISH_LEAD_SECONDS" in caught.value.message
    assert "effective_from" in caught.value.details
    assert not PricingVersion.objects.filter(label="v2").exists()

    assert publish_v2(now + LEAD).status == "active"


def test_a_draft_is_not_activated_inside_the_lead_time(process_clock: ProcessClock) -> None:
    """The admin's "publish the selected drafts" action goes through this service."""
    draft = PricingVersion.objects.create(
        label="v2",
        effective_from=timezone.now() + timedelta(seconds=60),
        credits_per_usd=Decimal("100"),
        markup=Decimal("1"),
    )
    draft.prices.create(model_id=SONNET, input=Decimal("6"), output=Decimal("30"))
    with pytest.raises(PricingRefused, match="at least 120 seconds ahead"):
        pricing_version_activate(version=draft)

    process_clock.advance(-61)  # the same draft, published a minute earlier, is in time
    pricing_version_activate(version=draft)
    draft.refresh_from_db()
    assert draft.status == "active"


def test_without_a_price_cache_no_lead_is_needed(
    settings: Any, process_clock: ProcessClock
) -> None:
    settings.PRICING_CACHE_SECONDS = 0
    settings.PRICING_PUBLISH_LEAD_SECONDS = 0
    assert model_price_at(SONNET).version.label == "v1"
    v2 = publish_v2(timezone.now())
    assert model_price_at(SONNET).version == v2  # in force at once, read at once


# --- the table in force --------------------------------------------------------------------------


def test_a_version_published_ahead_prices_every_call_that_starts_after_it(
    funded_user: Any, process_clock: ProcessClock
) -> None:
    assert model_price_at(SONNET).version.label == "v1"  # this process loads its table: v1 only
    v2 = publish_v2(timezone.now() + LEAD)

    # The last moment of v1, after the table was reloaded (it is older than 60 s by now).
    process_clock.advance((LEAD - timedelta(microseconds=1)).total_seconds())
    model_price_at(SONNET)
    with CaptureQueriesContext(connection) as queries:
        before = reserve(funded_user)
        event_before = record(funded_user, started_at=timezone.now())
    assert before.amount_micro == SONNET_1000_500
    assert event_before.pricing_version.label == "v1"

    process_clock.advance(0.000001)  # v2's effective_from
    with CaptureQueriesContext(connection) as more:
        after = reserve(funded_user)
        event_after = record(funded_user, started_at=timezone.now())
    assert after.amount_micro == SONNET_1000_500_V2
    assert event_after.pricing_version == v2
    assert event_after.credits_burned == V2_WORKED_EXAMPLE_MICRO
    assert event_after.price_snapshot["version"] == "v2"
    # Both sides of the boundary were priced from the process's table, not the database.
    assert pricing_queries(queries) == pricing_queries(more) == []


def test_a_process_that_loaded_before_the_publication_still_prices_correctly(
    process_clock: ProcessClock,
) -> None:
    """Each process reloads within 60 s; v2 starts 120 s after its publication, so a table
    loaded just before the publication is replaced before v2 takes effect."""
    model_price_at(SONNET)
    process_clock.advance(59.9)  # the table is about to expire
    v2 = publish_v2(timezone.now() + LEAD)
    stale_until = timezone.now() + timedelta(seconds=0.1)
    assert model_price_at(SONNET).version.label == "v1"
    process_clock.advance(0.1)
    assert stale_until < v2.effective_from
    process_clock.advance((v2.effective_from - timezone.now()).total_seconds())
    assert model_price_at(SONNET).version == v2


def test_the_table_answers_as_the_database_at_every_moment(
    settings: Any, process_clock: ProcessClock
) -> None:
    """Whatever the table's age, and for past moments too (repricing, a backfill): the answer
    with the cache is the answer without it."""

    def answers(at: datetime) -> tuple[Any, Any]:
        cached = model_price_at(SONNET, at)
        settings.PRICING_CACHE_SECONDS = 0
        database = model_price_at(SONNET, at)
        settings.PRICING_CACHE_SECONDS = 60
        return (
            cached and (cached.version.pk, cached.prices),
            database and (database.version.pk, database.prices),
        )

    start = timezone.now()
    model_price_at(SONNET)
    v1 = PricingVersion.objects.get(label="v1")
    v2 = publish_v2(start + LEAD)
    moments = [v1.effective_from - timedelta(days=1), v1.effective_from, start]
    for _ in range(40):  # 280 s in 7 s steps: across v2's start and several reloads
        now = timezone.now()
        for at in (*moments, now, now - timedelta(seconds=30), v2.effective_from):
            cached, database = answers(at)
            assert cached == database, (at, now)
        process_clock.advance(7)
    assert model_price_at(SONNET).version == v2
