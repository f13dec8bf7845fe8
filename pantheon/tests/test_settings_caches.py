"""The per-process cache settings as the process reads them at start-up: a publish lead that
does not exceed the price cache's interval is refused (a process could price calls with a
stale table), unless both are 0. Each case imports the settings in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
_NAMES = (
    "PRICING_CACHE_SECONDS",
    "PRICING_PUBLISH_LEAD_SECONDS",
    "CATALOG_CACHE_SECONDS",
    "API_KEY_CACHE_SECONDS",
)


def _load_settings(**values: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in _NAMES}
    env.update(values)
    return subprocess.run(
        [sys.executable, "-c", "import pantheon.settings"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "values",
    [
        {},  # the defaults: 60 s cache, 120 s lead
        {"PRICING_CACHE_SECONDS": "0", "PRICING_PUBLISH_LEAD_SECONDS": "0"},
        {"PRICING_CACHE_SECONDS": "0", "PRICING_PUBLISH_LEAD_SECONDS": "30"},
        {"PRICING_CACHE_SECONDS": "10", "PRICING_PUBLISH_LEAD_SECONDS": "11"},
        {"CATALOG_CACHE_SECONDS": "0", "API_KEY_CACHE_SECONDS": "0"},
    ],
)
def test_consistent_cache_settings_load(values: dict[str, str]) -> None:
    result = _load_settings(**values)
    assert result.returncode == 0, result.stderr


_TOO_SHORT = "must be greater than PRICING_CACHE_SECONDS"
# What is refused at start-up, and what the error says.
_REFUSED: dict[str, tuple[dict[str, str], str]] = {
    "lead equal to the cache": ({"PRICING_PUBLISH_LEAD_SECONDS": "60"}, _TOO_SHORT),
    "no lead with a cache": ({"PRICING_PUBLISH_LEAD_SECONDS": "0"}, _TOO_SHORT),
    "cache longer than the lead": ({"PRICING_CACHE_SECONDS": "300"}, _TOO_SHORT),
    "negative": ({"API_KEY_CACHE_SECONDS": "-1"}, "API_KEY_CACHE_SECONDS must be 0 or more"),
}


@pytest.mark.parametrize(("values", "says"), _REFUSED.values(), ids=_REFUSED.keys())
def test_a_lead_within_the_price_cache_interval_is_refused(
    values: dict[str, str], says: str
) -> None:
    result = _load_settings(**values)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and says in result.stderr
