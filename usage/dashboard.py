"""The staff usage dashboard, inside the admin chrome: credits burned over the range (an SVG bar
chart drawn on the server, so no script and no external asset is needed) — by hour when the range
is short, by day otherwise —, usage by model with error rate and p50/p95 latency, the top users,
and the calls refused for want of credits or by a spending limit, for a chosen range of UTC days.
Every model, user and bar links to its call events.

The view is thin: parse the range → `usage.selectors.usage_dashboard` (plus the hourly figures of
a short range) → render. Invalid input is answered with the form's message (400), never a 500.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce, TruncHour
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format, time_format
from django.utils.http import urlencode

from pantheon.credits import format_credits
from usage.api.serializers import USAGE_DEFAULT_DAYS
from usage.models import LlmCallEvent
from usage.selectors import (
    DASHBOARD_MAX_DAYS,
    UsageDashboard,
    day_start,
    events_between,
    usage_dashboard,
)

# The same default range as the API's /usage.
DEFAULT_DAYS = USAGE_DEFAULT_DAYS
# A range of at most this many days is drawn by hour (24 or 48 bars), a longer one by day.
HOURLY_MAX_DAYS = 2
# The ranges offered as links next to the form, in days up to today.
SHORTCUT_DAYS = (1, 2, 7, 30, 90, 365)
CHART_WIDTH = 960
CHART_HEIGHT = 220
CHART_LEFT = 64  # room for the y-axis labels
CHART_RIGHT = 24  # room for the last x-axis label
CHART_BOTTOM = 28  # room for the x-axis labels
CHART_TOP = 10
# At most this many x-axis labels (about 110 px apart): more would run into each other.
MAX_TICKS = 8


class DashboardRangeForm(forms.Form):
    """`?from=YYYY-MM-DD&to=YYYY-MM-DD` (UTC days, both inclusive). Missing ends default to the
    last DEFAULT_DAYS days."""

    date_from = forms.DateField(required=False, input_formats=["%Y-%m-%d"])
    date_to = forms.DateField(required=False, input_formats=["%Y-%m-%d"])

    def __init__(self, query: Any, *, today: date) -> None:
        super().__init__({"date_from": query.get("from", ""), "date_to": query.get("to", "")})
        self.today = today

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        date_to = cleaned.get("date_to") or self.today
        date_from = cleaned.get("date_from") or _days_up_to(date_to, DEFAULT_DAYS)
        if date_from > date_to:
            raise forms.ValidationError("The start date must not be after the end date.")
        if (date_to - date_from).days + 1 > DASHBOARD_MAX_DAYS:
            raise forms.ValidationError(f"Choose a range of at most {DASHBOARD_MAX_DAYS} days.")
        cleaned["date_from"], cleaned["date_to"] = date_from, date_to
        return cleaned

    def messages(self) -> list[str]:
        """Every error as one plain sentence, naming the parameter the user typed."""
        names = {"date_from": "from", "date_to": "to"}
        lines = []
        for field, errors in self.errors.items():
            for error in errors:
                if field in names:
                    lines.append(f"“{names[field]}”: {error} Use the YYYY-MM-DD format.")
                else:
                    lines.append(str(error))
        return lines


def _days_up_to(last: date, days: int) -> date:
    """The first day of a range of `days` days ending on `last`. Ordinals, not date arithmetic:
    near date.min a subtraction would overflow."""
    return date.fromordinal(max(1, last.toordinal() - (days - 1)))


# --- figures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """One bar's figures: a UTC hour (a datetime) or a UTC day (a date)."""

    start: date | datetime
    credits_micro: int
    calls: int


def usage_buckets(dashboard: UsageDashboard) -> list[Bucket]:
    """The chart's bars: every hour of a range of at most HOURLY_MAX_DAYS days (one query),
    else every day (the dashboard's own figures)."""
    days = (dashboard.date_to - dashboard.date_from).days + 1
    if days > HOURLY_MAX_DAYS:
        return [Bucket(day.day, day.credits_micro, day.calls) for day in dashboard.by_day]
    events = events_between(
        LlmCallEvent.objects.all(), date_from=dashboard.date_from, date_to=dashboard.date_to
    )
    per_hour = {
        row["hour"]: row
        for row in events.annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values("hour")
        .annotate(credits=Coalesce(Sum("credits_burned"), 0), calls=Count("id"))
        .order_by("hour")
    }
    first = day_start(dashboard.date_from)
    hours = [first + timedelta(hours=n) for n in range(24 * days)]
    return [
        Bucket(hour, per_hour[hour]["credits"], per_hour[hour]["calls"])
        if hour in per_hour
        else Bucket(hour, 0, 0)
        for hour in hours
    ]


# --- links to the call events --------------------------------------------------------------------


def calls_url(**lookups: Any) -> str:
    """The call events changelist narrowed by admin lookups."""
    return f"{reverse('admin:usage_llmcallevent_changelist')}?{urlencode(lookups)}"


def _range_lookups(dashboard: UsageDashboard) -> dict[str, str]:
    return {
        "created_at__date__gte": dashboard.date_from.isoformat(),
        "created_at__date__lte": dashboard.date_to.isoformat(),
    }


def _bucket_lookups(start: date | datetime) -> dict[str, Any]:
    """A bar's calls: its UTC day, and its hour for an hourly bar (no end instant to compute,
    which the last hour of date.max would not have)."""
    if isinstance(start, datetime):
        return {"created_at__date": start.date().isoformat(), "created_at__hour": start.hour}
    return {"created_at__date": start.isoformat()}


# --- the chart -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One bar of the chart, in SVG user units, and what it stands for."""

    x: float
    y: float
    width: float
    height: float
    start: str  # the hour or day, ISO 8601 (UTC)
    title: str  # the hour or day as the admin writes dates
    value: str
    calls: int
    url: str


@dataclass(frozen=True)
class Tick:
    """An x-axis label, centred under its bar."""

    x: float
    label: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    unit: str  # "hour" or "day"
    bars: list[Bar]
    ticks: list[Tick]
    max_label: str
    baseline_y: float
    top_y: float
    plot_left: int
    plot_right: int


# The x-axis marks a chart can use, finest first: it labels the bars that the first one fitting
# MAX_TICKS marks. Each is (which bars, how their label is written).
_Marks = tuple[Callable[[Any], bool], str]
_HOUR_MARKS: tuple[_Marks, ...] = tuple(
    ((lambda hour, step=step: hour.hour % step == 0), "TIME_FORMAT") for step in (1, 2, 3, 6, 12)
)
_DAY_MARKS: tuple[_Marks, ...] = (
    (lambda day: True, "N j"),
    (lambda day: day.toordinal() % 2 == 0, "N j"),
    (lambda day: day.weekday() == 0, "N j"),  # Mondays
    (lambda day: day.weekday() == 0 and day.toordinal() // 7 % 2 == 0, "N j"),
    (lambda day: day.day == 1, "N Y"),  # months
    (lambda day: day.day == 1 and day.month % 2 == 1, "N Y"),
    (lambda day: day.day == 1 and day.month % 3 == 1, "N Y"),  # quarters
)


def _label(start: date | datetime, fmt: str) -> str:
    if isinstance(start, datetime):
        # Hours read "3 a.m.", "noon"…; midnight starts a day, so it shows the date.
        return date_format(start, "N j") if start.hour == 0 else time_format(start, fmt)
    return date_format(start, fmt)


def _ticks(buckets: list[Bucket]) -> list[tuple[int, str]]:
    """The bars to label (indexes) and their labels: at most MAX_TICKS, at round intervals."""
    hourly = bool(buckets) and isinstance(buckets[0].start, datetime)
    candidates = _HOUR_MARKS if hourly else _DAY_MARKS
    chosen: list[tuple[int, str]] = []
    for marks, fmt in candidates:
        chosen = [(n, _label(b.start, fmt)) for n, b in enumerate(buckets) if marks(b.start)]
        if len(chosen) <= MAX_TICKS:
            break
    return chosen


def _title(start: date | datetime) -> str:
    if isinstance(start, datetime):
        return f"{date_format(start, 'DATE_FORMAT')}, {time_format(start, 'TIME_FORMAT')} UTC"
    return date_format(start, "DATE_FORMAT")


def credits_chart(buckets: list[Bucket]) -> BarChart:
    """Bar geometry for credits burned per bucket, scaled to the busiest one."""
    plot_right = CHART_WIDTH - CHART_RIGHT
    plot_width = plot_right - CHART_LEFT
    plot_height = CHART_HEIGHT - CHART_BOTTOM - CHART_TOP
    baseline = CHART_TOP + plot_height
    peak = max((bucket.credits_micro for bucket in buckets), default=0)
    slot = plot_width / max(len(buckets), 1)
    gap = min(4.0, slot * 0.2)
    bars = []
    for n, bucket in enumerate(buckets):
        height = plot_height * bucket.credits_micro / peak if peak else 0.0
        if bucket.credits_micro and height < 1:
            height = 1.0  # a bucket with any spend stays visible
        bars.append(
            Bar(
                x=round(CHART_LEFT + n * slot + gap / 2, 2),
                y=round(baseline - height, 2),
                width=round(max(slot - gap, 1.0), 2),
                height=round(height, 2),
                start=bucket.start.isoformat(),
                title=_title(bucket.start),
                value=format_credits(bucket.credits_micro),
                calls=bucket.calls,
                url=calls_url(**_bucket_lookups(bucket.start)),
            )
        )
    ticks = [Tick(round(CHART_LEFT + (n + 0.5) * slot, 2), label) for n, label in _ticks(buckets)]
    hourly = bool(buckets) and isinstance(buckets[0].start, datetime)
    return BarChart(
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        unit="hour" if hourly else "day",
        bars=bars,
        ticks=ticks,
        max_label=format_credits(peak),
        baseline_y=baseline,
        top_y=CHART_TOP,
        plot_left=CHART_LEFT,
        plot_right=plot_right,
    )


# --- the page ------------------------------------------------------------------------------------


def _shortcuts(today: date) -> list[dict[str, str]]:
    """Links to the usual ranges, each ending today."""
    return [
        {
            "label": "Today" if days == 1 else f"{days} days",
            "url": "?" + urlencode({"from": _days_up_to(today, days).isoformat()}),
        }
        for days in SHORTCUT_DAYS
    ]


def _by_hour_url(dashboard: UsageDashboard) -> str | None:
    """On a young history (day one: every call of a longer range is from its last
    HOURLY_MAX_DAYS days), a link to those days by hour; None otherwise."""
    days = dashboard.by_day
    if len(days) <= HOURLY_MAX_DAYS or not dashboard.total_calls:
        return None
    if any(day.calls for day in days[:-HOURLY_MAX_DAYS]):
        return None
    first = days[-HOURLY_MAX_DAYS].day.isoformat()
    return "?" + urlencode({"from": first, "to": dashboard.date_to.isoformat()})


def _range_label(date_from: date, date_to: date) -> str:
    first = date_format(date_from, "DATE_FORMAT")
    return first if date_from == date_to else f"{first} to {date_format(date_to, 'DATE_FORMAT')}"


def _figures(dashboard: UsageDashboard) -> dict[str, Any]:
    """The page's figures, each model and user with a link to its calls in the range."""
    in_range = _range_lookups(dashboard)
    return {
        "dashboard": dashboard,
        "total_credits": format_credits(dashboard.total_credits_micro),
        "range_label": _range_label(dashboard.date_from, dashboard.date_to),
        "models": [
            {
                "usage": usage,
                "credits": format_credits(usage.credits_micro),
                "error_rate": f"{usage.error_rate:.1%}",
                "calls_url": calls_url(model__exact=usage.model, **in_range),
            }
            for usage in dashboard.by_model
        ],
        "users": [
            {
                "usage": usage,
                "credits": format_credits(usage.credits_micro),
                "calls_url": calls_url(user=usage.user_id, **in_range),
                "account_url": reverse("admin:accounts_user_change", args=[usage.user_id]),
            }
            for usage in dashboard.top_users
        ],
        "refusals": dashboard.refusals,
        # The limits reached now (not in the range: a limit's window is today or this month).
        "limits_reached_url": (
            f"{reverse('admin:usage_spendinglimit_changelist')}?"
            f"{urlencode({'spending_limit': 'reached'})}"
        ),
    }


def usage_dashboard_view(request: HttpRequest, model_admin: admin.ModelAdmin) -> TemplateResponse:
    """The dashboard page. Reached through `admin_site.admin_view` (staff only); it also needs
    the permission to view call events."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    today = timezone.now().date()
    form = DashboardRangeForm(request.GET, today=today)
    context: dict[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "title": "Usage dashboard",
        "opts": model_admin.model._meta,
        "form": form,
        "value_from": request.GET.get("from", ""),
        "value_to": request.GET.get("to", ""),
        "default_days": DEFAULT_DAYS,
        "hourly_max_days": HOURLY_MAX_DAYS,
        "shortcuts": _shortcuts(today),
    }
    if not form.is_valid():
        context["errors"] = form.messages()
        return TemplateResponse(request, "admin/usage/dashboard.html", context, status=400)
    dashboard = usage_dashboard(
        date_from=form.cleaned_data["date_from"], date_to=form.cleaned_data["date_to"]
    )
    context.update(
        _figures(dashboard),
        chart=credits_chart(usage_buckets(dashboard)),
        by_hour_url=_by_hour_url(dashboard),
        value_from=dashboard.date_from.isoformat(),
        value_to=dashboard.date_to.isoformat(),
    )
    return TemplateResponse(request, "admin/usage/dashboard.html", context)
