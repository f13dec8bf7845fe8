"""Staff admin for usage: call events and the ledger are read-only records; credit accounts
are changed only through the ledger (the grant action); published pricing versions are
read-only (a new version is published instead).

Changelists show the totals of the filtered set (one aggregate query over the changelist's own
queryset) and load related rows with the page, so their query count does not grow with the rows
shown. Call events name rooms, sessions, turns and agents by plain UUID columns: they link to
those objects by URL, without loading them. The usage dashboard lives under the call events
(`/admin/usage/llmcallevent/dashboard/`, linked from the admin index)."""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value
from django.db.models import F, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from accounts.models import User
from pantheon.admin import (
    ReadOnlyAdmin,
    SafeLookupsMixin,
    ScopedChangelistMixin,
    TotalsChangeListMixin,
    change_link,
    changelist_link,
    status_with_error,
)
from pantheon.credits import MICRO_PER_CREDIT, format_credits
from pantheon.errors import ApplicationError
from usage.dashboard import usage_dashboard_view
from usage.models import (
    CreditAccount,
    LedgerEntry,
    LlmCallEvent,
    ModelPrice,
    PricingStatus,
    PricingVersion,
)
from usage.selectors import call_event_totals, credit_account_totals, ledger_totals
from usage.services import (
    credits_grant,
    pricing_version_activate,
    pricing_version_ensure_editable,
)


class PricingVersionFilter(admin.RelatedFieldListFilter):
    """Pricing versions by label and status (their `__str__` also spells out a date)."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> Any:
        versions = PricingVersion.objects.order_by("-effective_from")
        return [(version.pk, f"{version.label} ({version.status})") for version in versions]


@admin.register(LlmCallEvent)
class LlmCallEventAdmin(ScopedChangelistMixin, TotalsChangeListMixin, ReadOnlyAdmin):
    # What staff scan; the tokens are in the totals above the list and on each call's page.
    list_display = (
        "created_at",
        "user_link",
        "model_and_purpose",
        "status_display",
        "latency_ms",
        "credits",
        "turn_link",
    )
    # `?user=<id>` (the usage dashboard's links): the user is named once, in the heading.
    scope_parameter = "user"
    scope_columns = ("user_link",)
    list_filter = (
        "purpose",
        "status",
        "model",
        ("pricing_version", PricingVersionFilter),
        "usage_source",
    )
    date_hierarchy = "created_at"
    search_fields = (
        "user__email",
        "=session_id",
        "=turn_id",
        "=agent_id",
        "=room_id",
        "=generation_id",
    )
    list_select_related = ("user", "pricing_version")
    raw_id_fields = ("user", "pricing_version")
    ordering = ("-created_at",)
    fieldsets = (
        (None, {"fields": ("id", "created_at", "started_at", "user_link", "purpose")}),
        (
            "Where",
            {"fields": ("room_link", "session_link", "turn_link", "agent_link")},
        ),
        (
            "Call",
            {
                "fields": (
                    "provider",
                    "model",
                    "status",
                    "error_code",
                    "latency_ms",
                    "time_to_first_token_ms",
                    "generation_id",
                    "idempotency_key",
                )
            },
        ),
        (
            "Tokens",
            {
                "fields": (
                    "usage_source",
                    "input_tokens",
                    "cached_input_tokens",
                    "cache_write_tokens",
                    "output_tokens",
                    "reasoning_tokens",
                )
            },
        ),
        (
            "Charge",
            {
                "fields": (
                    "pricing_version_link",
                    "price_snapshot",
                    "cost_usd",
                    "oe_tokens",
                    "credits",
                    "ledger_link",
                )
            },
        ),
    )
    readonly_fields = (
        "user_link",
        "room_link",
        "session_link",
        "turn_link",
        "agent_link",
        "credits",
        "ledger_link",
        "pricing_version_link",
    )

    def get_urls(self) -> list[URLPattern]:
        dashboard = self.admin_site.admin_view(
            lambda request: usage_dashboard_view(request, model_admin=self)
        )
        return [
            path("dashboard/", dashboard, name="usage_dashboard"),
            *super().get_urls(),
        ]

    def scope_parent(self, pk: str) -> User | None:
        return User.objects.filter(pk=pk).first()

    def totals_of(self, queryset: QuerySet[LlmCallEvent]) -> dict[str, Any]:
        totals = call_event_totals(queryset)
        return {
            "Calls": totals["calls"],
            "Credits": format_credits(totals["credits"]),
            "OE tokens": totals["oe"],
            "Input tokens": totals["input_tokens"],
            "Output tokens": totals["output_tokens"],
            "Tokens": totals["input_tokens"] + totals["output_tokens"],
        }

    @admin.display(description="user", ordering="user__email")
    def user_link(self, event: LlmCallEvent) -> str:
        return change_link("accounts_user", event.user_id, event.user)

    @admin.display(description="model", ordering="model")
    def model_and_purpose(self, event: LlmCallEvent) -> str:
        """The model, and under it what the call was for (an agent's reply, routing…)."""
        return format_html(
            '{}<br><span class="quiet">{}</span>', event.model, event.get_purpose_display()
        )

    @admin.display(description="status", ordering="status")
    def status_display(self, event: LlmCallEvent) -> str:
        return status_with_error(event.get_status_display(), event.error_code)

    @admin.display(description="room")
    def room_link(self, event: LlmCallEvent) -> str:
        return change_link("rooms_room", event.room_id, event.room_id)

    @admin.display(description="session")
    def session_link(self, event: LlmCallEvent) -> str:
        return change_link("chat_sessions_session", event.session_id, event.session_id)

    @admin.display(description="turn")
    def turn_link(self, event: LlmCallEvent) -> str:
        return change_link("chat_sessions_turn", event.turn_id, "turn")

    @admin.display(description="agent")
    def agent_link(self, event: LlmCallEvent) -> str:
        return change_link("rooms_agent", event.agent_id, event.agent_id)

    @admin.display(description="pricing version")
    def pricing_version_link(self, event: LlmCallEvent) -> str:
        version = event.pricing_version
        if version is None:
            return "-"
        url = reverse("admin:usage_pricingversion_change", args=[version.pk])
        effective = display_for_value(version.effective_from, "-")
        return format_html('<a href="{}">{}</a> (from {})', url, version.label, effective)

    @admin.display(description="credits", ordering="credits_burned")
    def credits(self, event: LlmCallEvent) -> str:
        return format_credits(event.credits_burned)

    @admin.display(description="ledger")
    def ledger_link(self, event: LlmCallEvent) -> str:
        return changelist_link("usage_ledgerentry", "ledger entries of this call", event=event.pk)


class LedgerModelFilter(admin.SimpleListFilter):
    """The model of the call behind an entry (burns and reprices); the models offered are
    those of the calls in the ledger (one query)."""

    title = "model"
    parameter_name = "model"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        models = (
            LedgerEntry.objects.filter(event__isnull=False)
            .order_by("event__model")
            .values_list("event__model", flat=True)
            .distinct()
        )
        return [(model, model) for model in models]

    def queryset(self, request: HttpRequest, queryset: QuerySet[LedgerEntry]) -> Any:
        if self.value():
            return queryset.filter(event__model=self.value())
        return queryset


@admin.register(LedgerEntry)
class LedgerEntryAdmin(TotalsChangeListMixin, ReadOnlyAdmin):
    # What staff scan: the model links to the call behind the entry.
    list_display = (
        "created_at",
        "account_user",
        "kind",
        "amount",
        "balance_after",
        "event_model",
        "note_display",
    )
    list_filter = ("kind", LedgerModelFilter)
    date_hierarchy = "created_at"
    search_fields = ("account__user__email", "=event__session_id", "=idempotency_key")
    list_select_related = ("account__user", "event", "created_by")
    raw_id_fields = ("account", "event", "created_by")
    ordering = ("-created_at",)

    def totals_of(self, queryset: QuerySet[LedgerEntry]) -> dict[str, Any]:
        totals = ledger_totals(queryset)
        return {
            "Entries": totals["entries"],
            "Net credits": format_credits(totals["net"]),
            "Credits burned": format_credits(-totals["burned"]),
            "OE tokens": totals["oe"],
            "Tokens": totals["input_tokens"] + totals["output_tokens"],
        }

    @admin.display(description="user", ordering="account__user__email")
    def account_user(self, entry: LedgerEntry) -> str:
        return change_link("accounts_user", entry.account.user_id, entry.account.user.email)

    @admin.display(description="model", ordering="event__model")
    def event_model(self, entry: LedgerEntry) -> str:
        """The model of the call behind the entry, linking to that call."""
        if not entry.event_id:
            return "-"
        return change_link("usage_llmcallevent", entry.event_id, entry.event.model)

    @admin.display(description="note")
    def note_display(self, entry: LedgerEntry) -> str:
        """The note, and who wrote the entry when staff did (a grant, an adjustment)."""
        if entry.created_by_id is None:
            return entry.note or "-"
        return format_html('{} <span class="quiet">by {}</span>', entry.note, entry.created_by)

    @admin.display(description="amount", ordering="amount_micro")
    def amount(self, entry: LedgerEntry) -> str:
        return format_credits(entry.amount_micro)

    @admin.display(description="balance after")
    def balance_after(self, entry: LedgerEntry) -> str:
        return format_credits(entry.balance_after_micro)


class GrantCreditsForm(forms.Form):
    """The grant action's intermediate form. `token` makes a double submit grant once."""

    amount = forms.DecimalField(
        min_value=Decimal("0.000001"),
        max_digits=18,
        decimal_places=6,
        help_text="Credits for each selected account (up to 6 decimal places).",
    )
    note = forms.CharField(max_length=500, required=False)
    token = forms.CharField(widget=forms.HiddenInput, max_length=64)


@admin.register(CreditAccount)
class CreditAccountAdmin(TotalsChangeListMixin, ReadOnlyAdmin):
    list_display = ("user_link", "balance", "reserved", "available", "updated_at", "ledger")
    search_fields = ("user__email",)
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    readonly_fields = ("user_link", "balance", "reserved", "available", "updated_at", "ledger")
    fields = readonly_fields
    actions = ("grant_credits",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[CreditAccount]:
        return (
            super()
            .get_queryset(request)
            .annotate(_available=F("balance_micro") - F("reserved_micro"))
        )

    def totals_of(self, queryset: QuerySet[CreditAccount]) -> dict[str, Any]:
        totals = credit_account_totals(queryset)
        return {
            "Accounts": totals["accounts"],
            "Balance": format_credits(totals["balance"]),
            "Reserved": format_credits(totals["reserved"]),
            "Available": format_credits(totals["available"]),
        }

    @admin.display(description="user", ordering="user__email")
    def user_link(self, account: CreditAccount) -> str:
        return change_link("accounts_user", account.user_id, account.user)

    @admin.display(description="ledger")
    def ledger(self, account: CreditAccount) -> str:
        return changelist_link("usage_ledgerentry", "entries", account=account.pk)

    @admin.display(description="balance", ordering="balance_micro")
    def balance(self, account: CreditAccount) -> str:
        return format_credits(account.balance_micro)

    @admin.display(description="reserved", ordering="reserved_micro")
    def reserved(self, account: CreditAccount) -> str:
        return format_credits(account.reserved_micro)

    @admin.display(description="available", ordering="_available")
    def available(self, account: CreditAccount) -> str:
        return format_credits(account.available_micro)

    def has_grant_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("usage.add_ledgerentry")

    @admin.action(description="Grant credits (through the ledger)…", permissions=["grant"])
    def grant_credits(
        self, request: HttpRequest, queryset: QuerySet[CreditAccount]
    ) -> HttpResponse | None:
        if "apply" in request.POST:
            form = GrantCreditsForm(request.POST)
            if form.is_valid():
                amount_micro = int(form.cleaned_data["amount"] * MICRO_PER_CREDIT)
                granted = 0
                for account in queryset.select_related("user").order_by("pk"):
                    try:
                        credits_grant(
                            user=account.user,
                            amount_micro=amount_micro,
                            note=form.cleaned_data["note"],
                            idempotency_key=f"admin-grant:{form.cleaned_data['token']}:{account.pk}",
                            created_by=request.user,
                        )
                    except ApplicationError as exc:
                        self.message_user(request, f"{account.user}: {exc.message}", messages.ERROR)
                        continue
                    granted += 1
                self.message_user(
                    request,
                    f"Granted {format_credits(amount_micro)} credits to {granted} account(s).",
                    messages.SUCCESS,
                )
                return None
        else:
            form = GrantCreditsForm(initial={"token": secrets.token_hex(16)})
        context = {
            **self.admin_site.each_context(request),
            "title": "Grant credits",
            "form": form,
            "accounts": queryset.select_related("user"),
            "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "usage/admin/grant_credits.html", context)


class ModelPriceInline(admin.TabularInline):
    """A version's prices; editable only while the version is a draft."""

    model = ModelPrice
    extra = 0
    fields = ("model_id", "input", "output", "cached_input", "cache_write", "reasoning")

    def _editable(self, obj: PricingVersion | None) -> bool:
        return obj is None or obj.status == PricingStatus.DRAFT

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._editable(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._editable(obj) and super().has_delete_permission(request, obj)


@admin.register(PricingVersion)
class PricingVersionAdmin(SafeLookupsMixin, admin.ModelAdmin):
    """Drafts are prepared here and published with the action; published versions are
    read-only (publish a new version, e.g. with `manage.py publish_pricing`)."""

    list_display = ("label", "status", "effective_from", "credits_per_usd", "markup", "created_at")
    list_filter = ("status",)
    inlines = (ModelPriceInline,)
    actions = ("publish_drafts",)
    fields = ("label", "effective_from", "credits_per_usd", "markup", "status", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is not None and obj.is_published:
            return self.fields
        return ("status", "created_at")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_published:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_published:
            return False
        return super().has_delete_permission(request, obj)

    def save_model(
        self, request: HttpRequest, obj: PricingVersion, form: Any, change: bool
    ) -> None:
        pricing_version_ensure_editable(version=obj)
        super().save_model(request, obj, form, change)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PricingVersion]) -> None:
        # Bulk deletion from the changelist: drafts only, published versions are kept.
        queryset.filter(status=PricingStatus.DRAFT).delete()

    @admin.action(description="Publish the selected drafts", permissions=["change"])
    def publish_drafts(self, request: HttpRequest, queryset: QuerySet[PricingVersion]) -> None:
        for version in queryset.order_by("effective_from"):
            try:
                pricing_version_activate(version=version)
            except ApplicationError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(request, f"Published {version.label}.", messages.SUCCESS)
