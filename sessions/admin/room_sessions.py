"""The rooms admin, plus each room's latest sessions and its spending limits."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from pantheon.admin import (
    RECENT_ROWS,
    admin_link,
    change_link,
    changelist_link,
    related_table,
)
from pantheon.credits import format_credits
from rooms.admin import RoomAdmin
from rooms.models import Room
from rooms.selectors import room_is_owned
from sessions.admin.naming import numbered_sessions
from usage.admin import use_room_check
from usage.models import LimitScope, SpendingLimit
from usage.selectors import limit_states

admin.site.unregister(Room)

# A room limit staff set in the usage admin must be on one of its user's rooms: rooms answer.
use_room_check(room_is_owned)


@admin.register(Room)
class RoomWithSessionsAdmin(RoomAdmin):
    """The rooms admin, plus the room's latest sessions and its spending limits. Registered here
    because sessions depend on rooms and usage, never the other way round."""

    readonly_fields = (
        *RoomAdmin.readonly_fields,
        "owner_link",
        "recent_sessions",
        "spending_limits",
    )

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

    @admin.display(description="spending limits")
    def spending_limits(self, room: Room) -> SafeString:
        """The limits on this room, where each stands in its current window (two queries), and
        a link to add one for the room's owner."""
        if room._state.adding:  # the add page: a new room has no limits
            return SafeString("-")
        limits = list(
            SpendingLimit.objects.filter(scope=LimitScope.ROOM, room_id=room.pk).order_by(
                "window", "created_at", "id"
            )
        )
        rows = [
            (
                change_link(
                    "usage_spendinglimit", state.limit.pk, state.limit.get_window_display()
                ),
                format_credits(state.limit.limit_micro),
                format_credits(state.spent_micro),
                format_credits(state.remaining_micro),
                state.resets_at,
                "yes" if state.limit.set_by_staff else "no",
            )
            for state in limit_states(limits, now=timezone.now(), with_reserved=False)
        ]
        table = related_table(
            ("window", "limit", "spent", "remaining", "resets at", "set by staff"),
            rows,
            "No spending limits on this room.",
        )
        query = urlencode({"scope": LimitScope.ROOM, "room_id": room.pk, "user": room.owner_id})
        add_url = f"{reverse('admin:usage_spendinglimit_add')}?{query}"
        add = format_html('<a href="{}">add a limit for this room</a>', add_url)
        return format_html("{}<p>{}</p>", table, add)
