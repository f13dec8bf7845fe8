"""Expiry of turn Idempotency-Keys: the periodic purge deletes keys older than
IDEMPOTENCY_KEY_TTL_HOURS in primary-key batches, after which the same key starts a new turn;
a fresh key still replays, and the key of a turn still running is never purged."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pantheon.celery import app as celery_app
from sessions.models import Turn, TurnIdempotencyKey
from sessions.services.turns import idempotency_keys_purge
from sessions.tasks import purge_idempotency_keys
from sessions.tests.builders import Setup, single_agent
from testing.db_faults import wait_for
from testing.stub_llm import LlmStub, StubReply

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("write_path")]


def _age(key: str, hours: float) -> None:
    """Make a stored key look `hours` old (as if created then)."""
    TurnIdempotencyKey.objects.filter(key=key).update(
        created_at=timezone.now() - timedelta(hours=hours)
    )


def test_an_expired_key_starts_a_new_turn_while_a_fresh_one_replays(
    db: None, llm_stub: LlmStub
) -> None:
    s = single_agent()
    old, fresh = {"Idempotency-Key": "old-1"}, {"Idempotency-Key": "fresh-1"}
    first_old = s.post("hello", headers=old)
    first_fresh = s.post("hello again", headers=fresh)
    assert first_old.status_code == first_fresh.status_code == 201
    _age("old-1", settings.IDEMPOTENCY_KEY_TTL_HOURS + 1)
    _age("fresh-1", settings.IDEMPOTENCY_KEY_TTL_HOURS - 1)  # kept at least the TTL
    calls = len(llm_stub.requests)

    assert purge_idempotency_keys() == 1  # the beat's task, run in-process

    assert list(TurnIdempotencyKey.objects.values_list("key", flat=True)) == ["fresh-1"]
    replay = s.post("hello again", headers=fresh)
    assert replay.status_code == 201 and replay.json() == first_fresh.json()
    assert len(llm_stub.requests) == calls  # a replay runs nothing
    again = s.post("hello", headers=old)
    assert again.status_code == 201
    assert again.json()["id"] != first_old.json()["id"]  # a new turn, generated and billed anew
    assert again.json()["turn_index"] == 3
    assert len(llm_stub.requests) == calls + 1
    # The new turn's key is stored afresh, and replays from now on.
    assert s.post("hello", headers=old).json() == again.json()


def test_purge_walks_the_table_in_primary_key_batches(db: None, llm_stub: LlmStub) -> None:
    s = single_agent()
    for n in range(5):
        assert s.post(f"q{n}", headers={"Idempotency-Key": f"k{n}"}).status_code == 201
    assert s.post("kept", headers={"Idempotency-Key": "kept"}).status_code == 201
    later = timezone.now() + timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    _age("kept", -settings.IDEMPOTENCY_KEY_TTL_HOURS)  # created "at" `later`: not expired then
    with CaptureQueriesContext(connection) as queries:
        assert idempotency_keys_purge(now=later, batch_size=2) == 5
    assert list(TurnIdempotencyKey.objects.values_list("key", flat=True)) == ["kept"]
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # batches of 2, 2 and 1
    assert not any("OFFSET" in q["sql"] for q in queries.captured_queries)
    assert idempotency_keys_purge(now=later) == 0  # idempotent


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_key_of_a_running_turn_is_never_purged(llm_stub: LlmStub) -> None:
    s: Setup = single_agent()
    llm_stub.enqueue(StubReply(text="slow", delay=1.5))
    key = {"Idempotency-Key": "running-1"}
    results: dict[str, Any] = {}

    def first() -> None:
        results["first"] = s.post("hello", headers=key)
        connections.close_all()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        wait_for(lambda: Turn.objects.filter(session=s.session, status="running").exists())
        _age("running-1", settings.IDEMPOTENCY_KEY_TTL_HOURS + 1)
        assert idempotency_keys_purge() == 0
        second = s.post("hello", headers=key)
        assert second.status_code == 409  # still the running turn's key: no second turn
        assert second.json()["error"]["code"] == "idempotency_key_in_use"
    finally:
        thread.join()
    assert results["first"].status_code == 201
    assert idempotency_keys_purge() == 1  # once the turn has ended, its old key goes
    assert Turn.objects.filter(session=s.session).count() == 1


def test_the_purge_is_scheduled_by_beat() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["purge-idempotency-keys"]
    assert entry["task"] == purge_idempotency_keys.name
    assert entry["task"] in celery_app.tasks
    assert 0 < entry["schedule"] <= 3600  # at least hourly by default: keys live ~TTL + 1 h
