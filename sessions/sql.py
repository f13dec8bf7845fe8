"""The sessions app's hand-written statements: the turn's opening and each call's write, one
round trip each (see `pantheon.sql`), composed with the usage app's CTEs (`usage.sql`). Each
replaces an ORM path of `sessions.services.turns` that stays for SQLite and for the cases named
below, with the same rows written; the tests run both.

- `turn_open`: lock the session (no turn running in it), lock the account and reserve the
  first call's credits, count the turn, write it with its user message, its Idempotency-Key and
  the summary row its first call asks for. When the session has a turn running or the credits
  do not cover the call (or an expired reservation must be closed first), it writes nothing and
  returns None: the ORM path then gives the exact answer (409, 402, a stale turn failed).
- `call_write`: a call's event, burn and settlement, the reply's message, the context audit,
  the summary row, the turn's progress. When the event's key or generation id was seen before it
  writes nothing and returns None: the ORM path decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from pantheon import sql
from pantheon.sql import Cte, insert_cte, mark_saved
from sessions.models import Message, SessionSummary, Turn, TurnContextAudit, TurnIdempotencyKey
from usage import sql as usage_sql
from usage.models import LlmCallEvent, Reservation

# The session, locked, when no turn runs in it.
_SESSION = """
SELECT id FROM sessions
WHERE id = %(g_session)s
  AND NOT EXISTS (SELECT 1 FROM turns WHERE session_id = %(g_session)s AND status = 'running')
FOR NO KEY UPDATE
"""

_COUNT_THE_TURN = """
UPDATE sessions SET turn_counter = turn_counter + 1, updated_at = %(s_now)s
WHERE id = (SELECT id FROM g) AND EXISTS (SELECT 1 FROM a)
RETURNING turn_counter
"""


_OPENED = "SELECT (SELECT turn_index FROM t), (SELECT id FROM a), NULL"
_OPENED_WITH_SUMMARY = "SELECT (SELECT turn_index FROM t), (SELECT id FROM a), (SELECT id FROM q)"


@dataclass(frozen=True)
class Opened:
    turn_index: int
    account_id: int
    summary_id: UUID | None


def turn_open(
    *,
    turn: Turn,
    user_message: Message,
    reservation: Reservation,
    user_id: UUID,
    idempotency_key: TurnIdempotencyKey | None,
    summary: SessionSummary | None,
    now: datetime,
    account_locked: bool = False,
) -> Opened | None:
    """Write the opening of `turn` (unsaved; its index comes from the session's counter) in one
    statement, or nothing (None). The instances are saved rows afterwards."""
    ctes = [
        Cte("g", _SESSION, {"g_session": turn.session_id}),
        *usage_sql.reserve_ctes(
            reservation=reservation,
            user_id=user_id,
            now=now,
            guard="EXISTS (SELECT 1 FROM g)",
            account_locked=account_locked,
        ),
        Cte("s", _COUNT_THE_TURN, {"s_now": now}),
        insert_cte(
            "t",
            turn,
            source="s",
            overrides={"turn_index": "s.turn_counter"},
            returning="turn_index",
        ),
        insert_cte("m", user_message, source="t"),
    ]
    if idempotency_key is not None:
        ctes.append(insert_cte("k", idempotency_key, source="t"))
    if summary is not None:
        ctes.append(insert_cte("q", summary, source="t", suffix="ON CONFLICT DO NOTHING"))
    row = sql.run(ctes, _OPENED_WITH_SUMMARY if summary is not None else _OPENED)
    if row[0] is None:
        return None
    turn.turn_index = row[0]
    reservation.account_id = row[1]
    mark_saved(turn, user_message, reservation)
    if idempotency_key is not None:
        mark_saved(idempotency_key)
    if summary is not None and row[2] is not None:
        mark_saved(summary)
    return Opened(turn_index=row[0], account_id=row[1], summary_id=row[2])


_WRITTEN = "SELECT EXISTS (SELECT 1 FROM ev), NULL"
_WRITTEN_WITH_SUMMARY = "SELECT EXISTS (SELECT 1 FROM ev), (SELECT id FROM q)"

_SUPERSEDE = """
UPDATE messages SET status = 'superseded'
WHERE id = %(ss_message)s AND status <> 'superseded' AND EXISTS (SELECT 1 FROM ev)
RETURNING id
"""

_PROGRESS = """
UPDATE turns SET progress_at = %(tp_now)s
WHERE id = %(tp_turn)s AND EXISTS (SELECT 1 FROM ev)
RETURNING id
"""


def call_write(
    *,
    event: LlmCallEvent,
    reservation_id: UUID | None,
    message: Message | None,
    audit: TurnContextAudit,
    summary: SessionSummary | None,
    progress_of: UUID | None,
    now: datetime,
    supersedes: UUID | None = None,
) -> tuple[bool, UUID | None]:
    """Write a call's rows (all unsaved; `message` None for a routing call, `progress_of` the
    turn whose progress to record, `supersedes` the reply a retry replaces) in one statement.
    Returns whether they were written (not when the event was seen before) and the id of the
    summary row written, if one was."""
    ctes = usage_sql.record_ctes(event=event, reservation_id=reservation_id, now=now)
    if message is not None:
        ctes.append(insert_cte("msg", message, source="ev"))
    ctes.append(insert_cte("au", audit, source="ev"))
    if summary is not None:
        ctes.append(insert_cte("q", summary, source="ev", suffix="ON CONFLICT DO NOTHING"))
    if progress_of is not None:
        ctes.append(Cte("tp", _PROGRESS, {"tp_now": now, "tp_turn": progress_of}))
    if supersedes is not None:
        ctes.append(Cte("ss", _SUPERSEDE, {"ss_message": supersedes}))
    written, requested = sql.run(ctes, _WRITTEN_WITH_SUMMARY if summary is not None else _WRITTEN)
    if not written:
        return False, None
    mark_saved(event, audit, *([message] if message is not None else []))
    if summary is not None and requested is not None:
        mark_saved(summary)
    return True, requested
