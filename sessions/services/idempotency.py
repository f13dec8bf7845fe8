"""Expiry of turn `Idempotency-Key`s.

A key is kept at least IDEMPOTENCY_KEY_TTL_HOURS (24) so a client's retry replays the stored
answer; after that the periodic purge deletes it and the same key starts a new turn. The check
and the recording of keys live with the turn's admission (`sessions.services.turns`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from sessions.models import TurnIdempotencyKey, TurnStatus
from usage.selectors import _pk_batches

PURGE_BATCH_SIZE = 1000


def _expired(cutoff: datetime) -> QuerySet[TurnIdempotencyKey]:
    """Keys created before `cutoff`, except those whose turn is still running: purging one of
    those would let the client's retry start a second turn (and a second bill) beside the
    first. Such a turn is failed by the stale-turn sweep long before 24 h, and its key goes at
    the next purge. A key whose turn was deleted (turn NULL) is purged."""
    return TurnIdempotencyKey.objects.filter(created_at__lt=cutoff).exclude(
        turn__status=TurnStatus.RUNNING
    )


def idempotency_keys_purge(
    *, now: datetime | None = None, batch_size: int = PURGE_BATCH_SIZE
) -> int:
    """Delete the turn Idempotency-Keys older than IDEMPOTENCY_KEY_TTL_HOURS; returns how many.

    The table is walked by primary key in batches (keyset, never OFFSET), one short DELETE per
    batch in autocommit, so the purge never holds many row locks or one long transaction. Each
    DELETE repeats the conditions, so a row that changed since its batch was read is kept."""
    cutoff = (now or timezone.now()) - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    expired = _expired(cutoff)
    purged = 0
    for batch in _pk_batches(expired.only("pk"), batch_size):
        purged += expired.filter(pk__in=[key.pk for key in batch]).delete()[0]
    return purged
