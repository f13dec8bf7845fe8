"""Credits as every part of Pantheon shows them.

The database keeps credits as integer micro-credits; everywhere else (API bodies, error details,
the admin, command output) they are decimal strings with 6 places, e.g. `"3.090000"`. Several
apps render credits, so the unit and its rendering live here, once.
"""

from __future__ import annotations

import re
from decimal import Decimal

MICRO_PER_CREDIT = 1_000_000
_CREDIT_QUANTUM = Decimal("0.000001")


def format_credits(micro: int) -> str:
    """Integer micro-credits as a credit string with 6 places: 3090000 → "3.090000"."""
    return str((Decimal(int(micro)) / MICRO_PER_CREDIT).quantize(_CREDIT_QUANTUM))


# Digits and an optional fraction of at most 6, nothing else: no sign, exponent or other digits.
CREDITS_PATTERN = r"^[0-9]{1,13}(\.[0-9]{1,6})?$"
_CREDITS_TEXT = re.compile(CREDITS_PATTERN)
_MAX_MICRO = 2**62  # far below a bigint, so sums of a few amounts never overflow


def parse_credits(text: str) -> int:
    """A positive credit amount with at most 6 decimal places, in micro-credits: "3.09" →
    3090000. ValueError saying why otherwise."""
    text = text.strip()
    if not _CREDITS_TEXT.fullmatch(text):
        raise ValueError("write it as digits with at most 6 decimal places, e.g. 25.5")
    micro = int(Decimal(text) * MICRO_PER_CREDIT)
    if micro < 1:
        raise ValueError("must be greater than zero")
    if micro >= _MAX_MICRO:
        raise ValueError("too large")
    return micro
