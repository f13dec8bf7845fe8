"""Pricing versions: validating prices, publishing and activating versions, and repricing past
call events under a version.

A published version is never edited (a new one is published instead), and it never applies to
calls that started before its `effective_from`: every event stays priced by the version in force
when its call started. It is published at least `PRICING_PUBLISH_LEAD_SECONDS` before it takes
effect, so every process's price table (`usage.selectors.prices`) knows it by then. Repricing
changes what an event has cost its user only through `adjustment` ledger entries; the event rows
never change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, QuerySet, Sum
from django.utils import timezone

from pantheon.db import pk_batches
from usage import metering
from usage.models import (
    PRICE_DECIMAL_PLACES,
    LedgerEntry,
    LedgerKind,
    LlmCallEvent,
    ModelPrice,
    PricingStatus,
    PricingVersion,
)
from usage.selectors.prices import PricedModel, prices_of
from usage.services.errors import PricingRefused
from usage.services.ledger import credits_adjust

PRICE_FIELDS = ("input", "output", "cached_input", "cache_write", "reasoning")
_PRICE_MAX = Decimal("99999999.9999")  # numeric(12, 4)

PriceTable = dict[str, dict[str, Decimal | None]]


# --- validation --------------------------------------------------------------------------------


def _validate_price(model_id: str, field: str, value: Any) -> Decimal | None:
    if value is None:
        if field in ("input", "output"):
            raise PricingRefused(
                f"{model_id}: the {field} price is required.",
                details={"prices": {model_id: {field: ["This field is required."]}}},
            )
        return None
    if not isinstance(value, Decimal) or not value.is_finite():
        raise PricingRefused(
            f"{model_id}: the {field} price must be a decimal number.",
            details={"prices": {model_id: {field: ["Must be a decimal number."]}}},
        )
    if value < 0 or value > _PRICE_MAX:
        raise PricingRefused(
            f"{model_id}: the {field} price is out of range.",
            details={"prices": {model_id: {field: [f"Must be between 0 and {_PRICE_MAX}."]}}},
        )
    if value != value.quantize(Decimal(1).scaleb(-PRICE_DECIMAL_PLACES)):
        raise PricingRefused(
            f"{model_id}: the {field} price has more than {PRICE_DECIMAL_PLACES} decimals.",
            details={
                "prices": {model_id: {field: [f"At most {PRICE_DECIMAL_PLACES} decimal places."]}}
            },
        )
    return value


def _clean_prices(prices: Mapping[str, Mapping[str, Decimal | None]]) -> PriceTable:
    if not prices:
        raise PricingRefused(
            "A pricing version needs at least one model price.",
            details={"prices": ["At least one model is required."]},
        )
    cleaned: PriceTable = {}
    for model_id, fields in prices.items():
        unknown = set(fields) - set(PRICE_FIELDS)
        if not model_id or unknown:
            raise PricingRefused(
                f"{model_id or '(empty)'}: unknown price fields {sorted(unknown)}.",
                details={"prices": {model_id: [f"Allowed fields: {', '.join(PRICE_FIELDS)}."]}},
            )
        cleaned[model_id] = {f: _validate_price(model_id, f, fields.get(f)) for f in PRICE_FIELDS}
    return cleaned


def _clean_label(label: str) -> str:
    label = (label or "").strip()
    if not label or len(label) > 50:
        raise PricingRefused(
            "A pricing version needs a label of 1 to 50 characters.",
            details={"label": ["1 to 50 characters."]},
        )
    return label


def _validate_rates(*, credits_per_usd: Decimal, markup: Decimal) -> None:
    for name, value in (("credits_per_usd", credits_per_usd), ("markup", markup)):
        if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
            raise PricingRefused(
                f"{name} must be a positive decimal number.",
                details={name: ["Must be a positive decimal number."]},
            )
        if value != value.quantize(Decimal("0.0001")) or value >= Decimal("1E10"):
            raise PricingRefused(
                f"{name} has too many digits.",
                details={name: ["At most 4 decimal places."]},
            )


def _check_publishable(*, label: str, effective_from: datetime, now: datetime) -> None:
    if timezone.is_naive(effective_from):
        raise PricingRefused(
            "effective_from must carry a time zone.",
            details={"effective_from": ["Give a time zone, e.g. 2026-02-01T00:00:00Z."]},
        )
    lead = settings.PRICING_PUBLISH_LEAD_SECONDS
    earliest = now + timedelta(seconds=lead)
    if effective_from < earliest:
        # Every process reloads its price table within PRICING_CACHE_SECONDS, less than the
        # lead: each one knows the version before its first call is priced by it.
        raise PricingRefused(
            f"{label}: effective_from must be at least {lead} seconds ahead "
            f"(PRICING_PUBLISH_LEAD_SECONDS), not before {earliest.isoformat()}: published "
            "prices never apply to calls that already started, and every server process must "
            "know them before they take effect.",
            details={"effective_from": [f"Must not be before {earliest.isoformat()}."]},
        )
    latest = (
        PricingVersion.objects.exclude(status=PricingStatus.DRAFT)
        .order_by("-effective_from")
        .first()
    )
    if latest is not None and effective_from <= latest.effective_from:
        raise PricingRefused(
            f"{label}: effective_from must be after the latest published version "
            f"({latest.label}, {latest.effective_from.isoformat()}).",
            details={"effective_from": [f"Must be after {latest.effective_from.isoformat()}."]},
        )


# --- publishing and activating -----------------------------------------------------------------


@dataclass(frozen=True)
class PublishResult:
    """What `pricing_version_publish` did: `created`, `activated` (a draft) or `unchanged`."""

    version: PricingVersion
    outcome: str


def _lock_versions() -> None:
    """One publisher at a time: the lock on every version makes "after the latest published
    version" hold until the transaction ends."""
    list(PricingVersion.objects.select_for_update(no_key=True).order_by("pk"))


@dataclass(frozen=True)
class _Content:
    """What a pricing version states, and what publishing may never change once it is
    published."""

    effective_from: datetime
    credits_per_usd: Decimal
    markup: Decimal
    prices: PriceTable

    def matches(self, version: PricingVersion) -> bool:
        # The prices are read only when everything else matches.
        return (
            version.effective_from == self.effective_from
            and version.credits_per_usd == self.credits_per_usd
            and version.markup == self.markup
            and {p.model_id: {f: getattr(p, f) for f in PRICE_FIELDS} for p in version.prices.all()}
            == self.prices
        )


def _draft_write(draft: PricingVersion | None, *, label: str, content: _Content) -> PricingVersion:
    """A new draft, or `draft` changed to `content`, holding exactly its prices."""
    if draft is None:
        draft = PricingVersion.objects.create(
            label=label,
            effective_from=content.effective_from,
            credits_per_usd=content.credits_per_usd,
            markup=content.markup,
            status=PricingStatus.DRAFT,
        )
    else:
        draft.effective_from = content.effective_from
        draft.credits_per_usd = content.credits_per_usd
        draft.markup = content.markup
        draft.save(update_fields=["effective_from", "credits_per_usd", "markup"])
        draft.prices.all().delete()
    ModelPrice.objects.bulk_create(
        ModelPrice(version=draft, model_id=model_id, **fields)
        for model_id, fields in content.prices.items()
    )
    return draft


def _activate(version: PricingVersion) -> None:
    PricingVersion.objects.filter(
        status=PricingStatus.ACTIVE, effective_from__lt=version.effective_from
    ).update(status=PricingStatus.RETIRED)
    version.status = PricingStatus.ACTIVE
    version.save(update_fields=["status"])


def pricing_version_publish(
    *,
    label: str,
    effective_from: datetime,
    credits_per_usd: Decimal,
    markup: Decimal,
    prices: Mapping[str, Mapping[str, Decimal | None]],
    now: datetime | None = None,
) -> PublishResult:
    """Publish a new active pricing version (or a draft of the same label, replacing its
    prices). Publishing exactly what is already published is a no-op (`unchanged`); changing
    a published version is refused — publish a new label instead. `effective_from` must be at
    least `PRICING_PUBLISH_LEAD_SECONDS` ahead and follow every published version. Earlier
    active versions become `retired` (they still price the calls that started while they were
    in force)."""
    label = _clean_label(label)
    _validate_rates(credits_per_usd=credits_per_usd, markup=markup)
    content = _Content(
        effective_from=effective_from,
        credits_per_usd=credits_per_usd,
        markup=markup,
        prices=_clean_prices(prices),
    )
    with transaction.atomic():
        _lock_versions()
        existing = PricingVersion.objects.filter(label=label).first()
        if existing is not None and existing.is_published:
            if content.matches(existing):
                return PublishResult(version=existing, outcome="unchanged")
            raise PricingRefused(
                f"Pricing version {label!r} is already published ({existing.status}) and is "
                "never changed; publish a new version with another label.",
                details={"label": ["A published version with this label exists."]},
            )
        # The lead counts from when the lock is held (another publisher may have made us
        # wait), so the version is committed well before any process must know it.
        _check_publishable(label=label, effective_from=effective_from, now=now or timezone.now())
        version = _draft_write(existing, label=label, content=content)
        _activate(version)
    return PublishResult(version=version, outcome="created" if existing is None else "activated")


def pricing_version_activate(*, version: PricingVersion, now: datetime | None = None) -> None:
    """Publish a draft prepared in the admin, under the same rules as `pricing_version_publish`
    (it needs prices, and an effective_from at least `PRICING_PUBLISH_LEAD_SECONDS` ahead and
    after every published one)."""
    with transaction.atomic():
        _lock_versions()
        version.refresh_from_db()
        if version.is_published:
            raise PricingRefused(
                f"Pricing version {version.label!r} is already published.",
                details={"status": [version.status]},
            )
        if not version.prices.exists():
            raise PricingRefused(
                f"Pricing version {version.label!r} has no prices.",
                details={"prices": ["At least one model is required."]},
            )
        _check_publishable(
            label=version.label, effective_from=version.effective_from, now=now or timezone.now()
        )
        _activate(version)


def pricing_version_ensure_editable(*, version: PricingVersion) -> None:
    """Refuse any change to a published version (the admin and services call this)."""
    if version.pk is not None:
        stored = PricingVersion.objects.filter(pk=version.pk).values_list("status", flat=True)
        if stored and stored[0] != PricingStatus.DRAFT:
            raise PricingRefused(
                f"Pricing version {version.label!r} is published and is never changed.",
                details={"status": [stored[0]]},
            )


# --- repricing ---------------------------------------------------------------------------------


@dataclass
class RepriceResult:
    """Totals of a reprice run (micro-credits; a positive delta is charged to users)."""

    examined: int = 0
    adjusted: int = 0
    unpriced: int = 0
    charged_micro: int = 0
    refunded_micro: int = 0

    def count_adjustment(self, delta_micro: int) -> None:
        """One event's adjustment: a negative delta charges its user, a positive one refunds."""
        self.adjusted += 1
        if delta_micro < 0:
            self.charged_micro += -delta_micro
        else:
            self.refunded_micro += delta_micro


def _prices_under(version: PricingVersion) -> dict[str, PricedModel]:
    if not version.is_published:
        raise PricingRefused(
            f"Pricing version {version.label!r} is a draft; publish it before repricing.",
            details={"version": ["Must be published."]},
        )
    return {
        price.model_id: PricedModel(version=version, prices=prices_of(price))
        for price in version.prices.all()
    }


def _events_created(*, since: datetime | None, until: datetime | None) -> QuerySet[LlmCallEvent]:
    events = LlmCallEvent.objects.select_related("user")
    if since is not None:
        events = events.filter(created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    return events


def _ledger_of_events(ids: list[Any]) -> tuple[dict[Any, int], dict[Any, int]]:
    """For each event: the net of its ledger entries so far (burn, refunds, adjustments), and
    how many adjustments it already has. Two queries."""
    net = dict(
        LedgerEntry.objects.filter(event_id__in=ids)
        .values("event_id")
        .annotate(total=Sum("amount_micro"))
        .values_list("event_id", "total")
    )
    adjustments = dict(
        LedgerEntry.objects.filter(event_id__in=ids, kind=LedgerKind.ADJUSTMENT)
        .values("event_id")
        .annotate(n=Count("id"))
        .values_list("event_id", "n")
    )
    return net, adjustments


def _buckets_of(event: LlmCallEvent) -> metering.Buckets:
    return metering.Buckets(
        uncached_input=event.input_tokens - event.cached_input_tokens - event.cache_write_tokens,
        cached_input=event.cached_input_tokens,
        cache_write=event.cache_write_tokens,
        visible_output=event.output_tokens - event.reasoning_tokens,
        reasoning=event.reasoning_tokens,
    )


def events_reprice(
    *,
    version: PricingVersion,
    dry_run: bool = False,
    batch_size: int = 500,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> RepriceResult:
    """Bring what each call event has cost its user to what it costs under `version`, as
    `adjustment` ledger entries about the event (the event rows never change).

    Each event's net charge so far (its burn plus earlier adjustments and refunds) is compared
    with its cost under `version`; a difference becomes one adjustment whose idempotency key
    is derived from the event, the version and the number of earlier adjustments, so a re-run
    (or a concurrent run) writes nothing more. Events are walked by primary key in batches."""
    prices = _prices_under(version)
    result = RepriceResult()
    for batch in pk_batches(_events_created(since=since, until=until), batch_size=batch_size):
        net, adjustments = _ledger_of_events([event.pk for event in batch])
        for event in batch:
            result.examined += 1
            priced = prices.get(event.model)
            if priced is None:
                result.unpriced += 1
                continue
            delta = -priced.charge(_buckets_of(event)).credits_micro - net.get(event.pk, 0)
            if delta == 0:
                continue
            result.count_adjustment(delta)
            if not dry_run:
                credits_adjust(
                    user=event.user,
                    amount_micro=delta,
                    event=event,
                    note=f"reprice under {version.label}",
                    idempotency_key=(
                        f"reprice:{event.pk}:{version.label}:{adjustments.get(event.pk, 0)}"
                    ),
                )
        if progress is not None:
            progress(result.examined)
    return result
