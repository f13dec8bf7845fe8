"""The context audits admin: what the context guardrail did for each call — its budget, the
estimates before and after summarizing and pruning, and how far off the estimate was from the
provider's count."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from llm.budget import PRUNED, REJECTED, SUMMARY_DROPPED, SUMMARY_REQUESTED, SUMMARY_USED
from pantheon.admin import ReadOnlyAdmin, admin_link, change_link
from sessions.admin.naming import SessionScopedMixin, with_numbered_session
from sessions.models import TurnContextAudit

# What the budget cascade can record in an audit's `actions`, in the order it records them.
AUDIT_ACTIONS = (SUMMARY_REQUESTED, SUMMARY_USED, PRUNED, SUMMARY_DROPPED, REJECTED)


def _tokens_delta(estimated: int, reported: int | None) -> str:
    """Provider-reported minus estimated prompt tokens, with the relative error."""
    if reported is None:
        return "-"
    delta = reported - estimated
    relative = f" ({delta / estimated:+.1%})" if estimated else ""
    return f"{delta:+d}{relative}"


class AuditActionFilter(admin.SimpleListFilter):
    """Audits whose `actions` list contains an action (summarized, pruned, rejected…)."""

    title = "action"
    parameter_name = "action"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(action, action.replace("_", " ")) for action in AUDIT_ACTIONS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[TurnContextAudit]) -> Any:
        action = self.value()
        if action not in AUDIT_ACTIONS:
            return queryset
        if connection.features.supports_json_field_contains:
            return queryset.filter(actions__contains=[action])
        # SQLite has no JSON containment: match the quoted name in the stored JSON text.
        return queryset.filter(actions__icontains=f'"{action}"')


@admin.register(TurnContextAudit)
class TurnContextAuditAdmin(SessionScopedMixin, ReadOnlyAdmin):
    # What staff scan: where, which model, what the guardrail did, and the estimate next to the
    # provider's count. The purpose, the outcome (a rejection is also an action) and the budget
    # are on the audit's page.
    list_display = (
        "created_at",
        "session_link",
        "turn_link",
        "agent",
        "model",
        "actions_list",
        "tokens_compared",
    )
    list_select_related = ("turn", "agent")
    list_filter = ("outcome", AuditActionFilter, "model", "purpose")
    search_fields = ("=session__id", "=turn__id", "agent__handle", "model")
    raw_id_fields = ("session", "turn", "agent", "summary_used")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = (
        "session_link",
        "turn_link",
        "owner_link",
        "summary_link",
        "call_event_link",
        "difference",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "session_link",
                    "turn_link",
                    "owner_link",
                    "agent",
                    "purpose",
                    "model",
                    "outcome",
                    "actions",
                    "created_at",
                )
            },
        ),
        (
            "Budget",
            {"fields": ("model_limit", "output_reserve", "input_budget")},
        ),
        (
            "Estimate versus provider",
            {
                "fields": (
                    "estimated_tokens_initial",
                    "estimated_tokens_after_summarize",
                    "estimated_tokens_after_prune",
                    "estimated_tokens_final",
                    "provider_prompt_tokens",
                    "difference",
                )
            },
        ),
        (
            "Context",
            {"fields": ("turns_pruned", "summary_link", "call_event_link")},
        ),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[TurnContextAudit]:
        return (
            super()
            .get_queryset(request)
            .select_related("turn", "agent", "summary_used")
            .prefetch_related(with_numbered_session())
        )

    @admin.display(description="session")
    def session_link(self, audit: TurnContextAudit) -> str:
        return admin_link(audit.session)

    @admin.display(description="turn")
    def turn_link(self, audit: TurnContextAudit) -> str:
        # A rejected request never became a turn.
        return admin_link(audit.turn) if audit.turn_id else "- (rejected before a turn)"

    @admin.display(description="room owner")
    def owner_link(self, audit: TurnContextAudit) -> str:
        return admin_link(audit.session.room.owner)

    @admin.display(description="summary used")
    def summary_link(self, audit: TurnContextAudit) -> str:
        return admin_link(audit.summary_used)

    @admin.display(description="call event")
    def call_event_link(self, audit: TurnContextAudit) -> str:
        return change_link("usage_llmcallevent", audit.call_event_id, audit.call_event_id)

    @admin.display(description="actions")
    def actions_list(self, audit: TurnContextAudit) -> str:
        return ", ".join(audit.actions) or "-"

    @admin.display(description="prompt tokens: estimate → provider")
    def tokens_compared(self, audit: TurnContextAudit) -> str:
        """The estimated prompt tokens sent next to the provider's count, and under them how far
        off the estimate was."""
        reported = audit.provider_prompt_tokens
        return format_html(
            '{} → {}<br><span class="quiet">{}</span>',
            audit.estimated_tokens_final,
            "-" if reported is None else reported,
            _tokens_delta(audit.estimated_tokens_final, reported),
        )

    @admin.display(description="provider minus estimate")
    def difference(self, audit: TurnContextAudit) -> str:
        return _tokens_delta(audit.estimated_tokens_final, audit.provider_prompt_tokens)
