"""Fixtures for the usage tests."""

from __future__ import annotations

from typing import Any

import pytest

from usage.tests.builders import grant


@pytest.fixture
def funded_user(user: Any) -> Any:
    """The `user` fixture with 100 credits."""
    grant(user, 100_000_000)
    return user
