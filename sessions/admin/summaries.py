"""The session summaries admin: each summary with what it covers, its status and the call that
wrote it."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from pantheon.admin import ReadOnlyAdmin, admin_link, change_link, status_with_error
from sessions.admin.naming import SessionScopedMixin, with_numbered_session
from sessions.models import SessionSummary


@admin.register(SessionSummary)
class SessionSummaryAdmin(SessionScopedMixin, ReadOnlyAdmin):
    # What staff scan (the summary names the turn it covers to); the attempts and the completion
    # time are on the summary's page.
    list_display = ("__str__", "session_link", "status_display", "model", "created_at")
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
        return (
            super()
            .get_queryset(request)
            .select_related("requested_by_turn")
            .prefetch_related(with_numbered_session())
        )

    @admin.display(description="session")
    def session_link(self, summary: SessionSummary) -> str:
        return admin_link(summary.session)

    @admin.display(description="status", ordering="status")
    def status_display(self, summary: SessionSummary) -> str:
        return status_with_error(summary.get_status_display(), summary.error_code)

    @admin.display(description="requested by")
    def requested_by_link(self, summary: SessionSummary) -> str:
        return admin_link(summary.requested_by_turn)

    @admin.display(description="call event")
    def call_event_link(self, summary: SessionSummary) -> str:
        return change_link("usage_llmcallevent", summary.call_event_id, summary.call_event_id)
