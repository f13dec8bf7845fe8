"""Call events by user and by UTC day: the API's event list and usage summary, and the day
ranges every report over events uses. OE tokens are shown with 4 places."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate

from pantheon.credits import format_credits
from usage.models import LlmCallEvent
from usage.selectors.credits import credits_for_user

# Zero OE tokens with the 4 places they are shown with: the sum of no events, and the quantum
# every shown sum is rounded to.
ZERO_OE = Decimal("0.0000")


def events_for_user(user: Any) -> QuerySet[LlmCallEvent]:
    """The user's call events, newest first, with their pricing version."""
    return (
        LlmCallEvent.objects.filter(user_id=user.pk)
        .select_related("pricing_version")
        .order_by("-created_at", "-id")
    )


def day_start(day: date) -> datetime:
    """The first instant of a UTC day."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def day_end(day: date) -> datetime | None:
    """The first instant after a UTC day (None after the last representable day)."""
    return None if day == date.max else day_start(day + timedelta(days=1))


def days_between(date_from: date, date_to: date) -> list[date]:
    """Every day from `date_from` to `date_to`, both inclusive: reports show each day of their
    range, days without calls included."""
    return [date_from + timedelta(days=n) for n in range((date_to - date_from).days + 1)]


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


def _figures(row: dict[str, Any] | None) -> dict[str, Any]:
    """One row of a usage summary as the API shows it; zeros when there is no row."""
    if row is None:
        return {
            "credits_burned": format_credits(0),
            "oe_tokens": str(ZERO_OE),
            "input_tokens": 0,
            "output_tokens": 0,
            "calls": 0,
        }
    return {
        "credits_burned": format_credits(row["credits"]),
        "oe_tokens": str(Decimal(row["oe"]).quantize(ZERO_OE)),
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "calls": row["calls"],
    }


def usage_summary(*, user: Any, date_from: date, date_to: date) -> dict[str, Any]:
    """Credits now, plus the user's calls between two dates (inclusive, UTC days) by day (every
    day of the range, zeros included) and by model (models with calls only)."""
    events = events_between(
        LlmCallEvent.objects.filter(user_id=user.pk), date_from=date_from, date_to=date_to
    )
    totals = {
        "credits": Coalesce(Sum("credits_burned"), 0),
        "oe": Coalesce(Sum("oe_tokens"), ZERO_OE),
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
    return {
        "credits": credits_for_user(user),
        "by_day": [
            {"date": day.isoformat(), **_figures(by_day_rows.get(day))}
            for day in days_between(date_from, date_to)
        ],
        "by_model": [{"model": row["model"], **_figures(row)} for row in by_model_rows],
    }
