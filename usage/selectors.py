"""Reads for usage: prices in force, credit figures, usage summaries, ledger verification.

Units outside the database: credits are decimal strings with 6 places (`"3.090000"`), USD are
decimal strings (`"0.15"`), OE tokens decimal strings with 4 places.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Aggregate, Count, F, FloatField, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from usage.metering import MICRO_PER_CREDIT, Prices
from usage.models import (
    CallStatus,
    CreditAccount,
    LedgerEntry,
    LedgerKind,
    LlmCallEvent,
    ModelPrice,
    PricingStatus,
    PricingVersion,
    Reservation,
    ReservationStatus,
)

_CREDIT_QUANTUM = Decimal("0.000001")
_CENT = Decimal("0.01")
_ZERO_OE = Decimal("0.0000")

# --- formatting --------------------------------------------------------------------------------


def format_credits(micro: int) -> str:
    """Integer micro-credits as a credit string with 6 places: 3090000 → "3.090000"."""
    return str((Decimal(int(micro)) / MICRO_PER_CREDIT).quantize(_CREDIT_QUANTUM))


def format_usd(amount: Decimal) -> str:
    """USD without trailing zeros but with at least cents: 0.1500 → "0.15", 0.0750 → "0.075",
    10 → "10.00", 0.0000001500 → "0.00000015". Exact: only zeros are dropped."""
    normalized = amount.normalize()
    if normalized.as_tuple().exponent > -2:  # type: ignore[operator]
        normalized = normalized.quantize(_CENT)
    return f"{normalized:f}"


# --- prices ------------------------------------------------------------------------------------


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


# --- credits -----------------------------------------------------------------------------------


def credits_for_user(user: Any) -> dict[str, str]:
    """`{"balance", "reserved", "available"}` as credit strings; zeros for a new user."""
    account = (
        CreditAccount.objects.filter(user_id=user.pk)
        .only("balance_micro", "reserved_micro")
        .first()
    )
    balance = account.balance_micro if account else 0
    reserved = account.reserved_micro if account else 0
    return {
        "balance": format_credits(balance),
        "reserved": format_credits(reserved),
        "available": format_credits(balance - reserved),
    }


def events_for_user(user: Any) -> QuerySet[LlmCallEvent]:
    """The user's call events, newest first, with their pricing version."""
    return (
        LlmCallEvent.objects.filter(user_id=user.pk)
        .select_related("pricing_version")
        .order_by("-created_at", "-id")
    )


def ledger_for_user(user: Any) -> QuerySet[LedgerEntry]:
    """The user's ledger entries, newest first."""
    return LedgerEntry.objects.filter(account__user_id=user.pk).order_by("-created_at", "-id")


def day_start(day: date) -> datetime:
    """The first instant of a UTC day."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def day_end(day: date) -> datetime | None:
    """The first instant after a UTC day (None after the last representable day)."""
    return None if day == date.max else day_start(day + timedelta(days=1))


def events_between(
    queryset: QuerySet[LlmCallEvent], *, date_from: date | None, date_to: date | None
) -> QuerySet[LlmCallEvent]:
    """Events created on the given UTC days (both inclusive), as a half-open range on
    `created_at` so the (user, created_at) index serves it."""
    if date_from is not None:
        queryset = queryset.filter(created_at__gte=day_start(date_from))
    end = day_end(date_to) if date_to is not None else None
    if end is not None:
        queryset = queryset.filter(created_at__lt=end)
    return queryset


def usage_summary(*, user: Any, date_from: date, date_to: date) -> dict[str, Any]:
    """Credits now, plus the user's calls between two dates (inclusive, UTC days) by day (every
    day of the range, zeros included) and by model (models with calls only)."""
    events = events_between(
        LlmCallEvent.objects.filter(user_id=user.pk), date_from=date_from, date_to=date_to
    )
    totals = {
        "credits": Coalesce(Sum("credits_burned"), 0),
        "oe": Coalesce(Sum("oe_tokens"), _ZERO_OE),
        "input_tokens": Coalesce(Sum("input_tokens"), 0),
        "output_tokens": Coalesce(Sum("output_tokens"), 0),
        "calls": Count("id"),
    }
    by_day_rows = {
        row["day"]: row
        for row in events.annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(**totals)
        .order_by("day")
    }
    by_model_rows = events.values("model").annotate(**totals).order_by("-credits", "model")

    def render(row: dict[str, Any] | None) -> dict[str, Any]:
        if row is None:
            return {
                "credits": format_credits(0),
                "oe_tokens": str(_ZERO_OE),
                "input_tokens": 0,
                "output_tokens": 0,
                "calls": 0,
            }
        return {
            "credits": format_credits(row["credits"]),
            "oe_tokens": str(Decimal(row["oe"]).quantize(_ZERO_OE)),
            "input_tokens": row["input_tokens"],
            "output_tokens": row["output_tokens"],
            "calls": row["calls"],
        }

    days = (date_to - date_from).days + 1
    by_day = [
        {"date": day.isoformat(), **render(by_day_rows.get(day))}
        for day in (date_from + timedelta(days=n) for n in range(days))
    ]
    return {
        "credits": credits_for_user(user),
        "by_day": by_day,
        "by_model": [{"model": row["model"], **render(row)} for row in by_model_rows],
    }


# --- ledger verification -----------------------------------------------------------------------


def _pk_batches(queryset: QuerySet[Any], batch_size: int) -> Iterator[list[Any]]:
    """Rows in primary-key order, one keyset page at a time (never OFFSET)."""
    last_pk = None
    while True:
        page = queryset.order_by("pk")
        if last_pk is not None:
            page = page.filter(pk__gt=last_pk)
        rows = list(page[:batch_size])
        if not rows:
            return
        yield rows
        last_pk = rows[-1].pk


def ledger_problems(
    *,
    now: datetime | None = None,
    expiry_margin: timedelta,
    batch_size: int = 1000,
    progress: Callable[[str], None] | None = None,
) -> Iterator[str]:
    """Every inconsistency between accounts, ledger entries, call events and reservations, as
    one human-readable line each. Nothing yielded means the ledger is consistent. Rows are
    walked in primary-key batches; `progress` hears about each batch."""
    now = now or timezone.now()
    report = progress or (lambda message: None)
    checked = 0
    accounts = CreditAccount.objects.select_related("user").annotate(
        entries_total=Coalesce(Sum("entries__amount_micro"), 0)
    )
    for batch in _pk_batches(accounts, batch_size):
        ids = [account.pk for account in batch]
        active = dict(
            Reservation.objects.filter(account_id__in=ids, status=ReservationStatus.ACTIVE)
            .values("account_id")
            .annotate(total=Sum("amount_micro"))
            .values_list("account_id", "total")
        )
        for account in batch:
            if account.balance_micro != account.entries_total:
                yield (
                    f"account {account.pk} ({account.user.email}): balance "
                    f"{format_credits(account.balance_micro)} != sum of its ledger entries "
                    f"{format_credits(account.entries_total)}"
                )
            if account.reserved_micro != active.get(account.pk, 0):
                yield (
                    f"account {account.pk} ({account.user.email}): reserved "
                    f"{format_credits(account.reserved_micro)} != sum of its active "
                    f"reservations {format_credits(active.get(account.pk, 0))}"
                )
        checked += len(batch)
        report(f"{checked} accounts checked")

    # Every billed call has exactly one burn of exactly its credits.
    billed = LlmCallEvent.objects.filter(credits_burned__gt=0).only("id", "credits_burned")
    checked = 0
    for batch in _pk_batches(billed, batch_size):
        burns: dict[Any, list[int]] = {}
        for event_id, amount in LedgerEntry.objects.filter(
            kind=LedgerKind.BURN, event_id__in=[event.pk for event in batch]
        ).values_list("event_id", "amount_micro"):
            burns.setdefault(event_id, []).append(amount)
        for event in batch:
            found = burns.get(event.pk, [])
            if len(found) != 1:
                yield f"event {event.pk}: credits_burned > 0 but {len(found)} burn entries"
            elif found[0] != -event.credits_burned:
                yield (
                    f"event {event.pk}: burned {format_credits(-found[0])} but the event "
                    f"charged {format_credits(event.credits_burned)}"
                )
        checked += len(batch)
        report(f"{checked} billed call events checked")

    # Burns that do not belong to their event: wrong amount for a free call, or another user.
    stray = LedgerEntry.objects.filter(kind=LedgerKind.BURN).filter(
        Q(event__credits_burned=0) | ~Q(account__user_id=F("event__user_id"))
    )
    for entry_id, event_id in stray.values_list("id", "event_id").order_by("id"):
        yield f"burn {entry_id}: does not match its event {event_id} (user or amount)"

    overdue = Reservation.objects.filter(
        status=ReservationStatus.ACTIVE, expires_at__lt=now - expiry_margin
    )
    for reservation_id, expires_at in overdue.values_list("id", "expires_at").order_by("id"):
        yield (
            f"reservation {reservation_id}: still active, expired at {expires_at.isoformat()} "
            f"(more than {expiry_margin} ago; is the expiry sweep running?)"
        )


# --- staff dashboard -------------------------------------------------------------------------

# Statuses that count as failures in the error rate (a cancelled call was the caller's choice).
_FAILED_STATUSES = (CallStatus.ERROR, CallStatus.TIMEOUT)
# Without PostgreSQL's percentile_cont the percentiles are computed in Python over at most this
# many latencies per query, so the dashboard stays bounded on any database.
PERCENTILE_PYTHON_ROW_LIMIT = 200_000
DASHBOARD_MAX_DAYS = 366


class _PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate `percentile_cont(f) WITHIN GROUP (ORDER BY x)`."""

    function = "PERCENTILE_CONT"
    name = "PercentileCont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, *, fraction: float, **extra: Any) -> None:
        # A literal we format ourselves (never user input): the SQL needs a constant here.
        super().__init__(expression, fraction=f"{float(fraction):.6f}", **extra)


def percentile_cont(sorted_values: list[int], fraction: float) -> float | None:
    """The continuous percentile of ascending values, with the same linear interpolation as
    PostgreSQL's `percentile_cont`: None for no values."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    weight = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * weight


@dataclass(frozen=True)
class DayUsage:
    day: date
    credits_micro: int
    calls: int


@dataclass(frozen=True)
class ModelUsage:
    """One model's calls in a range: volume, spend, failures and answer latency (ok calls)."""

    model: str
    calls: int
    failed: int
    credits_micro: int
    oe_tokens: Decimal
    input_tokens: int
    output_tokens: int
    p50_latency_ms: float | None
    p95_latency_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.failed / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class UserUsage:
    user_id: Any
    email: str
    calls: int
    credits_micro: int


@dataclass(frozen=True)
class UsageDashboard:
    """Everything the staff usage dashboard shows for a range of UTC days (both inclusive)."""

    date_from: date
    date_to: date
    by_day: list[DayUsage]
    by_model: list[ModelUsage]
    top_users: list[UserUsage]

    @property
    def total_credits_micro(self) -> int:
        return sum(day.credits_micro for day in self.by_day)

    @property
    def total_calls(self) -> int:
        return sum(day.calls for day in self.by_day)

    @property
    def total_failed(self) -> int:
        return sum(model.failed for model in self.by_model)


def _latency_percentiles(
    events: QuerySet[LlmCallEvent], fractions: tuple[float, ...]
) -> dict[str, list[float | None]]:
    """Per model, the latency percentiles of successful calls: one query either way."""
    answered = events.filter(status=CallStatus.OK, latency_ms__isnull=False)
    if connection.vendor == "postgresql":
        rows = (
            answered.values("model")
            .annotate(
                **{
                    f"p{n}": _PercentileCont("latency_ms", fraction=fraction)
                    for n, fraction in enumerate(fractions)
                }
            )
            .order_by()
        )
        return {row["model"]: [row[f"p{n}"] for n in range(len(fractions))] for row in rows}
    latencies: dict[str, list[int]] = {}
    bounded = answered.order_by("model", "latency_ms").values_list("model", "latency_ms")
    for model, latency in bounded[:PERCENTILE_PYTHON_ROW_LIMIT]:
        latencies.setdefault(model, []).append(latency)
    return {
        model: [percentile_cont(values, fraction) for fraction in fractions]
        for model, values in latencies.items()
    }


def usage_dashboard(*, date_from: date, date_to: date, top_users: int = 10) -> UsageDashboard:
    """Every user's calls between two UTC days (both inclusive): credits burned per day (every
    day of the range, zeros included), per model (with error rate and p50/p95 latency of the
    successful calls), and the users who burned the most. A fixed number of queries (four)."""
    events = events_between(LlmCallEvent.objects.all(), date_from=date_from, date_to=date_to)
    per_day = {
        row["day"]: row
        for row in events.annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(credits=Coalesce(Sum("credits_burned"), 0), calls=Count("id"))
        .order_by("day")
    }
    days = (date_to - date_from).days + 1
    by_day = []
    for day in (date_from + timedelta(days=n) for n in range(days)):
        row = per_day.get(day)
        by_day.append(
            DayUsage(
                day=day,
                credits_micro=row["credits"] if row else 0,
                calls=row["calls"] if row else 0,
            )
        )

    percentiles = _latency_percentiles(events, (0.5, 0.95))
    by_model = [
        ModelUsage(
            model=row["model"],
            calls=row["calls"],
            failed=row["failed"],
            credits_micro=row["credits"],
            oe_tokens=Decimal(row["oe"]).quantize(_ZERO_OE),
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            p50_latency_ms=percentiles.get(row["model"], [None, None])[0],
            p95_latency_ms=percentiles.get(row["model"], [None, None])[1],
        )
        for row in events.values("model")
        .annotate(
            calls=Count("id"),
            failed=Count("id", filter=Q(status__in=_FAILED_STATUSES)),
            credits=Coalesce(Sum("credits_burned"), 0),
            oe=Coalesce(Sum("oe_tokens"), _ZERO_OE),
            input_tokens=Coalesce(Sum("input_tokens"), 0),
            output_tokens=Coalesce(Sum("output_tokens"), 0),
        )
        .order_by("-credits", "model")
    ]
    users = [
        UserUsage(
            user_id=row["user_id"],
            email=row["user__email"],
            calls=row["calls"],
            credits_micro=row["credits"],
        )
        for row in events.values("user_id", "user__email")
        .annotate(calls=Count("id"), credits=Coalesce(Sum("credits_burned"), 0))
        .order_by("-credits", "user__email")[:top_users]
    ]
    return UsageDashboard(
        date_from=date_from,
        date_to=date_to,
        by_day=by_day,
        by_model=by_model,
        top_users=users,
    )


def call_event_totals(queryset: QuerySet[LlmCallEvent]) -> dict[str, Any]:
    """Totals of a set of call events (e.g. an admin changelist's filtered set), one query:
    calls, micro-credits, OE tokens, input and output tokens."""
    totals = queryset.order_by().aggregate(
        calls=Count("id"),
        credits=Coalesce(Sum("credits_burned"), 0),
        oe=Coalesce(Sum("oe_tokens"), _ZERO_OE),
        input_tokens=Coalesce(Sum("input_tokens"), 0),
        output_tokens=Coalesce(Sum("output_tokens"), 0),
    )
    totals["oe"] = Decimal(totals["oe"]).quantize(_ZERO_OE)
    return totals


def ledger_totals(queryset: QuerySet[LedgerEntry]) -> dict[str, Any]:
    """Totals of a set of ledger entries, one query: entries, the net movement and the burned
    micro-credits, and the OE tokens and tokens of the calls behind the burns."""
    totals = queryset.order_by().aggregate(
        entries=Count("id"),
        net=Coalesce(Sum("amount_micro"), 0),
        burned=Coalesce(Sum("amount_micro", filter=Q(kind=LedgerKind.BURN)), 0),
        oe=Coalesce(Sum("event__oe_tokens"), _ZERO_OE),
        input_tokens=Coalesce(Sum("event__input_tokens"), 0),
        output_tokens=Coalesce(Sum("event__output_tokens"), 0),
    )
    totals["oe"] = Decimal(totals["oe"]).quantize(_ZERO_OE)
    return totals


def credit_account_totals(queryset: QuerySet[CreditAccount]) -> dict[str, int]:
    """Summed balance, reserved and available micro-credits of a set of accounts, one query."""
    totals = queryset.order_by().aggregate(
        accounts=Count("id"),
        balance=Coalesce(Sum("balance_micro"), 0),
        reserved=Coalesce(Sum("reserved_micro"), 0),
    )
    totals["available"] = totals["balance"] - totals["reserved"]
    return totals
