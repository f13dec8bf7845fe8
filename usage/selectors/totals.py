"""Totals of a filtered set of rows, one aggregate query each: the admin changelists show them
above the rows (of the whole filtered set, not only the page)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from usage.models import CreditAccount, LedgerEntry, LedgerKind, LlmCallEvent
from usage.selectors.events import ZERO_OE


def call_event_totals(queryset: QuerySet[LlmCallEvent]) -> dict[str, Any]:
    """Totals of a set of call events (e.g. an admin changelist's filtered set), one query:
    calls, micro-credits, OE tokens, input and output tokens."""
    totals = queryset.order_by().aggregate(
        calls=Count("id"),
        credits=Coalesce(Sum("credits_burned"), 0),
        oe=Coalesce(Sum("oe_tokens"), ZERO_OE),
        input_tokens=Coalesce(Sum("input_tokens"), 0),
        output_tokens=Coalesce(Sum("output_tokens"), 0),
    )
    totals["oe"] = Decimal(totals["oe"]).quantize(ZERO_OE)
    return totals


def ledger_totals(queryset: QuerySet[LedgerEntry]) -> dict[str, Any]:
    """Totals of a set of ledger entries, one query: entries, the net movement and the burned
    micro-credits, and the OE tokens and tokens of the calls behind the burns."""
    totals = queryset.order_by().aggregate(
        entries=Count("id"),
        net=Coalesce(Sum("amount_micro"), 0),
        burned=Coalesce(Sum("amount_micro", filter=Q(kind=LedgerKind.BURN)), 0),
        oe=Coalesce(Sum("event__oe_tokens"), ZERO_OE),
        input_tokens=Coalesce(Sum("event__input_tokens"), 0),
        output_tokens=Coalesce(Sum("event__output_tokens"), 0),
    )
    totals["oe"] = Decimal(totals["oe"]).quantize(ZERO_OE)
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
