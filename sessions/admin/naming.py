"""How the console names sessions, and the changelists narrowed to one session.

An untitled session is "Session N of <room>", N its place among the room's sessions by creation
(deleted ones included, so a name never changes). N is an annotation — a correlated count the
(room, created_at) index answers — loaded with the page, never a query per row; `Session.__str__`
reads it. Every admin that shows sessions loads them through `numbered_sessions`.
"""

from __future__ import annotations

from django.db.models import Count, IntegerField, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.utils.html import format_html

from pantheon.admin import ScopedChangelistMixin, admin_link
from sessions.models import Session


def number_in_room() -> Subquery:
    """For a queryset of sessions: how many sessions of each one's room were created before it,
    itself included (ties on `created_at` broken by id)."""
    earlier_or_same = Session.objects.filter(room=OuterRef("room")).filter(
        Q(created_at__lt=OuterRef("created_at"))
        | Q(created_at=OuterRef("created_at"), id__lte=OuterRef("id"))
    )
    count = earlier_or_same.order_by().values("room").annotate(n=Count("id")).values("n")
    return Subquery(count, output_field=IntegerField())


def numbered_sessions() -> QuerySet[Session]:
    """Sessions with `number_in_room` (what their `__str__` shows when untitled), their room and
    its owner, and their creator."""
    return Session.objects.select_related("room__owner", "created_by").annotate(
        number_in_room=number_in_room()
    )


def with_numbered_session(lookup: str = "session") -> Prefetch:
    """The sessions of a page's rows, numbered, in one query for the whole page."""
    return Prefetch(lookup, queryset=numbered_sessions())


class SessionScopedMixin(ScopedChangelistMixin):
    """`?session=<id>` (the links of a session's page): the session, its room and its owner are
    named once in the heading, and their columns are left out of the rows."""

    scope_parameter = "session"
    scope_columns = ("session_link", "room_link", "owner_link")

    def scope_parent(self, pk: str) -> Session | None:
        return numbered_sessions().filter(pk=pk).first()

    def scope_details(self, parent: Session) -> list[str]:
        return [
            format_html("room {}", admin_link(parent.room)),
            format_html("owner {}", admin_link(parent.room.owner)),
        ]
