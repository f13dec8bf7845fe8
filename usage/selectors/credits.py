"""A user's credits and ledger, as the API shows them (credits as strings with 6 places)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from pantheon.credits import format_credits
from usage.models import CreditAccount, LedgerEntry


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


def ledger_for_user(user: Any) -> QuerySet[LedgerEntry]:
    """The user's ledger entries, newest first."""
    return LedgerEntry.objects.filter(account__user_id=user.pk).order_by("-created_at", "-id")
