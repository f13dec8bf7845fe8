"""The messages admin: every message the pipeline stored, with its session, turn and speaker."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.text import Truncator

from pantheon.admin import ReadOnlyAdmin, admin_link, status_with_error
from sessions.admin.naming import SessionScopedMixin, with_numbered_session
from sessions.models import Message

EXCERPT_LENGTH = 80


@admin.register(Message)
class MessageAdmin(SessionScopedMixin, ReadOnlyAdmin):
    # What staff scan; the sequence, the mode and the full text are on the message's page.
    list_display = (
        "created_at",
        "session_link",
        "turn_link",
        "speaker",
        "status_display",
        "excerpt",
    )
    list_select_related = ("turn", "agent")
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

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        return super().get_queryset(request).prefetch_related(with_numbered_session())

    @admin.display(description="session")
    def session_link(self, message: Message) -> str:
        return admin_link(message.session)

    @admin.display(description="turn")
    def turn_link(self, message: Message) -> str:
        return admin_link(message.turn)

    @admin.display(description="agent", ordering="agent__handle")
    def agent_link(self, message: Message) -> str:
        return admin_link(message.agent)

    @admin.display(description="speaker", ordering="agent__handle")
    def speaker(self, message: Message) -> str:
        """The agent who replied, or the role of a message without one (the user's input)."""
        return admin_link(message.agent) if message.agent_id else message.get_role_display()

    @admin.display(description="status", ordering="status")
    def status_display(self, message: Message) -> str:
        return status_with_error(message.get_status_display(), message.error_code)

    @admin.display(description="content")
    def excerpt(self, message: Message) -> str:
        return Truncator(message.content or message.error_message).chars(EXCERPT_LENGTH)
