"""Staff admin for usage: call events and the ledger are read-only records; credit accounts
are changed only through the ledger (the grant action); published pricing versions are
read-only (a new version is published instead)."""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from pantheon.errors import ApplicationError
from usage.metering import MICRO_PER_CREDIT
from usage.models import (
    CreditAccount,
    LedgerEntry,
    LlmCallEvent,
    ModelPrice,
    PricingStatus,
    PricingVersion,
)
from usage.selectors import format_credits
from usage.services import (
    credits_grant,
    pricing_version_activate,
    pricing_version_ensure_editable,
)


class _ReadOnlyAdmin(admin.ModelAdmin):
    """Audit-like records: staff look, nobody edits."""

    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(LlmCallEvent)
class LlmCallEventAdmin(_ReadOnlyAdmin):
    list_display = (
        "created_at",
        "user",
        "purpose",
        "model",
        "status",
        "input_tokens",
        "output_tokens",
        "credits",
        "pricing_version",
    )
    list_filter = ("purpose", "status", "model", "pricing_version", "usage_source")
    date_hierarchy = "created_at"
    search_fields = ("user__email", "=session_id", "=turn_id", "=generation_id")
    list_select_related = ("user", "pricing_version")
    raw_id_fields = ("user", "pricing_version")
    ordering = ("-created_at",)

    @admin.display(description="credits", ordering="credits_burned")
    def credits(self, event: LlmCallEvent) -> str:
        return format_credits(event.credits_burned)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(_ReadOnlyAdmin):
    list_display = (
        "created_at",
        "account_user",
        "kind",
        "amount",
        "balance_after",
        "event",
        "note",
        "created_by",
    )
    list_filter = ("kind",)
    date_hierarchy = "created_at"
    search_fields = ("account__user__email", "=event__session_id", "=idempotency_key")
    list_select_related = ("account__user", "event", "created_by")
    raw_id_fields = ("account", "event", "created_by")
    ordering = ("-created_at",)

    @admin.display(description="user", ordering="account__user__email")
    def account_user(self, entry: LedgerEntry) -> str:
        return entry.account.user.email

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
class CreditAccountAdmin(_ReadOnlyAdmin):
    list_display = ("user", "balance", "reserved", "available", "updated_at")
    search_fields = ("user__email",)
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    readonly_fields = ("user", "balance", "reserved", "available", "updated_at")
    fields = readonly_fields
    actions = ("grant_credits",)

    @admin.display(description="balance", ordering="balance_micro")
    def balance(self, account: CreditAccount) -> str:
        return format_credits(account.balance_micro)

    @admin.display(description="reserved", ordering="reserved_micro")
    def reserved(self, account: CreditAccount) -> str:
        return format_credits(account.reserved_micro)

    @admin.display(description="available")
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
class PricingVersionAdmin(admin.ModelAdmin):
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
