"""Staff admin for usage: call events and the ledger are read-only records; credit accounts
are changed only through the ledger (the grant action); published pricing versions are
read-only (a new version is published instead); spending limits are set here by staff (every
limit saved in the admin is `set_by_staff`, so its user can lower it, never raise or remove it),
on their own pages and on each user's page, whose changelist also filters the users at or near a
limit.

Changelists show the totals of the filtered set (one aggregate query over the changelist's own
queryset) and load related rows with the page, so their query count does not grow with the rows
shown. Call events name rooms, sessions, turns and agents by plain UUID columns: they link to
those objects by URL, without loading them. The usage dashboard lives under the call events
(`/admin/usage/llmcallevent/dashboard/`, linked from the admin index)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value
from django.contrib.admin.widgets import RelatedFieldWidgetWrapper
from django.db.models import (
    BigIntegerField,
    Case,
    DateField,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    UUIDField,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, Greatest
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts.admin import UserAdmin as AccountsUserAdmin
from accounts.models import ApiKey, User
from pantheon.admin import (
    EMPTY,
    ReadOnlyAdmin,
    SafeLookupsMixin,
    ScopedChangelistMixin,
    TotalsChangeListMixin,
    change_link,
    changelist_link,
    status_with_error,
)
from pantheon.credits import MICRO_PER_CREDIT, format_credits, parse_credits
from pantheon.errors import ApplicationError
from usage.dashboard import usage_dashboard_view
from usage.models import (
    CreditAccount,
    LedgerEntry,
    LimitScope,
    LimitWindow,
    LlmCallEvent,
    ModelPrice,
    PricingStatus,
    PricingVersion,
    SpendingLimit,
    SpendTotal,
)
from usage.selectors import call_event_totals, credit_account_totals, ledger_totals
from usage.selectors.limits import WARNING_SHARE, period_bounds, period_start
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


# --- spending limits -------------------------------------------------------------------------
# Staff set limits on a limit's own page or on its user's page; either way the saved limit is
# `set_by_staff`: its user may lower it, never raise or remove it. Amounts are typed and shown in
# credits. What a limit stands at is read from its subject's running total for the current
# window (`SpendTotal`, one index lookup per limit, never the history).

# Whether a room is the user's (and not deleted): the rooms app answers, and usage must not
# import it. The sessions admin, which knows both apps, passes the check in (`use_room_check`).
RoomOwned = Callable[[Any, UUID], bool]
_ADVERB = {LimitWindow.DAY: "daily", LimitWindow.MONTH: "monthly"}
_PER_WINDOW = {LimitWindow.DAY: "per day (UTC)", LimitWindow.MONTH: "per month (UTC)"}
_SHORT_WINDOWS = {LimitWindow.DAY.value: "Day", LimitWindow.MONTH.value: "Month"}


def with_spent(queryset: QuerySet[SpendingLimit], *, now: datetime) -> QuerySet[SpendingLimit]:
    """`queryset` with `_spent`, what each limit's subject (user, room or key) burned in the
    window holding `now`, and `_remaining` (never below zero): a subquery per limit on the
    unique (scope, subject, window, period) index of the running totals."""
    subject = Case(
        When(scope=LimitScope.USER, then=F("user_id")),
        When(scope=LimitScope.ROOM, then=F("room_id")),
        When(scope=LimitScope.API_KEY, then=F("api_key_id")),
        output_field=UUIDField(),
    )
    period = Case(
        When(window=LimitWindow.DAY, then=Value(period_start(LimitWindow.DAY, now))),
        default=Value(period_start(LimitWindow.MONTH, now)),
        output_field=DateField(),
    )
    burned = SpendTotal.objects.filter(
        scope=OuterRef("scope"),
        subject_id=OuterRef("_subject"),
        window=OuterRef("window"),
        period_start=OuterRef("_period"),
    ).values("burned_micro")[:1]
    micro = BigIntegerField()
    zero = Value(0, output_field=micro)
    return (
        queryset.alias(_subject=subject, _period=period)
        .annotate(_spent=Coalesce(Subquery(burned, output_field=micro), zero, output_field=micro))
        .annotate(
            _remaining=Greatest(
                ExpressionWrapper(F("limit_micro") - F("_spent"), output_field=micro),
                zero,
                output_field=micro,
            )
        )
    )


def _spent_share_at_least(share: Decimal) -> Q:
    """The limits (annotated by `with_spent`) spent to `share` of their amount or more; numeric,
    so no share of a large limit overflows a bigint."""
    if share >= 1:
        return Q(_spent__gte=F("limit_micro"))
    amount = Cast("limit_micro", DecimalField(max_digits=30, decimal_places=0))
    threshold = ExpressionWrapper(
        amount * Value(share), output_field=DecimalField(max_digits=40, decimal_places=10)
    )
    return Q(_spent__gte=threshold)


# The standings offered by the "spending limit" filters: value → (label, share of the limit).
_STANDINGS = {
    "reached": ("at or over a limit", Decimal(1)),
    "warning": (f"at {round(WARNING_SHARE * 100)} % or more", Decimal(str(WARNING_SHARE))),
}


class _StandingFilter(admin.SimpleListFilter):
    """At or over a limit, or spent to 80 % (WARNING_SHARE) of it or more, in its current
    window. Fixed choices: the filter itself runs no query."""

    title = "spending limit"
    parameter_name = "spending_limit"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, (label, _) in _STANDINGS.items()]

    def share(self) -> Decimal | None:
        standing = _STANDINGS.get(self.value() or "")
        return standing[1] if standing else None


class LimitStandingFilter(_StandingFilter):
    """The limits at or near their amount (the changelist's rows carry `_spent`)."""

    def queryset(self, request: HttpRequest, queryset: QuerySet[SpendingLimit]) -> Any:
        share = self.share()
        return queryset if share is None else queryset.filter(_spent_share_at_least(share))


class UserLimitStandingFilter(_StandingFilter):
    """The users with a limit at or near its amount: one EXISTS per user in the changelist's
    own query, so the page's query count does not depend on the users."""

    def queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> Any:
        share = self.share()
        if share is None:
            return queryset
        limits = with_spent(
            SpendingLimit.objects.filter(user=OuterRef("pk")), now=timezone.now()
        ).filter(_spent_share_at_least(share))
        return queryset.filter(Exists(limits))


class SpendingLimitForm(forms.ModelForm):
    """A limit as staff set it: the amount in credits (`limit`, stored as `limit_micro`), and a
    target that fits the scope — a room of the user for a room limit, a key of the user for a
    key limit, neither for a user limit — checked here, with a clear message, before the
    database's scope check or its one-limit-per-target-and-window constraint could refuse it."""

    # Set by `use_room_check`; without it room limits are refused (their room is unchecked).
    room_owned: ClassVar[RoomOwned | None] = None

    limit = forms.CharField(
        label="Limit (credits)",
        max_length=40,
        widget=forms.TextInput(attrs={"class": "vBigIntegerField"}),
        help_text="Credits per window, e.g. 25 or 2.5 (up to 6 decimal places).",
    )

    class Meta:
        model = SpendingLimit
        fields = ("user", "scope", "room_id", "api_key", "window")
        labels = {"room_id": "Room id", "api_key": "API key"}
        help_texts = {
            "room_id": "Scope “Room” only: the id of one of the user's rooms.",
            "api_key": "Scope “API key” only: one of the user's keys.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.limit_micro is not None:
            self.initial.setdefault("limit", format_credits(self.instance.limit_micro))

    def clean_limit(self) -> int:
        try:
            return parse_credits(self.cleaned_data["limit"])
        except ValueError as exc:
            raise forms.ValidationError(f"Enter an amount of credits: {exc}.") from exc

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "limit" in cleaned:
            self.instance.limit_micro = cleaned["limit"]
        user, scope = cleaned.get("user"), cleaned.get("scope")
        unchanged = not self.instance._state.adding and not self.has_changed()
        if user is None or scope is None or unchanged:
            return cleaned
        # Whose room or key it is is asked again only of a new target (a limit on a room
        # deleted since keeps its amount editable).
        retargeted = self.instance._state.adding or bool(
            {"user", "scope", "room_id", "api_key"} & set(self.changed_data)
        )
        for name, wanted in (("room_id", LimitScope.ROOM), ("api_key", LimitScope.API_KEY)):
            self._check_target(name, wanted, user=user, scope=scope, check_owner=retargeted)
        if not {"room_id", "api_key", "window"} & set(self.errors):
            self._check_one_per_target(user=user, scope=scope)
        return cleaned

    def _check_target(
        self, name: str, wanted: str, *, user: Any, scope: str, check_owner: bool
    ) -> None:
        """The target field `name` is filled exactly for the scope `wanted`, and names one of the
        user's rooms or keys (asked when `check_owner`)."""
        if name in self.errors:
            return
        value = self.cleaned_data.get(name)
        label = LimitScope(wanted).label
        if scope != wanted:
            if value is not None:
                self.add_error(name, f"Only for the scope “{label}”: leave it empty.")
            return
        if value is None:
            self.add_error(name, f"Required for the scope “{label}”.")
            return
        if not check_owner:
            return
        if name == "api_key" and value.user_id != user.pk:
            self.add_error(name, "Not one of this user's API keys.")
        if name == "room_id" and not self._room_is_users(user, value):
            self.add_error(name, "Not one of this user's rooms (or the room is deleted).")

    def _room_is_users(self, user: Any, room_id: UUID) -> bool:
        check = type(self).room_owned
        return check is not None and check(user, room_id)

    def _check_one_per_target(self, *, user: Any, scope: str) -> None:
        window = self.cleaned_data.get("window")
        if window is None:
            return
        taken = (
            SpendingLimit.objects.filter(
                user=user,
                scope=scope,
                room_id=self.cleaned_data.get("room_id"),
                api_key=self.cleaned_data.get("api_key"),
                window=window,
            )
            .exclude(pk=self.instance.pk)
            .exists()
        )
        if taken:
            target = {"user": "all their spending", "room": "this room", "api_key": "this key"}
            self.add_error(
                "window",
                f"This user already has a {_ADVERB[LimitWindow(window)]} limit on "
                f"{target[scope]}: change that one instead.",
            )


def use_room_check(check: RoomOwned) -> None:
    """Check a room limit's room with `check(user, room_id)` (whether it is the user's)."""
    SpendingLimitForm.room_owned = staticmethod(check)  # type: ignore[assignment]


class SpendingLimitFormSet(BaseInlineFormSet):
    """A user's limits: two rows on the same target and window are refused together (each
    form only sees the limits already saved)."""

    def clean(self) -> None:
        super().clean()
        seen: set[tuple[Any, ...]] = set()
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or form.errors or self._should_delete_form(form):
                continue
            api_key = data.get("api_key")
            key = (data.get("scope"), data.get("room_id"), api_key and api_key.pk, data["window"])
            if key in seen:
                raise forms.ValidationError(
                    "Two of these limits have the same target and window: keep one."
                )
            seen.add(key)


class _LimitColumns:
    """Where a limit stands in its current window, from `with_spent`'s annotations ("-" on a
    limit not saved yet)."""

    @admin.display(description="spent this window", ordering="_spent")
    def spent(self, limit: SpendingLimit) -> str:
        spent = getattr(limit, "_spent", None)
        return EMPTY if spent is None else format_credits(spent)

    @admin.display(description="remaining", ordering="_remaining")
    def remaining(self, limit: SpendingLimit) -> str:
        remaining = getattr(limit, "_remaining", None)
        return EMPTY if remaining is None else format_credits(remaining)

    @admin.display(description="spent this window")
    def spent_and_remaining(self, limit: SpendingLimit) -> str:
        """What is spent, and under it what remains (one narrow column, for the user page)."""
        if getattr(limit, "_spent", None) is None:
            return EMPTY
        return format_html(
            '{}<br><span class="quiet">{} left</span>', self.spent(limit), self.remaining(limit)
        )


@admin.register(SpendingLimit)
class SpendingLimitAdmin(_LimitColumns, SafeLookupsMixin, admin.ModelAdmin):
    """Every limit; the add page takes its fields from the query string (the room page links to
    `?scope=room&room_id=<id>&user=<owner id>`)."""

    form = SpendingLimitForm
    # What staff scan, narrow enough for the side menu: the target under its scope, the window
    # under the amount.
    list_display = (
        "user_link",
        "scope_and_target",
        "limit_per_window",
        "spent",
        "remaining",
        "set_by_staff",
    )
    list_filter = ("scope", "window", "set_by_staff", LimitStandingFilter)
    search_fields = ("user__email",)
    list_select_related = ("user", "api_key")
    raw_id_fields = ("user", "api_key")
    ordering = ("user__email", "scope", "window", "created_at")
    fields = (
        "user",
        "scope",
        "room_id",
        "api_key",
        "window",
        "limit",
        "spent",
        "remaining",
        "resets_at",
        "set_by_staff",
        "created_at",
        "updated_at",
    )
    readonly_fields = (
        "spent",
        "remaining",
        "resets_at",
        "set_by_staff",
        "created_at",
        "updated_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[SpendingLimit]:
        return with_spent(super().get_queryset(request), now=timezone.now())

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:  # the add page: only what staff type (what it stands at comes later)
            return [field for field in self.fields if field not in self.readonly_fields]
        return self.fields

    def save_model(self, request: HttpRequest, obj: SpendingLimit, form: Any, change: bool) -> None:
        obj.set_by_staff = True
        super().save_model(request, obj, form, change)

    @admin.display(description="user", ordering="user__email")
    def user_link(self, limit: SpendingLimit) -> str:
        return change_link("accounts_user", limit.user_id, limit.user)

    @admin.display(description="limit", ordering="limit_micro")
    def limit_per_window(self, limit: SpendingLimit) -> str:
        return format_html(
            '{}<br><span class="quiet">{}</span>',
            format_credits(limit.limit_micro),
            _PER_WINDOW[LimitWindow(limit.window)],
        )

    @admin.display(description="scope and target", ordering="scope")
    def scope_and_target(self, limit: SpendingLimit) -> str:
        """The scope, and under it the room (its id, shortened) or the key (its prefix) the
        limit is on, linking to it."""
        if limit.scope == LimitScope.ROOM:
            target = change_link("rooms_room", limit.room_id, f"{str(limit.room_id)[:8]}…")
        elif limit.scope == LimitScope.API_KEY and limit.api_key is not None:
            target = change_link("accounts_apikey", limit.api_key_id, limit.api_key.prefix)
        else:
            return limit.get_scope_display()
        return format_html('{}<br><span class="quiet">{}</span>', limit.get_scope_display(), target)

    @admin.display(description="window resets at")
    def resets_at(self, limit: SpendingLimit) -> Any:
        if limit._state.adding:
            return EMPTY
        return display_for_value(period_bounds(limit.window, timezone.now())[1], EMPTY)


class SpendingLimitInline(_LimitColumns, admin.TabularInline):
    """The user's limits, editable: a limit saved here is a staff limit."""

    model = SpendingLimit
    form = SpendingLimitForm
    formset = SpendingLimitFormSet
    fk_name = "user"
    extra = 0
    show_change_link = True
    # Narrow enough for the side menu: what remains under what is spent, short window names
    # (UTC, as everywhere), keys by prefix.
    fields = (
        "scope",
        "room_id",
        "api_key",
        "window",
        "limit",
        "spent_and_remaining",
        "set_by_staff",
    )
    readonly_fields = ("spent_and_remaining", "set_by_staff")
    ordering = ("scope", "window", "created_at")
    verbose_name_plural = "spending limits (a limit saved here is set by staff)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[SpendingLimit]:
        return with_spent(super().get_queryset(request), now=timezone.now())

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "api_key" and isinstance(field.widget, RelatedFieldWidgetWrapper):
            field.widget = field.widget.widget  # a plain select: each key has its own page
        return field

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        fields = formset.form.base_fields
        if "api_key" in fields:
            # The user's keys only, read once for every row (not once per row).
            user_id = obj.pk if obj is not None else None
            keys = fields["api_key"]
            keys.queryset = ApiKey.objects.filter(user_id=user_id).order_by("-created_at")
            keys.label_from_instance = lambda key: key.prefix
            keys.choices = list(keys.choices)
        if "window" in fields:
            fields["window"].choices = [("", "---------"), *_SHORT_WINDOWS.items()]
        if "room_id" in fields:
            fields["room_id"].widget.attrs["class"] = "vBigIntegerField"
        return formset


# The user page, with the user's spending limits: re-registered here, since accounts knows
# nothing of usage (dependencies run one way).
admin.site.unregister(User)


@admin.register(User)
class UserWithLimitsAdmin(AccountsUserAdmin):
    """The users admin, plus each user's spending limits and a filter of the users at or near
    one of their limits."""

    inlines = (*AccountsUserAdmin.inlines, SpendingLimitInline)
    list_filter = (*AccountsUserAdmin.list_filter, UserLimitStandingFilter)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not SpendingLimit:
            super().save_formset(request, form, formset, change)
            return
        for limit in formset.save(commit=False):
            limit.set_by_staff = True
            limit.save()
        for limit in formset.deleted_objects:
            limit.delete()
        formset.save_m2m()
