"""Admin plumbing shared by every app's `admin.py`: the changelist NUL guard, read-only bases
for audit-like records, the soft-delete filter, changelist totals, links between admin pages and
the small related-rows table of change pages. It lives here, in the project package, so no app
imports another app's admin to reuse it.

Not an installed app: admin autodiscovery never imports this module, it only provides classes.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

# How many related rows a change page lists before it links to the full changelist.
RECENT_ROWS = 20


class SafeLookupsMixin:
    """PostgreSQL refuses NUL bytes in text: a filter or search value carrying one is an
    invalid lookup (the admin's usual redirect to `?e=1`), never a database error. Put it before
    `admin.ModelAdmin` in the bases of every changelist's admin."""

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        if any("\x00" in value for _, values in request.GET.lists() for value in values):
            raise IncorrectLookupParameters("a query parameter contains a NUL byte")
        return super().get_changelist_instance(request)  # type: ignore[misc]


class _NoWritesMixin:
    """Nobody adds, changes or deletes here, superusers included: the view permission alone
    decides who looks."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(SafeLookupsMixin, _NoWritesMixin, admin.ModelAdmin):
    """Audit-like records the product writes (call events, ledger entries, turns, messages…):
    staff look, nobody edits. No full count under a filter: these tables grow without bound."""

    show_full_result_count = False


class ReadOnlyInline(_NoWritesMixin, admin.TabularInline):
    """Related records shown on a parent's page, each linking to its own (read-only) page."""

    extra = 0
    can_delete = False
    show_change_link = True


class DeletedFilter(admin.SimpleListFilter):
    """Soft-deleted or not (`deleted_at` set)."""

    title = "deleted"
    parameter_name = "deleted"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("no", "No"), ("yes", "Yes")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "no":
            return queryset.filter(deleted_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(deleted_at__isnull=False)
        return queryset


class TotalsChangeListMixin:
    """Adds `totals` — computed by `totals_of` over the changelist's filtered queryset, in one
    query — to the changelist's context; a model's change_list.html override renders them by
    including admin/changelist_totals.html."""

    def totals_of(self, queryset: QuerySet[Any]) -> dict[str, Any]:
        raise NotImplementedError

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)  # type: ignore[misc]
        context = getattr(response, "context_data", None)
        # A redirect (bad filter parameters) or an action's response has no changelist.
        if context is not None and context.get("cl") is not None:
            context["totals"] = self.totals_of(context["cl"].queryset)
        return response


# --- links between admin pages ------------------------------------------------------------------


def change_link(viewname: str, pk: Any, text: Any) -> str:
    """A link to the change page `admin:<viewname>_change` of primary key `pk`, without loading
    the row (for plain UUID columns naming another app's rows): "-" for no pk, plain text when
    that model has no admin."""
    if pk is None:
        return "-"
    try:
        url = reverse(f"admin:{viewname}_change", args=[pk])
    except NoReverseMatch:
        return str(text)
    return format_html('<a href="{}">{}</a>', url, text)


def admin_link(obj: Model | None) -> str:
    """A link to `obj`'s admin change page, labelled with `obj` ("-" for None)."""
    if obj is None:
        return "-"
    return change_link(f"{obj._meta.app_label}_{obj._meta.model_name}", obj.pk, obj)


def changelist_link(viewname: str, text: str, **filters: Any) -> str:
    """A link to the changelist `admin:<viewname>_changelist` narrowed by `filters` (plain field
    lookups)."""
    query = "&".join(f"{name}={value}" for name, value in filters.items())
    url = reverse(f"admin:{viewname}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, query, text)


def related_table(headers: tuple[str, ...], rows: list[tuple[Any, ...]], empty: str) -> SafeString:
    """A small read-only HTML table of related rows for a change page (cells are escaped unless
    already safe, such as links); `empty` is the sentence shown when there are no rows."""
    if not rows:
        return format_html("<p>{}</p>", empty)
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows),
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)
