"""The turn's writes have two implementations with the same effect: one statement each on
PostgreSQL (`sessions.sql`, `usage.sql`) and the ORM (SQLite, and the cases the statements leave
to it). Tests that use `write_path` run once with each."""

from __future__ import annotations

from typing import Any

import pytest

from pantheon import sql


@pytest.fixture(params=["one statement", "orm"])
def write_path(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "orm":
        monkeypatch.setattr(sql, "available", lambda: False)
    elif not sql.available():
        pytest.skip("the one-statement writes need PostgreSQL")
    return request.param
