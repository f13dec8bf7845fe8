"""The staff usage dashboard's figures over every user's calls in a range of UTC days: credits
per day, usage per model (error rate, p50/p95 latency), the top users and the calls refused (not
enough credits, or a spending limit reached), in a fixed number of queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Aggregate, Count, FloatField, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate

from usage.models import CallStatus, LlmCallEvent, Refusal, RefusalReason
from usage.selectors.events import ZERO_OE, day_end, day_start, days_between, events_between

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
class RefusalCounts:
    """Calls refused before they ran (their reservation was refused), by reason."""

    credits: int = 0  # not enough credits
    spending_limit: int = 0  # a spending limit reached


@dataclass(frozen=True)
class UsageDashboard:
    """Everything the staff usage dashboard shows for a range of UTC days (both inclusive)."""

    date_from: date
    date_to: date
    by_day: list[DayUsage]
    by_model: list[ModelUsage]
    top_users: list[UserUsage]
    refusals: RefusalCounts = RefusalCounts()

    @property
    def total_credits_micro(self) -> int:
        return sum(day.credits_micro for day in self.by_day)

    @property
    def total_calls(self) -> int:
        return sum(day.calls for day in self.by_day)

    @property
    def total_failed(self) -> int:
        return sum(model.failed for model in self.by_model)


def usage_dashboard(*, date_from: date, date_to: date, top_users: int = 10) -> UsageDashboard:
    """Every user's calls between two UTC days (both inclusive): credits burned per day (every
    day of the range, zeros included), per model (with error rate and p50/p95 latency of the
    successful calls), the users who burned the most, and the calls refused by reason. A fixed
    number of queries (five)."""
    events = events_between(LlmCallEvent.objects.all(), date_from=date_from, date_to=date_to)
    return UsageDashboard(
        date_from=date_from,
        date_to=date_to,
        by_day=_usage_by_day(events, date_from=date_from, date_to=date_to),
        by_model=_usage_by_model(events),
        top_users=_top_users(events, limit=top_users),
        refusals=refusal_counts(date_from=date_from, date_to=date_to),
    )


def refusal_counts(*, date_from: date, date_to: date) -> RefusalCounts:
    """The reservations refused between two UTC days (both inclusive), by reason: one aggregate
    query over `Refusal` rows, on the `created_at` index."""
    refusals = Refusal.objects.filter(created_at__gte=day_start(date_from))
    end = day_end(date_to)
    if end is not None:
        refusals = refusals.filter(created_at__lt=end)
    counts = refusals.aggregate(
        credits=Count("id", filter=Q(reason=RefusalReason.CREDITS)),
        spending_limit=Count("id", filter=Q(reason=RefusalReason.LIMIT)),
    )
    return RefusalCounts(credits=counts["credits"], spending_limit=counts["spending_limit"])


def _usage_by_day(
    events: QuerySet[LlmCallEvent], *, date_from: date, date_to: date
) -> list[DayUsage]:
    """Credits and calls for every day of the range (one query)."""
    per_day = {
        row["day"]: row
        for row in events.annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(credits=Coalesce(Sum("credits_burned"), 0), calls=Count("id"))
        .order_by("day")
    }
    return [
        DayUsage(
            day=day,
            credits_micro=per_day[day]["credits"] if day in per_day else 0,
            calls=per_day[day]["calls"] if day in per_day else 0,
        )
        for day in days_between(date_from, date_to)
    ]


def _usage_by_model(events: QuerySet[LlmCallEvent]) -> list[ModelUsage]:
    """Each model's figures, the most credits first (two queries: latencies, then totals)."""
    percentiles = _latency_percentiles(events, (0.5, 0.95))
    rows = (
        events.values("model")
        .annotate(
            calls=Count("id"),
            failed=Count("id", filter=Q(status__in=_FAILED_STATUSES)),
            credits=Coalesce(Sum("credits_burned"), 0),
            oe=Coalesce(Sum("oe_tokens"), ZERO_OE),
            input_tokens=Coalesce(Sum("input_tokens"), 0),
            output_tokens=Coalesce(Sum("output_tokens"), 0),
        )
        .order_by("-credits", "model")
    )
    return [
        ModelUsage(
            model=row["model"],
            calls=row["calls"],
            failed=row["failed"],
            credits_micro=row["credits"],
            oe_tokens=Decimal(row["oe"]).quantize(ZERO_OE),
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            p50_latency_ms=percentiles.get(row["model"], [None, None])[0],
            p95_latency_ms=percentiles.get(row["model"], [None, None])[1],
        )
        for row in rows
    ]


def _top_users(events: QuerySet[LlmCallEvent], *, limit: int) -> list[UserUsage]:
    """The users who burned the most credits (one query)."""
    return [
        UserUsage(
            user_id=row["user_id"],
            email=row["user__email"],
            calls=row["calls"],
            credits_micro=row["credits"],
        )
        for row in events.values("user_id", "user__email")
        .annotate(calls=Count("id"), credits=Coalesce(Sum("credits_burned"), 0))
        .order_by("-credits", "user__email")[:limit]
    ]


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
