"""The sessions admin: each session with its latest turns, its summaries and links to the rest of
its records."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from pantheon.admin import (
    RECENT_ROWS,
    DeletedFilter,
    SafeLookupsMixin,
    ScopedChangelistMixin,
    admin_link,
    changelist_link,
    related_table,
)
from pantheon.credits import format_credits
from rooms.models import Room
from sessions.admin.naming import number_in_room
from sessions.models import Session, SessionSummary, Turn
from sessions.selectors import turn_credits


@admin.register(Session)
class SessionAdmin(ScopedChangelistMixin, SafeLookupsMixin, admin.ModelAdmin):
    # `?room=<id>` (a room page's link): the room and its owner are named once, in the heading.
    scope_parameter = "room"
    scope_columns = ("room_link", "owner_link")
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
    # The counter hands out turn numbers under the session's row lock, so concurrent turns never
    # share or skip one: never edited by hand.
    readonly_fields = (
        "id",
        "room_link",
        "owner_link",
        "turn_counter",
        "created_at",
        "updated_at",
        # Deleting is the product's (`session_delete`, through the API), never a date typed here.
        "deleted_at",
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
        return (
            super()
            .get_queryset(request)
            .select_related("room__owner", "created_by")
            .annotate(number_in_room=number_in_room())
        )

    def scope_parent(self, pk: str) -> Room | None:
        return Room.objects.select_related("owner").filter(pk=pk).first()

    def scope_details(self, parent: Room) -> list[str]:
        return [format_html("owner {}", admin_link(parent.owner))]

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
            .annotate(_credits=turn_credits())
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
        table = related_table(
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
        table = related_table(
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
