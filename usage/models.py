"""Usage metering and credits: pricing versions, LLM call events, credit accounts, the ledger
and reservations.

`usage` depends on `accounts` only: rooms, sessions, turns and agents are referenced by plain
UUID columns, and model ids are plain strings (the catalog lives in `llm`).
Money is `Decimal` (USD) and integer micro-credits (1 credit = 1,000,000 micro-credits).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

RESERVATION_TTL = timedelta(minutes=15)
MODEL_ID_MAX_LENGTH = 128  # llm_models.id

# Prices are USD per 1M tokens with at most 4 decimal places: then Σ n * p / 1e6 has at most
# 10 decimal places and llm_call_events.cost_usd (numeric(20, 10)) stores every cost exactly.
PRICE_DECIMAL_PLACES = 4


class PricingStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class PricingVersion(models.Model):
    """A published price list. Calls are priced by the version *in force when they started*:
    the published (active or retired) version with the newest `effective_from` not after the
    start. A draft is never used. Once published a version is never edited — a new version is
    published instead; `retired` marks a version superseded by a later one (it still prices the
    calls that started while it was in force)."""

    label = models.CharField(max_length=50, unique=True)
    effective_from = models.DateTimeField()
    credits_per_usd = models.DecimalField(max_digits=14, decimal_places=4)
    markup = models.DecimalField(max_digits=8, decimal_places=4, default=1)
    status = models.CharField(
        max_length=8, choices=PricingStatus.choices, default=PricingStatus.DRAFT
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "pricing_versions"
        ordering = ("-effective_from",)
        constraints = [
            models.CheckConstraint(
                condition=Q(credits_per_usd__gt=0), name="pricing_credits_per_usd_positive"
            ),
            models.CheckConstraint(condition=Q(markup__gt=0), name="pricing_markup_positive"),
            # Two published versions starting at the same instant would make "the version in
            # force" ambiguous.
            models.UniqueConstraint(
                fields=["effective_from"],
                condition=~Q(status="draft"),
                name="pricing_published_effective_from_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.status}, from {self.effective_from:%Y-%m-%d %H:%M} UTC)"

    @property
    def is_published(self) -> bool:
        return self.status != PricingStatus.DRAFT


class ModelPrice(models.Model):
    """One model's prices in a pricing version, USD per 1M tokens. Blank cached-input and
    cache-write prices mean the input price; a blank reasoning price means the output price."""

    version = models.ForeignKey(PricingVersion, on_delete=models.CASCADE, related_name="prices")
    model_id = models.CharField(max_length=MODEL_ID_MAX_LENGTH)
    input = models.DecimalField(max_digits=12, decimal_places=PRICE_DECIMAL_PLACES)
    output = models.DecimalField(max_digits=12, decimal_places=PRICE_DECIMAL_PLACES)
    cached_input = models.DecimalField(
        max_digits=12, decimal_places=PRICE_DECIMAL_PLACES, null=True, blank=True
    )
    cache_write = models.DecimalField(
        max_digits=12, decimal_places=PRICE_DECIMAL_PLACES, null=True, blank=True
    )
    reasoning = models.DecimalField(
        max_digits=12, decimal_places=PRICE_DECIMAL_PLACES, null=True, blank=True
    )

    class Meta:
        db_table = "model_prices"
        ordering = ("model_id",)
        constraints = [
            models.UniqueConstraint(
                fields=["version", "model_id"], name="model_prices_version_model_unique"
            ),
            models.CheckConstraint(
                condition=Q(input__gte=0)
                & Q(output__gte=0)
                & (Q(cached_input__isnull=True) | Q(cached_input__gte=0))
                & (Q(cache_write__isnull=True) | Q(cache_write__gte=0))
                & (Q(reasoning__isnull=True) | Q(reasoning__gte=0)),
                name="model_prices_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_id} in {self.version_id}"


class CallPurpose(models.TextChoices):
    AGENT_REPLY = "agent_reply", "Agent reply"
    ROUTING = "routing", "Routing"
    SUMMARY = "summary", "Summary"


class CallStatus(models.TextChoices):
    OK = "ok", "OK"
    ERROR = "error", "Error"
    TIMEOUT = "timeout", "Timeout"
    CANCELLED = "cancelled", "Cancelled"


class UsageSource(models.TextChoices):
    PROVIDER = "provider", "Reported by the provider"
    ESTIMATED = "estimated", "Estimated"


class LlmCallEvent(models.Model):
    """One call to an LLM provider, whatever its purpose or outcome, with what it consumed and
    what it cost. `input_tokens` and `output_tokens` are the provider's totals; cached,
    cache-write and reasoning tokens are parts of them. The price snapshot keeps the exact
    prices used, so the row explains its own cost forever. Rows are never changed: a later
    reprice is written as ledger adjustments."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="llm_call_events"
    )
    room_id = models.UUIDField(null=True, blank=True)
    session_id = models.UUIDField(null=True, blank=True, db_index=True)
    turn_id = models.UUIDField(null=True, blank=True, db_index=True)
    agent_id = models.UUIDField(null=True, blank=True)
    api_key_id = models.UUIDField(null=True, blank=True)  # the key that asked for the call
    purpose = models.CharField(max_length=16, choices=CallPurpose.choices)
    provider = models.CharField(max_length=100)
    model = models.CharField(max_length=MODEL_ID_MAX_LENGTH)
    status = models.CharField(max_length=16, choices=CallStatus.choices)
    error_code = models.CharField(max_length=64, blank=True, default="")
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    input_tokens = models.IntegerField(default=0)
    cached_input_tokens = models.IntegerField(default=0)
    cache_write_tokens = models.IntegerField(default=0)
    output_tokens = models.IntegerField(default=0)
    reasoning_tokens = models.IntegerField(default=0)
    usage_source = models.CharField(max_length=16, choices=UsageSource.choices)
    generation_id = models.CharField(max_length=255, null=True, blank=True)
    idempotency_key = models.CharField(max_length=255, unique=True)
    pricing_version = models.ForeignKey(
        PricingVersion,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="events",
    )
    price_snapshot = models.JSONField(default=dict, blank=True)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=10, default=0)
    oe_tokens = models.DecimalField(max_digits=20, decimal_places=4, default=0)
    credits_burned = models.BigIntegerField(default=0)  # micro-credits

    class Meta:
        db_table = "llm_call_events"
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=["user", "-created_at"], name="llm_events_user_created"),
            models.Index(fields=["model", "created_at"], name="llm_events_model_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(input_tokens__gte=0)
                & Q(cached_input_tokens__gte=0)
                & Q(cache_write_tokens__gte=0)
                & Q(output_tokens__gte=0)
                & Q(reasoning_tokens__gte=0),
                name="llm_events_tokens_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(input_tokens__gte=F("cached_input_tokens") + F("cache_write_tokens")),
                name="llm_events_input_parts_within_total",
            ),
            models.CheckConstraint(
                condition=Q(output_tokens__gte=F("reasoning_tokens")),
                name="llm_events_reasoning_within_output",
            ),
            models.CheckConstraint(
                condition=Q(cost_usd__gte=0) & Q(oe_tokens__gte=0) & Q(credits_burned__gte=0),
                name="llm_events_charge_non_negative",
            ),
            # Only an unpriced call (no price for its model) has no pricing version; it is free.
            models.CheckConstraint(
                condition=Q(pricing_version__isnull=False) | Q(credits_burned=0, cost_usd=0),
                name="llm_events_unpriced_is_free",
            ),
            models.UniqueConstraint(
                fields=["generation_id"],
                condition=Q(generation_id__isnull=False),
                name="llm_events_generation_id_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.purpose} {self.model} {self.status} ({self.id})"


class CreditAccount(models.Model):
    """A user's credits. `balance_micro` always equals the sum of the account's ledger entries;
    `reserved_micro` is the sum of its active reservations. Both change only under this row's
    lock (`select_for_update(no_key=True)`), so concurrent turns never spend the same credits."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credit_account"
    )
    balance_micro = models.BigIntegerField(default=0)
    reserved_micro = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "credit_accounts"
        constraints = [
            models.CheckConstraint(
                condition=Q(reserved_micro__gte=0), name="credit_accounts_reserved_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"credits of {self.user_id}"

    @property
    def available_micro(self) -> int:
        return self.balance_micro - self.reserved_micro


class LedgerKind(models.TextChoices):
    GRANT = "grant", "Grant"
    BURN = "burn", "Burn"
    REFUND = "refund", "Refund"
    ADJUSTMENT = "adjustment", "Adjustment"


class LedgerImmutableError(Exception):
    """Ledger entries are append-only: they are never updated or deleted."""


class LedgerEntryQuerySet(models.QuerySet["LedgerEntry"]):
    def update(self, **kwargs: Any) -> int:
        raise LedgerImmutableError("Ledger entries are append-only; write a new entry instead.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise LedgerImmutableError("Ledger entries are append-only; write a new entry instead.")


class LedgerEntry(models.Model):
    """One append-only movement of credits, in micro-credits: grants and refunds are positive,
    burns negative, adjustments either. `balance_after_micro` is the account balance right
    after this entry. The idempotency key makes every write safe to retry; a call event has at
    most one burn."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(CreditAccount, on_delete=models.CASCADE, related_name="entries")
    kind = models.CharField(max_length=16, choices=LedgerKind.choices)
    amount_micro = models.BigIntegerField()
    balance_after_micro = models.BigIntegerField()
    # RESTRICT, not PROTECT: an event alone can never be deleted from under its burn, but a
    # user's deletion still removes both together.
    event = models.ForeignKey(
        LlmCallEvent,
        on_delete=models.RESTRICT,
        null=True,
        blank=True,
        related_name="ledger_entries",
    )
    idempotency_key = models.CharField(max_length=255, unique=True)
    note = models.CharField(max_length=500, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = LedgerEntryQuerySet.as_manager()

    class Meta:
        db_table = "credit_ledger_entries"
        ordering = ("-created_at",)
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["account", "-created_at"], name="ledger_account_created"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["event"],
                condition=Q(kind="burn"),
                name="ledger_one_burn_per_event",
            ),
            models.CheckConstraint(
                condition=(Q(kind="grant") & Q(amount_micro__gt=0))
                | (Q(kind="refund") & Q(amount_micro__gt=0))
                | (Q(kind="burn") & Q(amount_micro__lt=0) & Q(event__isnull=False))
                | (Q(kind="adjustment") & ~Q(amount_micro=0)),
                name="ledger_amount_sign_by_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_micro} µcr ({self.id})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise LedgerImmutableError("Ledger entries are append-only; write a new entry.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise LedgerImmutableError("Ledger entries are append-only; write a new entry instead.")


def _reservation_expiry() -> datetime:
    return timezone.now() + RESERVATION_TTL


class ReservationStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SETTLED = "settled", "Settled"
    RELEASED = "released", "Released"
    EXPIRED = "expired", "Expired"


class Reservation(models.Model):
    """Credits held for one call's worst case until it is settled (the call happened and was
    burned), released (it never happened) or expired (nobody came back for it)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(
        CreditAccount, on_delete=models.CASCADE, related_name="reservations"
    )
    amount_micro = models.BigIntegerField()
    status = models.CharField(
        max_length=8, choices=ReservationStatus.choices, default=ReservationStatus.ACTIVE
    )
    purpose = models.CharField(max_length=16, choices=CallPurpose.choices)
    model_id = models.CharField(max_length=MODEL_ID_MAX_LENGTH, blank=True, default="")
    session_id = models.UUIDField(null=True, blank=True)
    turn_id = models.UUIDField(null=True, blank=True)
    # What the call's spending limits are about: the room, and the API key that asked for it.
    room_id = models.UUIDField(null=True, blank=True)
    api_key_id = models.UUIDField(null=True, blank=True)
    event = models.ForeignKey(
        LlmCallEvent, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(default=_reservation_expiry)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "credit_reservations"
        ordering = ("-created_at",)
        indexes = [
            models.Index(
                fields=["expires_at"],
                condition=Q(status="active"),
                name="reservations_active_expiry",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount_micro__gte=0), name="reservations_amount_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(status="active", closed_at__isnull=True)
                | (~Q(status="active") & Q(closed_at__isnull=False)),
                name="reservations_closed_at_iff_closed",
            ),
        ]

    def __str__(self) -> str:
        return f"reservation {self.amount_micro} µcr ({self.status})"


# --- spending limits -----------------------------------------------------------------------


class LimitScope(models.TextChoices):
    USER = "user", "User"
    ROOM = "room", "Room"
    API_KEY = "api_key", "API key"


class LimitWindow(models.TextChoices):
    DAY = "day", "Day (UTC)"
    MONTH = "month", "Month (UTC)"


class SpendingLimit(models.Model):
    """A cap on what a user spends per UTC day or month: on everything they spend (`user`), on
    one of their rooms (`room_id`) or through one of their API keys (`api_key`). Checked under
    the credit account's lock with credits, so concurrent calls never pass it together. A limit
    staff set (`set_by_staff`) cannot be raised or removed by its user."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="spending_limits"
    )
    scope = models.CharField(max_length=8, choices=LimitScope.choices)
    room_id = models.UUIDField(null=True, blank=True)
    api_key = models.ForeignKey(
        "accounts.ApiKey",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="spending_limits",
    )
    window = models.CharField(max_length=8, choices=LimitWindow.choices)
    limit_micro = models.BigIntegerField()
    set_by_staff = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "spending_limits"
        ordering = ("scope", "window", "created_at")
        constraints = [
            models.CheckConstraint(
                condition=Q(limit_micro__gt=0), name="spending_limits_limit_positive"
            ),
            models.CheckConstraint(
                condition=Q(scope="user", room_id__isnull=True, api_key__isnull=True)
                | Q(scope="room", room_id__isnull=False, api_key__isnull=True)
                | Q(scope="api_key", room_id__isnull=True, api_key__isnull=False),
                name="spending_limits_target_matches_scope",
            ),
            # One limit per target and window (one constraint per scope: a partial index works
            # on every database, where NULLS NOT DISTINCT does not).
            models.UniqueConstraint(
                fields=["user", "window"],
                condition=Q(scope="user"),
                name="spending_limits_one_per_user_window",
            ),
            models.UniqueConstraint(
                fields=["user", "room_id", "window"],
                condition=Q(scope="room"),
                name="spending_limits_one_per_room_window",
            ),
            models.UniqueConstraint(
                fields=["api_key", "window"],
                condition=Q(scope="api_key"),
                name="spending_limits_one_per_key_window",
            ),
        ]

    def __str__(self) -> str:
        target = {"user": "all spending", "room": "a room", "api_key": "an API key"}[self.scope]
        window = {"day": "daily", "month": "monthly"}[self.window]
        return f"{window.capitalize()} limit on {target}"

    @property
    def subject_id(self) -> Any:
        """Whose spending the limit caps: the user, the room or the key."""
        return {"user": self.user_id, "room": self.room_id, "api_key": self.api_key_id}[self.scope]


class SpendTotal(models.Model):
    """What a user, a room or an API key burned in one UTC day or month: a running total kept in
    the transaction that writes each burn (refunds take theirs back), so a limit's check never
    scans history. A call counts in the period in which it started."""

    scope = models.CharField(max_length=8, choices=LimitScope.choices)
    subject_id = models.UUIDField()
    window = models.CharField(max_length=8, choices=LimitWindow.choices)
    period_start = models.DateField()  # the day, or the first day of the month
    burned_micro = models.BigIntegerField(default=0)

    class Meta:
        db_table = "spend_totals"
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "subject_id", "window", "period_start"],
                name="spend_totals_one_per_period",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.subject_id} {self.window} {self.period_start}"


class RefusalReason(models.TextChoices):
    CREDITS = "insufficient_credits", "Not enough credits"
    LIMIT = "spending_limit_reached", "Spending limit reached"


class Refusal(models.Model):
    """A call that did not run because its reservation was refused, for the staff dashboard."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=32, choices=RefusalReason.choices)
    purpose = models.CharField(max_length=16, choices=CallPurpose.choices)
    limit = models.ForeignKey(
        SpendingLimit, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    required_micro = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        db_table = "reservation_refusals"
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.reason} ({self.created_at:%Y-%m-%d %H:%M})"
