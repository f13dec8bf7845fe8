"""The staff usage dashboard, inside the admin chrome: credits burned per day (an SVG bar chart
drawn on the server, so no script and no external asset is needed), usage by model with error
rate and p50/p95 latency, and the top users, for a chosen range of UTC days.

The view is thin: parse the range → `usage.selectors.usage_dashboard` → render. Invalid input is
answered with the form's message (400), never a 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from pantheon.credits import format_credits
from usage.selectors import DASHBOARD_MAX_DAYS, UsageDashboard, usage_dashboard

DEFAULT_DAYS = 14
CHART_WIDTH = 720
CHART_HEIGHT = 200
CHART_LEFT = 56  # room for the y-axis labels
CHART_BOTTOM = 24  # room for the x-axis labels
CHART_TOP = 8


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
        # Ordinals, not date arithmetic: near date.min a subtraction would overflow.
        default_from = date.fromordinal(max(1, date_to.toordinal() - (DEFAULT_DAYS - 1)))
        date_from = cleaned.get("date_from") or default_from
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


@dataclass(frozen=True)
class Bar:
    """One bar of the chart, in SVG user units."""

    x: float
    y: float
    width: float
    height: float
    label: str
    value: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    bars: list[Bar]
    max_label: str
    baseline_y: float
    plot_left: int
    first_label: str
    last_label: str


def credits_chart(dashboard: UsageDashboard) -> BarChart:
    """Bar geometry for credits burned per day: one bar per day, scaled to the busiest day."""
    days = dashboard.by_day
    plot_width = CHART_WIDTH - CHART_LEFT
    plot_height = CHART_HEIGHT - CHART_BOTTOM - CHART_TOP
    baseline = CHART_TOP + plot_height
    peak = max((day.credits_micro for day in days), default=0)
    slot = plot_width / max(len(days), 1)
    gap = min(4.0, slot * 0.2)
    bars = []
    for n, day in enumerate(days):
        height = plot_height * day.credits_micro / peak if peak else 0.0
        if day.credits_micro and height < 1:
            height = 1.0  # a day with any spend stays visible
        bars.append(
            Bar(
                x=round(CHART_LEFT + n * slot + gap / 2, 2),
                y=round(baseline - height, 2),
                width=round(max(slot - gap, 1.0), 2),
                height=round(height, 2),
                label=day.day.isoformat(),
                value=format_credits(day.credits_micro),
            )
        )
    return BarChart(
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        bars=bars,
        max_label=format_credits(peak),
        baseline_y=baseline,
        plot_left=CHART_LEFT,
        first_label=days[0].day.isoformat() if days else "",
        last_label=days[-1].day.isoformat() if days else "",
    )


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
    }
    if not form.is_valid():
        context["errors"] = form.messages()
        return TemplateResponse(request, "admin/usage/dashboard.html", context, status=400)
    dashboard = usage_dashboard(
        date_from=form.cleaned_data["date_from"], date_to=form.cleaned_data["date_to"]
    )
    context.update(
        dashboard=dashboard,
        chart=credits_chart(dashboard),
        total_credits=format_credits(dashboard.total_credits_micro),
        value_from=form.cleaned_data["date_from"].isoformat(),
        value_to=form.cleaned_data["date_to"].isoformat(),
        models=[
            {
                "usage": usage,
                "credits": format_credits(usage.credits_micro),
                "error_rate": f"{usage.error_rate:.1%}",
            }
            for usage in dashboard.by_model
        ],
        users=[
            {"usage": usage, "credits": format_credits(usage.credits_micro)}
            for usage in dashboard.top_users
        ],
    )
    return TemplateResponse(request, "admin/usage/dashboard.html", context)
