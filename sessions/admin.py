"""Staff admin for sessions, turns, messages, summaries and context audits.

Navigation follows the data: a room lists its sessions (and agents), a session its turns (newest
first) and summaries, a turn its messages in order, its routing decision, its context audits, its
call events and its credits; every row links to its neighbours and to its owner. Turns, messages,
summaries and audits are records the pipeline writes: read-only here.

Speed: every changelist loads related rows with the page (`list_select_related`, annotations) and
every change page reads each related list in one query, so the number of queries does not grow
with the rows shown. Call events live in `usage` and name turns by a plain UUID column: a turn's
events are one query on `turn_id`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import connection
from django.db.models import BigIntegerField, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from pantheon.admin import SafeLookupsMixin
from rooms.admin import DeletedFilter, RoomAdmin, admin_link
from rooms.models import Room
from sessions.models import Message, Session, SessionSummary, Turn, TurnContextAudit
from usage.admin import change_link, changelist_link
from usage.models import LlmCallEvent
from usage.selectors import format_credits

# How many related rows a change page lists before it links to the full changelist.
RECENT_ROWS = 20
AUDIT_ACTIONS = ("summary_requested", "summary_used", "pruned", "summary_dropped", "rejected")


class _ReadOnlyAdmin(SafeLookupsMixin, admin.ModelAdmin):
    """Records the turn pipeline writes: staff look, nobody edits."""

    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]], empty: str) -> SafeString:
    """A small read-only HTML table for a change page (cells are escaped unless safe)."""
    if not rows:
        return format_html("<p>{}</p>", empty)
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows),
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)


def _tokens_delta(estimated: int, reported: int | None) -> str:
    """Provider-reported minus estimated prompt tokens, with the relative error."""
    if reported is None:
        return "-"
    delta = reported - estimated
    relative = f" ({delta / estimated:+.1%})" if estimated else ""
    return f"{delta:+d}{relative}"


def _credits_subquery() -> Coalesce:
    """Micro-credits burned by a turn's calls, as a correlated subquery (one query per page)."""
    burned = (
        LlmCallEvent.objects.filter(turn_id=OuterRef("pk"))
        .order_by()
        .values("turn_id")
        .annotate(total=Sum("credits_burned"))
        .values("total")
    )
    return Coalesce(Subquery(burned, output_field=BigIntegerField()), Value(0))


# --- rooms: their sessions --------------------------------------------------------------------


admin.site.unregister(Room)


@admin.register(Room)
class RoomWithSessionsAdmin(RoomAdmin):
    """The rooms admin, plus the room's latest sessions. Registered here because sessions
    depend on rooms, never the other way round."""

    readonly_fields = (*RoomAdmin.readonly_fields, "owner_link", "recent_sessions")

    @admin.display(description="sessions (newest first)")
    def recent_sessions(self, room: Room) -> SafeString:
        if room._state.adding:  # the add page: a new room has no sessions
            return SafeString("-")
        sessions = list(
            Session.objects.filter(room=room)
            .select_related("created_by")
            .order_by("-created_at")[:RECENT_ROWS]
        )
        rows = [
            (
                admin_link(s),
                s.turn_counter,
                admin_link(s.created_by),
                s.created_at,
                "deleted" if s.deleted_at else "",
            )
            for s in sessions
        ]
        table = _table(("session", "turns", "created by", "created", ""), rows, "No sessions.")
        more = changelist_link("chat_sessions_session", "all sessions of this room", room=room.pk)
        return format_html("{}<p>{}</p>", table, more)


# --- sessions ---------------------------------------------------------------------------------


@admin.register(Session)
class SessionAdmin(SafeLookupsMixin, admin.ModelAdmin):
    list_display = (
        "__str__",
        "room_link",
        "owner_link",
        "turn_counter",
        "created_at",
        "deleted_at",
    )
    list_select_related = ("room__owner", "created_by")
    list_filter = (DeletedFilter,)
    search_fields = ("=id", "title", "room__name", "created_by__email")
    raw_id_fields = ("room", "created_by")
    # The counter allocates turn numbers under a row lock (F36): never edited by hand.
    readonly_fields = (
        "id",
        "room_link",
        "owner_link",
        "turn_counter",
        "created_at",
        "updated_at",
        "recent_turns",
        "summaries",
        "related",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "title",
                    "room",
                    "room_link",
                    "created_by",
                    "owner_link",
                    "turn_counter",
                    "created_at",
                    "updated_at",
                    "deleted_at",
                )
            },
        ),
        ("Turns (newest first)", {"fields": ("recent_turns",)}),
        ("Summaries", {"fields": ("summaries",)}),
        ("Related records", {"fields": ("related",)}),
    )
    date_hierarchy = "created_at"
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Session]:
        return super().get_queryset(request).select_related("room__owner", "created_by")

    @admin.display(description="room", ordering="room__name")
    def room_link(self, session: Session) -> str:
        return admin_link(session.room)

    @admin.display(description="room owner", ordering="room__owner__email")
    def owner_link(self, session: Session) -> str:
        return admin_link(session.room.owner)

    @admin.display(description="turns")
    def recent_turns(self, session: Session) -> SafeString:
        turns = list(
            Turn.objects.filter(session=session)
            .annotate(_credits=_credits_subquery())
            .order_by("-turn_index")[:RECENT_ROWS]
        )
        rows = [
            (
                admin_link(t),
                t.mode,
                t.status,
                t.error_code,
                format_credits(t._credits),  # type: ignore[attr-defined]
                t.created_at,
            )
            for t in turns
        ]
        table = _table(
            ("turn", "mode", "status", "error", "credits", "created"), rows, "No turns yet."
        )
        more = changelist_link("chat_sessions_turn", "all turns", session=session.pk)
        return format_html("{}<p>{}</p>", table, more)

    @admin.display(description="summaries")
    def summaries(self, session: Session) -> SafeString:
        summaries = list(
            SessionSummary.objects.filter(session=session).order_by("-last_turn_covered")[
                :RECENT_ROWS
            ]
        )
        rows = [
            (admin_link(s), s.last_turn_covered, s.status, s.model, s.error_code, s.created_at)
            for s in summaries
        ]
        table = _table(
            ("summary", "covers to turn", "status", "model", "error", "created"),
            rows,
            "No summaries.",
        )
        more = changelist_link("chat_sessions_sessionsummary", "all summaries", session=session.pk)
        return format_html("{}<p>{}</p>", table, more)

    @admin.display(description="records")
    def related(self, session: Session) -> SafeString:
        return format_html(
            "{} · {} · {}",
            changelist_link("chat_sessions_message", "messages", session=session.pk),
            changelist_link("chat_sessions_turncontextaudit", "context audits", session=session.pk),
            changelist_link("usage_llmcallevent", "call events", session_id=session.pk),
        )


# --- turns ------------------------------------------------------------------------------------


class MessageInline(_ReadOnlyInline):
    """A turn's messages in order: the user's input (0), then each speaker's reply."""

    model = Message
    fk_name = "turn"
    fields = ("sequence", "role", "agent", "status", "error_code", "error_message", "content")
    readonly_fields = fields
    ordering = ("sequence",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        return super().get_queryset(request).select_related("agent")


class TurnContextAuditInline(_ReadOnlyInline):
    """What the context guardrail did for each call of the turn."""

    model = TurnContextAudit
    fk_name = "turn"
    fields = (
        "agent",
        "purpose",
        "model",
        "input_budget",
        "estimated_tokens_final",
        "provider_prompt_tokens",
        "actions",
        "outcome",
    )
    readonly_fields = fields
    ordering = ("created_at",)
    verbose_name_plural = "context audits"

    def get_queryset(self, request: HttpRequest) -> QuerySet[TurnContextAudit]:
        return super().get_queryset(request).select_related("agent")


@admin.register(Turn)
class TurnAdmin(_ReadOnlyAdmin):
    list_display = (
        "__str__",
        "session_link",
        "room_link",
        "owner_link",
        "mode",
        "status",
        "error_code",
        "credits",
        "created_at",
    )
    list_select_related = ("session__room__owner",)
    list_filter = ("status", "mode", "fallback_used")
    search_fields = ("=id", "=session__id", "session__title", "session__room__owner__email")
    raw_id_fields = ("session",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    inlines = (MessageInline, TurnContextAuditInline)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "session_link",
                    "room_link",
                    "owner_link",
                    "turn_index",
                    "mode",
                    "status",
                    "error_code",
                    "created_at",
                    "completed_at",
                )
            },
        ),
        ("Input and output", {"fields": ("user_input", "assistant_output")}),
        (
            "Routing decision",
            {
                "fields": (
                    "routing_selected",
                    "routing_reason",
                    "fallback_used",
                    "fallback_reason",
                )
            },
        ),
        ("Calls and credits", {"fields": ("credits", "call_events")}),
    )
    readonly_fields = ("session_link", "room_link", "owner_link", "credits", "call_events")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Turn]:
        return (
            super()
            .get_queryset(request)
            .select_related("session__room__owner")
            .annotate(_credits=_credits_subquery())
        )

    @admin.display(description="session", ordering="session__title")
    def session_link(self, turn: Turn) -> str:
        return admin_link(turn.session)

    @admin.display(description="room")
    def room_link(self, turn: Turn) -> str:
        return admin_link(turn.session.room)

    @admin.display(description="owner", ordering="session__room__owner__email")
    def owner_link(self, turn: Turn) -> str:
        return admin_link(turn.session.room.owner)

    @admin.display(description="credits", ordering="_credits")
    def credits(self, turn: Turn) -> str:
        return format_credits(turn._credits)  # type: ignore[attr-defined]

    @admin.display(description="call events")
    def call_events(self, turn: Turn) -> SafeString:
        events = LlmCallEvent.objects.filter(turn_id=turn.pk).order_by("created_at", "id")
        rows = [
            (
                change_link("usage_llmcallevent", e.pk, e.purpose),
                e.model,
                e.status,
                e.error_code,
                e.latency_ms,
                e.input_tokens,
                e.output_tokens,
                e.oe_tokens,
                format_credits(e.credits_burned),
            )
            for e in events
        ]
        return _table(
            (
                "call",
                "model",
                "status",
                "error",
                "latency ms",
                "input tokens",
                "output tokens",
                "OE tokens",
                "credits",
            ),
            rows,
            "No calls.",
        )


# --- messages ---------------------------------------------------------------------------------


@admin.register(Message)
class MessageAdmin(_ReadOnlyAdmin):
    list_display = (
        "created_at",
        "session_link",
        "turn_link",
        "sequence",
        "role",
        "agent_link",
        "status",
        "error_code",
        "excerpt",
    )
    list_select_related = ("session", "turn", "agent")
    list_filter = ("role", "status", "mode")
    search_fields = ("=session__id", "=turn__id", "agent__handle", "error_code")
    raw_id_fields = ("session", "turn", "agent")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-sequence")
    readonly_fields = ("session_link", "turn_link", "agent_link")
    fields = (
        "id",
        "session_link",
        "turn_link",
        "sequence",
        "role",
        "agent_link",
        "mode",
        "status",
        "error_code",
        "error_message",
        "content",
        "created_at",
    )

    @admin.display(description="session")
    def session_link(self, message: Message) -> str:
        return admin_link(message.session)

    @admin.display(description="turn")
    def turn_link(self, message: Message) -> str:
        return admin_link(message.turn)

    @admin.display(description="agent", ordering="agent__handle")
    def agent_link(self, message: Message) -> str:
        return admin_link(message.agent)

    @admin.display(description="content")
    def excerpt(self, message: Message) -> str:
        text = message.content or message.error_message
        return text if len(text) <= 80 else text[:79] + "…"


# --- summaries --------------------------------------------------------------------------------


@admin.register(SessionSummary)
class SessionSummaryAdmin(_ReadOnlyAdmin):
    list_display = (
        "__str__",
        "session_link",
        "last_turn_covered",
        "status",
        "model",
        "attempts",
        "error_code",
        "created_at",
        "completed_at",
    )
    list_select_related = ("session",)
    list_filter = ("status", "model")
    search_fields = ("=session__id", "session__title")
    raw_id_fields = ("session", "requested_by_turn")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = ("session_link", "requested_by_link", "call_event_link")
    fields = (
        "id",
        "session_link",
        "last_turn_covered",
        "status",
        "model",
        "attempts",
        "error_code",
        "summary_text",
        "key_facts",
        "decisions",
        "open_questions",
        "action_items",
        "requested_by_link",
        "call_event_link",
        "created_at",
        "updated_at",
        "completed_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[SessionSummary]:
        return super().get_queryset(request).select_related("session", "requested_by_turn")

    @admin.display(description="session")
    def session_link(self, summary: SessionSummary) -> str:
        return admin_link(summary.session)

    @admin.display(description="requested by")
    def requested_by_link(self, summary: SessionSummary) -> str:
        return admin_link(summary.requested_by_turn)

    @admin.display(description="call event")
    def call_event_link(self, summary: SessionSummary) -> str:
        return change_link("usage_llmcallevent", summary.call_event_id, summary.call_event_id)


# --- context audits ---------------------------------------------------------------------------


class AuditActionFilter(admin.SimpleListFilter):
    """Audits whose `actions` list contains an action (summarized, pruned, rejected…)."""

    title = "action"
    parameter_name = "action"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(action, action.replace("_", " ")) for action in AUDIT_ACTIONS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[TurnContextAudit]) -> Any:
        action = self.value()
        if action not in AUDIT_ACTIONS:
            return queryset
        if connection.features.supports_json_field_contains:
            return queryset.filter(actions__contains=[action])
        # SQLite has no JSON containment: match the quoted name in the stored JSON text.
        return queryset.filter(actions__icontains=f'"{action}"')


@admin.register(TurnContextAudit)
class TurnContextAuditAdmin(_ReadOnlyAdmin):
    list_display = (
        "created_at",
        "session_link",
        "turn_link",
        "agent",
        "purpose",
        "model",
        "outcome",
        "actions_list",
        "input_budget",
        "estimated_tokens_final",
        "provider_prompt_tokens",
        "difference",
    )
    list_select_related = ("session", "turn", "agent")
    list_filter = ("outcome", AuditActionFilter, "model", "purpose")
    search_fields = ("=session__id", "=turn__id", "agent__handle", "model")
    raw_id_fields = ("session", "turn", "agent", "summary_used")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = (
        "session_link",
        "turn_link",
        "owner_link",
        "summary_link",
        "call_event_link",
        "difference",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "session_link",
                    "turn_link",
                    "owner_link",
                    "agent",
                    "purpose",
                    "model",
                    "outcome",
                    "actions",
                    "created_at",
                )
            },
        ),
        (
            "Budget",
            {"fields": ("model_limit", "output_reserve", "input_budget")},
        ),
        (
            "Estimate versus provider",
            {
                "fields": (
                    "estimated_tokens_initial",
                    "estimated_tokens_after_summarize",
                    "estimated_tokens_after_prune",
                    "estimated_tokens_final",
                    "provider_prompt_tokens",
                    "difference",
                )
            },
        ),
        (
            "Context",
            {"fields": ("turns_pruned", "summary_link", "call_event_link")},
        ),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[TurnContextAudit]:
        return (
            super()
            .get_queryset(request)
            .select_related("session__room__owner", "turn", "agent", "summary_used")
        )

    @admin.display(description="session")
    def session_link(self, audit: TurnContextAudit) -> str:
        return admin_link(audit.session)

    @admin.display(description="turn")
    def turn_link(self, audit: TurnContextAudit) -> str:
        # A rejected request never became a turn.
        return admin_link(audit.turn) if audit.turn_id else "- (rejected before a turn)"

    @admin.display(description="room owner")
    def owner_link(self, audit: TurnContextAudit) -> str:
        return admin_link(audit.session.room.owner)

    @admin.display(description="summary used")
    def summary_link(self, audit: TurnContextAudit) -> str:
        return admin_link(audit.summary_used)

    @admin.display(description="call event")
    def call_event_link(self, audit: TurnContextAudit) -> str:
        return change_link("usage_llmcallevent", audit.call_event_id, audit.call_event_id)

    @admin.display(description="actions")
    def actions_list(self, audit: TurnContextAudit) -> str:
        return ", ".join(audit.actions) or "-"

    @admin.display(description="provider minus estimate")
    def difference(self, audit: TurnContextAudit) -> str:
        return _tokens_delta(audit.estimated_tokens_final, audit.provider_prompt_tokens)
