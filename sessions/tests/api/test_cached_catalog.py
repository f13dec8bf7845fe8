"""A provider disabled in the admin, through turns: every process stops using it within
CATALOG_CACHE_SECONDS (README, "Freshness of cached data"), and the speaker it served then fails
alone, like any provider failure."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from accounts.models import User
from llm.models import ModelConfig, Provider
from llm.services import provider_create
from sessions.tests.builders import FAILING, Room, ledger_ok
from testing.clock import ProcessClock

pytestmark = pytest.mark.postgres


def _statuses(response: Any) -> dict[str, tuple[str, str]]:
    assert response.status_code == 201, response.content
    return {
        m["agent"]["handle"]: (m["status"], (m["error"] or {}).get("code", ""))
        for m in response.json()["messages"][1:]
    }


def test_a_provider_disabled_in_the_admin_fails_its_speaker_within_the_bound(  # type: ignore[no-untyped-def]
    db, llm_stub, process_clock: ProcessClock
) -> None:
    room = Room(mode="round_table")
    provider = provider_create(name="bo-host", base_url=llm_stub.url, api_key="sk-bo")
    ModelConfig.objects.filter(pk=FAILING).update(provider=provider)  # Bo's model
    assert _statuses(room.post("Everyone?"))["bo"] == ("ok", "")

    staff = Client()
    staff.force_login(User.objects.create_superuser(email="staff@example.com", password="x"))
    response = staff.post(
        f"/admin/llm/provider/{provider.pk}/change/",
        {"name": provider.name, "kind": provider.kind, "base_url": provider.base_url},
    )  # `is_active` unticked; the key stays (same base URL)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert not Provider.objects.get(pk=provider.pk).is_active

    process_clock.advance(29.9)  # within CATALOG_CACHE_SECONDS: this process still uses it
    assert _statuses(room.post("Still there?"))["bo"] == ("ok", "")

    process_clock.advance(0.1)
    requests_before = len(llm_stub.requests)
    statuses = _statuses(room.post("And now?"))
    assert statuses == {
        "ada": ("ok", ""),
        "bo": ("error", "llm_provider_error"),
        "cy": ("ok", ""),
    }
    assert len(llm_stub.requests) == requests_before + 2  # Ada and Cy only
    ledger_ok()
