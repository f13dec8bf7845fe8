"""Reads of the sessions app.

Sessions are reached through the rooms app's ownership guard (one guard for every room-scoped
API): a session is reachable when it is not deleted, the caller created it, and its room is the
caller's and not deleted; anything else is the same 404 `not_found` as a missing session.

The turn pipeline's reads — summaries, history, agents — read history from the latest ready
summary's boundary on, in a fixed number of queries: the cost of preparing a call does not grow
with the session's length. Turns are rendered with their messages, audits and usage loaded for
the whole page at once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector
from django.db import connection
from django.db.models import (
    BigIntegerField,
    Count,
    OuterRef,
    Prefetch,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce

from accounts.models import User
from rooms.models import Agent
from rooms.selectors import not_found, parse_id, room_get_for_user, room_owned_filter
from sessions.models import (
    Message,
    MessageRole,
    MessageStatus,
    Session,
    SessionSummary,
    SummaryStatus,
    ToolCall,
    Turn,
    TurnContextAudit,
    TurnStatus,
)
from usage.models import LlmCallEvent


def sessions_for_user(*, user: User) -> QuerySet[Session]:
    """Every session the user may reach (alive, theirs, in an alive room of theirs)."""
    return Session.objects.filter(
        room_owned_filter(user=user, through="room__"),
        deleted_at__isnull=True,
        created_by=user,
    )


def sessions_for_room(*, user: User, room_id: Any) -> QuerySet[Session]:
    """The user's sessions of one of their rooms, newest first; 404 when the room is not
    reachable."""
    room = room_get_for_user(user=user, room_id=room_id)
    return Session.objects.filter(room=room, deleted_at__isnull=True, created_by=user).order_by(
        "-created_at", "-id"
    )


def session_get_for_user(*, user: User, session_id: Any, room_id: Any = None) -> Session:
    """One reachable session with its room, in one query; or 404 `not_found` (missing, deleted,
    in a deleted room, or not the user's — indistinguishable). With `room_id`, the session must
    also belong to that room (the nested `rooms/{room_id}/sessions/{session_id}` paths)."""
    pk = parse_id(session_id)
    if pk is None:
        raise not_found()
    sessions = sessions_for_user(user=user).select_related("room").filter(pk=pk)
    if room_id is not None:
        room_pk = parse_id(room_id)
        if room_pk is None:
            raise not_found()
        sessions = sessions.filter(room_id=room_pk)
    session = sessions.first()
    if session is None:
        raise not_found()
    return session


# --- the turn pipeline and the turn endpoints ----------------------------------------------

# The scale of llm_call_events.oe_tokens, so an in-memory total reads as the database's SUM.
_OE_QUANTUM = Decimal(1).scaleb(-LlmCallEvent._meta.get_field("oe_tokens").decimal_places)

# Turns whose messages are conversation history (a failed turn has no reply worth replaying).
HISTORY_TURN_STATUSES = (TurnStatus.COMPLETED, TurnStatus.PARTIAL, TurnStatus.INTERRUPTED)
HISTORY_MESSAGE_STATUSES = (MessageStatus.OK, MessageStatus.INTERRUPTED)


@dataclass(frozen=True)
class SummaryState:
    ready: SessionSummary | None
    pending: SessionSummary | None

    @property
    def boundary(self) -> int:
        return self.ready.last_turn_covered if self.ready else 0


def summary_state_for_session(*, session_id: UUID) -> SummaryState:
    """The latest ready summary and the pending (or running) one, in one query."""
    rows = list(
        SessionSummary.objects.filter(
            session_id=session_id,
            status__in=[SummaryStatus.READY, SummaryStatus.PENDING, SummaryStatus.RUNNING],
        ).order_by("-last_turn_covered")[:2]
    )
    ready = next((s for s in rows if s.status == SummaryStatus.READY), None)
    pending = next((s for s in rows if s.status != SummaryStatus.READY), None)
    return SummaryState(ready=ready, pending=pending)


@dataclass(frozen=True)
class HistoryMessage:
    turn_index: int
    role: str
    agent_id: UUID | None
    agent_name: str
    content: str


def history_for_prompt(
    *, session_id: UUID, after_turn_index: int, before_turn_index: int | None = None
) -> list[HistoryMessage]:
    """Messages of the finished turns after the summary boundary (and before
    `before_turn_index`: a retry's own turn is not its history), oldest first (one query)."""
    messages = Message.objects.all()
    if before_turn_index is not None:
        messages = messages.filter(turn__turn_index__lt=before_turn_index)
    rows = (
        messages.filter(
            # Both filters: the turn range must be the session's own, so the planner walks this
            # session's turns by (session, turn_index) instead of every session's.
            session_id=session_id,
            turn__session_id=session_id,
            turn__turn_index__gt=after_turn_index,
            turn__status__in=HISTORY_TURN_STATUSES,
            status__in=HISTORY_MESSAGE_STATUSES,
            role__in=[MessageRole.USER, MessageRole.ASSISTANT],
        )
        .order_by("turn__turn_index", "sequence")
        .values_list("turn__turn_index", "role", "agent_id", "agent__name", "content")
    )
    return [
        HistoryMessage(
            turn_index=ti, role=role, agent_id=agent_id, agent_name=name or "", content=content
        )
        for ti, role, agent_id, name, content in rows
    ]


def active_agents_for_room(*, room_id: UUID) -> list[Agent]:
    """The room's active agents in `position` order, with their models (one query)."""
    return list(
        Agent.objects.filter(room_id=room_id, is_active=True, deleted_at__isnull=True)
        .select_related("model")
        .order_by("position", "created_at")
    )


def turns_for_session(*, session_id: UUID) -> QuerySet[Turn]:
    return Turn.objects.filter(session_id=session_id).order_by("turn_index")


def turns_with_details(turns: QuerySet[Turn]) -> list[Turn]:
    """Turns with messages (and agents), audits and usage totals loaded for the whole page at
    once: a fixed number of queries however many turns are shown."""
    page = list(
        turns.prefetch_related(
            Prefetch(
                "messages",
                # A reply a retry replaced is kept for staff, never shown in the turn.
                queryset=Message.objects.exclude(status=MessageStatus.SUPERSEDED)
                .select_related("agent")
                .order_by("sequence", "created_at"),
            ),
            Prefetch(
                "messages__tool_calls", queryset=ToolCall.objects.order_by("created_at", "id")
            ),
            Prefetch(
                "context_audits",
                queryset=TurnContextAudit.objects.select_related("agent").order_by("created_at"),
            ),
        )
    )
    totals = _usage_totals([t.id for t in page])
    for turn in page:
        turn.usage_totals = totals.get(turn.id, _EMPTY_TOTALS)  # type: ignore[attr-defined]
    return page


def turn_with_details_from(
    turn: Turn,
    *,
    messages: list[Message],
    audits: list[TurnContextAudit],
    events: list[LlmCallEvent],
) -> Turn:
    """The turn as `turns_with_details` would load it, from the rows its pipeline has just
    written and still holds (agents attached): the 201 body of a turn that was run in this
    request needs no query. The same ordering and the same totals as the database's."""
    for message in messages:  # the tool calls a reply made were attached when they were stored
        message.__dict__.setdefault("_prefetched_objects_cache", {}).setdefault("tool_calls", [])
    turn._prefetched_objects_cache = {  # type: ignore[attr-defined]
        "messages": sorted(messages, key=lambda m: (m.sequence, m.created_at)),
        "context_audits": sorted(audits, key=lambda a: a.created_at),
    }
    turn.usage_totals = (  # type: ignore[attr-defined]
        {
            "input_tokens": sum(e.input_tokens for e in events),
            "output_tokens": sum(e.output_tokens for e in events),
            "oe_tokens": sum((Decimal(e.oe_tokens) for e in events), Decimal(0)).quantize(
                _OE_QUANTUM
            ),
            "credits_burned": sum(e.credits_burned for e in events),
            "calls": len(events),
        }
        if events
        else _EMPTY_TOTALS
    )
    return turn


_EMPTY_TOTALS: dict[str, Any] = {
    "input_tokens": 0,
    "output_tokens": 0,
    "oe_tokens": 0,
    "credits_burned": 0,
    "calls": 0,
}


def _usage_totals(turn_ids: list[UUID]) -> dict[UUID, dict[str, Any]]:
    if not turn_ids:
        return {}
    totals: dict[UUID, dict[str, Any]] = defaultdict(dict)
    rows = (
        LlmCallEvent.objects.filter(turn_id__in=turn_ids)
        .values("turn_id")
        .annotate(
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            oe_tokens=Sum("oe_tokens"),
            credits_burned=Sum("credits_burned"),
            calls=Count("id"),
        )
    )
    for row in rows:
        totals[row.pop("turn_id")] = row
    return totals


def turn_get(*, session_id: UUID, turn_index: int) -> Turn | None:
    page = turns_with_details(Turn.objects.filter(session_id=session_id, turn_index=turn_index))
    return page[0] if page else None


def turn_get_by_id(*, turn_id: UUID) -> Turn:
    return turns_with_details(Turn.objects.filter(pk=turn_id))[0]


def messages_for_session(
    *, session_id: UUID, include_superseded: bool = False
) -> QuerySet[Message]:
    """The session's messages; replies a retry replaced only when asked for."""
    messages = (
        Message.objects.filter(session_id=session_id)
        .select_related("agent", "turn")
        .prefetch_related(
            Prefetch("tool_calls", queryset=ToolCall.objects.order_by("created_at", "id"))
        )
    )
    if not include_superseded:
        messages = messages.exclude(status=MessageStatus.SUPERSEDED)
    return messages


def summary_latest(*, session_id: UUID) -> SessionSummary | None:
    """The newest summary of a session, whatever its status."""
    return (
        SessionSummary.objects.filter(session_id=session_id)
        .order_by("-last_turn_covered", "-created_at")
        .first()
    )


def turn_credits() -> Coalesce:
    """Micro-credits burned by a turn's calls, as a correlated subquery (one query per page)."""
    burned = (
        LlmCallEvent.objects.filter(turn_id=OuterRef("pk"))
        .order_by()
        .values("turn_id")
        .annotate(total=Sum("credits_burned"))
        .values("total")
    )
    return Coalesce(Subquery(burned, output_field=BigIntegerField()), Value(0))


def messages_search(*, session_id: UUID, user_id: Any, query: str, limit: int) -> list[Message]:
    """The session's messages (its owner's, alive; no superseded or failed reply) matching
    `query`, best first: PostgreSQL full-text search (web-search syntax, English stemming),
    else every word contained, newest first (SQLite)."""
    messages = (
        Message.objects.filter(
            session_id=session_id,
            session__deleted_at__isnull=True,
            session__room__owner_id=user_id,
            session__room__deleted_at__isnull=True,
        )
        .exclude(status__in=[MessageStatus.SUPERSEDED, MessageStatus.ERROR])
        .exclude(content="")
        .select_related("agent", "turn")
    )
    if connection.vendor == "postgresql":
        search = SearchQuery(query, config="english", search_type="websearch")
        vector = SearchVector("content", config="english")
        found = messages.annotate(rank=SearchRank(vector, search)).filter(rank__gt=0)
        return list(found.order_by("-rank", "-created_at")[:limit])
    for word in query.split()[:20]:
        messages = messages.filter(content__icontains=word)
    return list(messages.order_by("-created_at")[:limit])


def current_replies(*, turn: Turn) -> dict[UUID, Message]:
    """Each agent's reply in the turn as it stands (not superseded), with its agent."""
    return {
        m.agent_id: m
        for m in Message.objects.filter(turn=turn, role=MessageRole.ASSISTANT)
        .exclude(status=MessageStatus.SUPERSEDED)
        .select_related("agent")
        .order_by("sequence", "created_at")
        if m.agent_id is not None
    }
