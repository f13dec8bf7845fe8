"""The tool calls admin: every tool call a model made during an agent's reply, as Pantheon ran it —
when, which tool, how it ended, for which agent in which turn, and how long it took. Its page
shows the arguments the model sent (pretty-printed when they are JSON) and the result the model
got back, both as text. Records the pipeline writes: read-only here.

`?turn=<id>` (the link of a turn's page) names the turn once, in the heading."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from pantheon.admin import (
    EMPTY,
    ReadOnlyAdmin,
    ScopedChangelistMixin,
    admin_link,
    status_with_error,
)
from sessions.admin.naming import with_numbered_session
from sessions.models import ToolCall, Turn

# How many tool names the name filter offers (the most a page of filters stays readable with).
NAME_CHOICES = 100


def pretty_arguments(arguments: str) -> str:
    """The arguments a model sent, indented when they parse as JSON, else as the model sent
    them."""
    try:
        parsed = json.loads(arguments)
    except (ValueError, RecursionError):  # not JSON, or nested past what the parser follows
        return arguments
    return json.dumps(parsed, indent=2, ensure_ascii=False)


def preformatted(text: str) -> SafeString:
    """Text shown as is (escaped), in a block that keeps its lines; "-" when empty."""
    if not text:
        return format_html("{}", EMPTY)
    return format_html('<pre class="tool-call-text">{}</pre>', text)


class ToolNameFilter(admin.SimpleListFilter):
    """The tool called; the names offered are those of the stored calls, in one query (an
    index-only scan of the (name, created_at) index)."""

    title = "tool"
    parameter_name = "name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = (ToolCall.objects.order_by("name").values_list("name", flat=True).distinct())[
            :NAME_CHOICES
        ]
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ToolCall]) -> Any:
        if self.value():
            return queryset.filter(name=self.value())
        return queryset


@admin.register(ToolCall)
class ToolCallAdmin(ScopedChangelistMixin, ReadOnlyAdmin):
    # What staff scan; the round, the call id, the arguments and the result are on the call's page.
    list_display = (
        "created_at",
        "name",
        "status_display",
        "agent_link",
        "turn_link",
        "latency",
    )
    list_display_links = ("created_at", "name")
    list_select_related = ("turn", "agent")
    list_filter = ("status", ToolNameFilter)
    search_fields = ("name", "=call_id")
    raw_id_fields = ("turn", "message", "agent")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    scope_parameter = "turn"
    scope_columns = ("turn_link",)
    readonly_fields = (
        "turn_link",
        "session_link",
        "message_link",
        "agent_link",
        "latency",
        "arguments_display",
        "result_display",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "name",
                    "status",
                    "error",
                    "latency",
                    "created_at",
                )
            },
        ),
        (
            "Where",
            {
                "fields": (
                    "turn_link",
                    "session_link",
                    "agent_link",
                    "message_link",
                    "round",
                    "call_id",
                )
            },
        ),
        ("Arguments", {"fields": ("arguments_display",)}),
        (
            "Result",
            {
                "fields": ("result_display",),
                "description": "What the model got back, cut to TOOL_RESULT_MAX_CHARS.",
            },
        ),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[ToolCall]:
        return (
            super()
            .get_queryset(request)
            .select_related("turn", "agent", "message")
            .prefetch_related(with_numbered_session("turn__session"))
        )

    # --- narrowed to one turn --------------------------------------------------------------------

    def scope_parent(self, pk: str) -> Turn | None:
        return Turn.objects.prefetch_related(with_numbered_session()).filter(pk=pk).first()

    def scope_details(self, parent: Turn) -> list[str]:
        return [
            format_html("session {}", admin_link(parent.session)),
            format_html("room {}", admin_link(parent.session.room)),
        ]

    # --- columns and fields -----------------------------------------------------------------------

    @admin.display(description="status", ordering="status")
    def status_display(self, call: ToolCall) -> str:
        return status_with_error(call.get_status_display(), call.error)

    @admin.display(description="agent", ordering="agent__handle")
    def agent_link(self, call: ToolCall) -> str:
        return admin_link(call.agent)

    @admin.display(description="turn")
    def turn_link(self, call: ToolCall) -> str:
        """The turn, and under it the session it belongs to ("Turn 3" alone names no turn)."""
        return format_html(
            '{}<br><span class="quiet">{}</span>', admin_link(call.turn), call.turn.session
        )

    @admin.display(description="session")
    def session_link(self, call: ToolCall) -> str:
        return admin_link(call.turn.session)

    @admin.display(description="message")
    def message_link(self, call: ToolCall) -> str:
        return admin_link(call.message)

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, call: ToolCall) -> str:
        return f"{call.latency_ms} ms"

    @admin.display(description="arguments")
    def arguments_display(self, call: ToolCall) -> SafeString:
        return preformatted(pretty_arguments(call.arguments))

    @admin.display(description="result")
    def result_display(self, call: ToolCall) -> SafeString:
        return preformatted(call.result)
