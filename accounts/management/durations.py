"""Durations on the command line: `30d`, `12h`, `45m`, `90s`, `2w`."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """`<number><unit>` with unit s, m, h, d or w; raises ValueError on anything else."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"Invalid duration {text!r}: use a whole number and a unit, e.g. 30d, 12h, 45m, 90s."
        )
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit.lower()]: int(amount)})
