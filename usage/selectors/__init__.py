"""Reads for usage, one module per concern:

    prices.py         the version in force, a model's prices for a call, the client price list
    credits.py        a user's credits and ledger
    events.py         call events by user and by UTC day, the usage summary
    ledger_checks.py  verification of the ledger (`verify_ledger`)
    dashboard.py      the staff usage dashboard's figures
    limits.py         spending limits: the UTC windows, what each limit stands at
    totals.py         totals of the admin changelists' filtered sets

Other apps import from here. Units outside the database: credits are decimal strings with 6
places (`"3.090000"`, rendered by `pantheon.credits.format_credits`), USD are decimal strings
(`"0.15"`), OE tokens decimal strings with 4 places.
"""

from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet

from pantheon.credits import format_credits
from pantheon.db import pk_batches
from usage.selectors.credits import credits_for_user, ledger_for_user
from usage.selectors.dashboard import (
    DASHBOARD_MAX_DAYS,
    PERCENTILE_PYTHON_ROW_LIMIT,
    DayUsage,
    ModelUsage,
    UsageDashboard,
    UserUsage,
    percentile_cont,
    usage_dashboard,
)
from usage.selectors.events import (
    day_end,
    day_start,
    days_between,
    events_between,
    events_for_user,
    usage_summary,
)
from usage.selectors.ledger_checks import ledger_problems
from usage.selectors.limits import (
    LimitState,
    limit_get_for_user,
    limit_state,
    limit_states,
    limit_states_for_user,
    limits_for_user,
    period_bounds,
    spending_warnings_for_user,
    user_has_limits,
)
from usage.selectors.prices import (
    PricedModel,
    current_prices,
    format_usd,
    model_price_at,
    prices_of,
    pricing_version_in_force,
)
from usage.selectors.totals import call_event_totals, credit_account_totals, ledger_totals


def _pk_batches(queryset: QuerySet[Any], batch_size: int) -> Iterator[list[Any]]:
    """The keyset walk under its old name, kept only for the sessions app's idempotency-key
    purge, which still imports it from here: delete it once that purge calls
    `pantheon.db.pk_batches` itself."""
    return pk_batches(queryset, batch_size=batch_size)


__all__ = [
    "DASHBOARD_MAX_DAYS",
    "PERCENTILE_PYTHON_ROW_LIMIT",
    "DayUsage",
    "LimitState",
    "ModelUsage",
    "PricedModel",
    "UsageDashboard",
    "UserUsage",
    "call_event_totals",
    "credit_account_totals",
    "credits_for_user",
    "current_prices",
    "day_end",
    "day_start",
    "days_between",
    "events_between",
    "events_for_user",
    # Rendering lives in pantheon.credits; re-exported for the modules that still import it
    # from here (sessions' admin and API renderers, usage's admin).
    "format_credits",
    "format_usd",
    "ledger_for_user",
    "ledger_problems",
    "ledger_totals",
    "limit_get_for_user",
    "limit_state",
    "limit_states",
    "limit_states_for_user",
    "limits_for_user",
    "model_price_at",
    "percentile_cont",
    "period_bounds",
    "prices_of",
    "pricing_version_in_force",
    "spending_warnings_for_user",
    "usage_dashboard",
    "usage_summary",
    "user_has_limits",
]
