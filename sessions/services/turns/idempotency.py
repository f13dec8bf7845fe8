"""Turn `Idempotency-Key`s: the request's fingerprint, the replay check before admission, and
the periodic purge of expired keys. The key itself is recorded by admission, with the turn.

A key is kept at least IDEMPOTENCY_KEY_TTL_HOURS (24) so a client's retry replays the stored
answer; after that the purge deletes it and the same key starts a new turn.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from pantheon.db import pk_batches
from pantheon.errors import ApplicationError
from sessions.models import IdempotencyStatus, TurnIdempotencyKey, TurnStatus
from sessions.services.turns.state import Replay

PURGE_BATCH_SIZE = 1000


def request_fingerprint(*, session_id: UUID, body: dict[str, Any]) -> str:
    """What makes two requests "the same" for a key: the session and the validated body."""
    canonical = json.dumps({"session": str(session_id), "body": body}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_key_in_use() -> ApplicationError:
    return ApplicationError(
        "A request with this Idempotency-Key is still running.",
        code="idempotency_key_in_use",
        retry_after=2,
    )


def idempotency_check(*, user: User, key: str, fingerprint: str) -> Replay | None:
    """The stored answer of a finished request with this key (a Replay), None for a new key;
    422 for the key reused with another request, 409 while its request still runs."""
    record = TurnIdempotencyKey.objects.filter(user=user, key=key).first()
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise ApplicationError(
            "This Idempotency-Key was used with a different request.",
            code="idempotency_key_reused",
        )
    if record.status == IdempotencyStatus.RUNNING or record.turn_id is None:
        raise idempotency_key_in_use()
    return Replay(turn_id=record.turn_id, status_code=record.response_status or 201)


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
    for batch in pk_batches(expired.only("pk"), batch_size=batch_size):
        purged += expired.filter(pk__in=[key.pk for key in batch]).delete()[0]
    return purged
