"""The turns admin: each turn with its messages in order, its routing decision, its tool calls,
its context audits, its call events and the credits they burned."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from pantheon.admin import (
    ReadOnlyAdmin,
    ReadOnlyInline,
    admin_link,
    change_link,
    changelist_link,
    related_table,
    status_with_error,
)
from pantheon.credits import format_credits
from sessions import selectors
from sessions.admin.naming import SessionScopedMixin, with_numbered_session
from sessions.models import Message, ToolCall, Turn, TurnContextAudit
from usage.models import LlmCallEvent

INPUT_EXCERPT_LENGTH = 60
# A tool call's arguments and result on the turn page: the start of each (all on its own page).
TOOL_EXCERPT_LENGTH = 40
# The tool calls a turn's page lists; the changelist of the turn's tool calls has them all.
TOOL_CALLS_SHOWN = 100


class MessageInline(ReadOnlyInline):
    """A turn's messages in order: the user's input (0), then each speaker's reply."""

    model = Message
    fk_name = "turn"
    fields = ("sequence", "role", "agent", "status", "error_code", "error_message", "content")
    readonly_fields = fields
    ordering = ("sequence", "created_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        return super().get_queryset(request).select_related("agent")


class TurnContextAuditInline(ReadOnlyInline):
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
class TurnAdmin(SessionScopedMixin, ReadOnlyAdmin):
    # What staff scan; the room, the mode and the routing are on the turn's page.
    list_display = (
        "__str__",
        "session_link",
        "owner_link",
        "input_excerpt",
        "status_display",
        "credits",
        "created_at",
    )
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
        (
            "Turn control",
            {
                "fields": ("cancel_requested_at", "cancel_requested_by"),
                "description": "A cancel asked for through the API: when, and by which key or "
                "user (a retry clears it: this is the latest run's). Replies a retry replaced "
                "are listed below as superseded.",
            },
        ),
        (
            "Tool calls",
            {
                "fields": ("tool_calls_table",),
                "description": "The tools the agents called while replying, in order; each "
                "call's arguments and result are on its page.",
            },
        ),
        ("Calls and credits", {"fields": ("credits", "call_events")}),
    )
    readonly_fields = (
        "session_link",
        "room_link",
        "owner_link",
        "tool_calls_table",
        "credits",
        "call_events",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Turn]:
        return (
            super()
            .get_queryset(request)
            .prefetch_related(with_numbered_session())
            .annotate(_credits=selectors.turn_credits())
        )

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> HttpResponse:
        turn = context.get("original")
        if turn is not None:  # the heading names the turn within its session
            context["subtitle"] = f"{turn} of {turn.session}"
        return super().render_change_form(request, context, *args, **kwargs)

    @admin.display(description="session", ordering="session__title")
    def session_link(self, turn: Turn) -> str:
        return admin_link(turn.session)

    @admin.display(description="room")
    def room_link(self, turn: Turn) -> str:
        return admin_link(turn.session.room)

    @admin.display(description="owner", ordering="session__room__owner__email")
    def owner_link(self, turn: Turn) -> str:
        return admin_link(turn.session.room.owner)

    @admin.display(description="input")
    def input_excerpt(self, turn: Turn) -> str:
        return Truncator(turn.user_input).chars(INPUT_EXCERPT_LENGTH)

    @admin.display(description="status", ordering="status")
    def status_display(self, turn: Turn) -> str:
        return status_with_error(turn.get_status_display(), turn.error_code)

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
        return related_table(
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

    @admin.display(description="tool calls")
    def tool_calls_table(self, turn: Turn) -> SafeString:
        """The turn's tool calls in the order they were made, one query; past TOOL_CALLS_SHOWN
        the changelist of the turn's tool calls has the rest."""
        calls = list(
            ToolCall.objects.filter(turn_id=turn.pk)
            .select_related("agent")
            .order_by("created_at", "id")[: TOOL_CALLS_SHOWN + 1]
        )
        rows = [
            (
                change_link("chat_sessions_toolcall", c.pk, c.name),
                admin_link(c.agent),
                c.round,
                status_with_error(c.get_status_display(), c.error),
                f"{c.latency_ms} ms",
                Truncator(c.arguments).chars(TOOL_EXCERPT_LENGTH),
                Truncator(c.result).chars(TOOL_EXCERPT_LENGTH),
            )
            for c in calls[:TOOL_CALLS_SHOWN]
        ]
        table = related_table(
            ("tool", "agent", "round", "status", "latency", "arguments", "result"),
            rows,
            "No tool calls.",
        )
        label = "all tool calls of this turn"
        if len(calls) > TOOL_CALLS_SHOWN:
            label = f"the first {TOOL_CALLS_SHOWN} are shown: {label}"
        more = changelist_link("chat_sessions_toolcall", label, turn=turn.pk)
        return format_html("{}<p>{}</p>", table, more)
