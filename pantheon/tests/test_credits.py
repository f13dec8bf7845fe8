"""Credits as every app shows them (pantheon.credits)."""

from __future__ import annotations

import pytest

from pantheon.credits import format_credits


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (3_090_000, "3.090000"),
        (0, "0.000000"),
        (1, "0.000001"),
        (-3_090_000, "-3.090000"),
        (123_456_789_012, "123456.789012"),
    ],
)
def test_format_credits(micro: int, text: str) -> None:
    assert format_credits(micro) == text
