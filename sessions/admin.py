"""Staff admin for sessions. The changelist loads rooms and owners with the page, so its query
count does not grow with the rows shown."""

from __future__ import annotations

from django.contrib import admin

from rooms.admin import DeletedFilter, admin_link
from sessions.models import Session


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "room_link",
        "owner_link",
        "turn_counter",
        "created_at",
        "deleted_at",
    )
    list_select_related = ("room", "created_by")
    list_filter = (DeletedFilter,)
    search_fields = ("title", "room__name", "created_by__email")
    raw_id_fields = ("room", "created_by")
    # The counter allocates turn numbers under a row lock (F36): never edited by hand.
    readonly_fields = ("id", "turn_counter", "created_at", "updated_at")
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="room", ordering="room__name")
    def room_link(self, session: Session) -> str:
        return admin_link(session.room)

    @admin.display(description="owner", ordering="created_by__email")
    def owner_link(self, session: Session) -> str:
        return admin_link(session.created_by)
