"""The messages admin: every message the pipeline stored, with its session, turn and speaker."""

from __future__ import annotations

from django.contrib import admin

from pantheon.admin import ReadOnlyAdmin, admin_link
from sessions.models import Message

EXCERPT_LENGTH = 80


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
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
        return text if len(text) <= EXCERPT_LENGTH else text[: EXCERPT_LENGTH - 1] + "…"
