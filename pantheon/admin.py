"""Admin plumbing shared by every app's `admin.py`: the console's name, the changelist NUL guard,
read-only bases for audit-like records, the soft-delete filter, changelist totals, changelists
narrowed to one parent, links between admin pages and the small related-rows table of change
pages. It lives here, in the project package, so no app imports another app's admin to reuse it.

Not an installed app: admin autodiscovery never imports this module itself, but every app's
`admin.py` does, so the site is named before the first request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import display_for_value
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import capfirst

# How many related rows a change page lists before it links to the full changelist.
RECENT_ROWS = 20
# What an empty cell shows, as on Django's own changelists.
EMPTY = "-"

# The console's name, in the header, the browser tab and on the index page.
admin.site.site_header = "Pantheon staff console"
admin.site.site_title = "Pantheon staff console"
admin.site.index_title = "Overview"


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


class ScopedChangelistMixin:
    """A changelist narrowed to one parent row (`?<scope_parameter>=<pk>`, the link a parent's
    page gives) names that parent once, in the page heading, instead of on every row: the
    `scope_columns` that would only repeat it are left out. One query loads the parent."""

    scope_parameter: str = ""
    scope_columns: tuple[str, ...] = ()

    def scope_parent(self, pk: str) -> Model | None:
        """The parent row `pk` names, None when there is none."""
        raise NotImplementedError

    def scope_details(self, parent: Any) -> list[str]:
        """Links shown under the heading, e.g. the parent's own owner."""
        return []

    def get_list_display(self, request: HttpRequest) -> Sequence[Any]:
        columns = super().get_list_display(request)  # type: ignore[misc]
        if not request.GET.get(self.scope_parameter):
            return columns
        return [column for column in columns if column not in self.scope_columns]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        pk = request.GET.get(self.scope_parameter)
        try:
            parent = self.scope_parent(pk) if pk else None
        except (ValidationError, ValueError):  # not a primary key: the changelist says so
            parent = None
        if parent is not None:
            plural = capfirst(self.model._meta.verbose_name_plural)  # type: ignore[attr-defined]
            scope = {"label": f"{plural} of", "parent": admin_link(parent)}
            scope["details"] = self.scope_details(parent)
            extra_context = {
                "title": f"{plural} of {parent}",
                "scope": scope,
                **(extra_context or {}),
            }
        return super().changelist_view(request, extra_context)  # type: ignore[misc]


# --- links between admin pages ------------------------------------------------------------------


def change_link(viewname: str, pk: Any, text: Any) -> str:
    """A link to the change page `admin:<viewname>_change` of primary key `pk`, without loading
    the row (for plain UUID columns naming another app's rows): "-" for no pk, plain text when
    that model has no admin."""
    if pk is None:
        return EMPTY
    try:
        url = reverse(f"admin:{viewname}_change", args=[pk])
    except NoReverseMatch:
        return str(text)
    return format_html('<a href="{}">{}</a>', url, text)


def admin_link(obj: Model | None) -> str:
    """A link to `obj`'s admin change page, labelled with `obj` ("-" for None)."""
    if obj is None:
        return EMPTY
    return change_link(f"{obj._meta.app_label}_{obj._meta.model_name}", obj.pk, obj)


def changelist_link(viewname: str, text: str, **filters: Any) -> str:
    """A link to the changelist `admin:<viewname>_changelist` narrowed by `filters` (plain field
    lookups)."""
    query = "&".join(f"{name}={value}" for name, value in filters.items())
    url = reverse(f"admin:{viewname}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, query, text)


def status_with_error(status: str, error_code: str) -> str:
    """A status cell: the status, and under it the error code when there is one."""
    if not error_code:
        return status
    return format_html('{}<br><span class="quiet">{}</span>', status, error_code)


def related_table(headers: tuple[str, ...], rows: list[tuple[Any, ...]], empty: str) -> SafeString:
    """A small read-only HTML table of related rows for a change page (cells are escaped unless
    already safe, such as links; dates and empty values shown as the admin shows them); `empty`
    is the sentence shown when there are no rows."""
    if not rows:
        return format_html("<p>{}</p>", empty)
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((_cell(cell),) for cell in row)),) for row in rows),
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)


def _cell(value: Any) -> Any:
    """A value as a changelist cell shows it: dates in the admin's format, None as "-"."""
    if isinstance(value, SafeString):
        return value
    return display_for_value(value, EMPTY)
