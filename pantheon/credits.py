"""Credits as every part of Pantheon shows them.

The database keeps credits as integer micro-credits; everywhere else (API bodies, error details,
the admin, command output) they are decimal strings with 6 places, e.g. `"3.090000"`. Several
apps render credits, so the unit and its rendering live here, once.
"""

from __future__ import annotations

from decimal import Decimal

MICRO_PER_CREDIT = 1_000_000
_CREDIT_QUANTUM = Decimal("0.000001")


def format_credits(micro: int) -> str:
    """Integer micro-credits as a credit string with 6 places: 3090000 → "3.090000"."""
    return str((Decimal(int(micro)) / MICRO_PER_CREDIT).quantize(_CREDIT_QUANTUM))
