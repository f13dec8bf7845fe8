"""The rooms admin, plus each room's latest sessions."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString

from pantheon.admin import RECENT_ROWS, admin_link, changelist_link, related_table
from rooms.admin import RoomAdmin
from rooms.models import Room
from sessions.admin.naming import numbered_sessions

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
        sessions = list(numbered_sessions().filter(room=room).order_by("-created_at")[:RECENT_ROWS])
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
        table = related_table(
            ("session", "turns", "created by", "created", ""), rows, "No sessions."
        )
        more = changelist_link("chat_sessions_session", "all sessions of this room", room=room.pk)
        return format_html("{}<p>{}</p>", table, more)
