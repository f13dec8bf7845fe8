"""Serializers for the usage API: query parameters in, events, ledger entries and summaries
out. Units: credits as strings with 6 places, USD as decimal strings, OE tokens with 4 places."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from pantheon.api.serializers import (
    CreditAmountField,
    CreditsSerializer,
    ModelIdField,
    StrictInputSerializer,
)
from pantheon.credits import format_credits
from usage.models import LedgerEntry, LimitScope, LimitWindow, LlmCallEvent
from usage.selectors import format_usd, spending_warnings_for_user

USAGE_DEFAULT_DAYS = 30
USAGE_MAX_DAYS = 366


class UsageQuerySerializer(serializers.Serializer):
    """`?from=&to=`: UTC days, both inclusive; by default the last 30 days up to `to` (today
    when absent)."""

    # `from` is a keyword: the fields are renamed below.
    date_from = serializers.DateField(required=False, help_text="First day (YYYY-MM-DD).")
    date_to = serializers.DateField(required=False, help_text="Last day (YYYY-MM-DD).")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["from"] = fields.pop("date_from")
        fields["to"] = fields.pop("date_to")
        return fields

    def validate(self, attrs: dict) -> dict:
        for name in ("from", "to"):
            if self.initial_data.get(name) == "":
                raise serializers.ValidationError(
                    {name: ["Must be a date (YYYY-MM-DD), not empty."]}
                )
        date_to = attrs.pop("to", None) or timezone.now().date()
        # The first day of the default range, never before the calendar's first day.
        default_from = date.fromordinal(max(1, date_to.toordinal() - (USAGE_DEFAULT_DAYS - 1)))
        date_from = attrs.pop("from", None) or default_from
        if date_from > date_to:
            raise serializers.ValidationError({"from": ["Must not be after `to`."]})
        if (date_to - date_from).days + 1 > USAGE_MAX_DAYS:
            raise serializers.ValidationError(
                {"from": [f"The range may cover at most {USAGE_MAX_DAYS} days."]}
            )
        return {"date_from": date_from, "date_to": date_to}


# --- spending limits -------------------------------------------------------------------------


class SpendingLimitSerializer(serializers.Serializer):
    """A spending limit and where it stands in its current window (UTC day or month)."""

    id = serializers.UUIDField(source="limit.id")
    scope = serializers.ChoiceField(choices=LimitScope.values, source="limit.scope")
    room_id = serializers.UUIDField(source="limit.room_id", allow_null=True)
    api_key_id = serializers.UUIDField(source="limit.api_key_id", allow_null=True)
    window = serializers.ChoiceField(choices=LimitWindow.values, source="limit.window")
    limit = CreditAmountField(source="limit.limit_micro")
    spent = CreditAmountField(
        source="spent_micro", help_text="Credits burned in the current window."
    )
    remaining = CreditAmountField(
        source="remaining_micro", help_text="`limit` - `spent`, never below zero."
    )
    resets_at = serializers.DateTimeField(help_text="When the window ends (UTC).")
    set_by_staff = serializers.BooleanField(
        source="limit.set_by_staff",
        help_text="Set by staff: you may lower it, not raise or delete it.",
    )
    created_at = serializers.DateTimeField(source="limit.created_at")


class SpendingLimitCreateSerializer(StrictInputSerializer):
    """A new limit: on you (`user`), one of your rooms (`room_id`) or one of your API keys
    (`api_key_id`), per UTC `day` or `month`."""

    scope = serializers.ChoiceField(choices=LimitScope.values)
    room_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="Scope `room` only: one of your rooms."
    )
    api_key_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="Scope `api_key` only: one of your keys."
    )
    window = serializers.ChoiceField(choices=LimitWindow.values)
    limit = CreditAmountField(help_text='Credits per window, e.g. `"25.000000"`.')

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        scope = attrs["scope"]
        errors: dict[str, list[str]] = {}
        for name, wanted in (("room_id", "room"), ("api_key_id", "api_key")):
            given = attrs.get(name) is not None
            if scope == wanted and not given:
                errors[name] = [f"Required for scope `{wanted}`."]
            elif scope != wanted and given:
                errors[name] = [f"Only for scope `{wanted}`."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class SpendingLimitUpdateSerializer(StrictInputSerializer):
    """A limit's new amount."""

    limit = CreditAmountField(help_text="Credits per window.")


class UsageFiguresSerializer(serializers.Serializer):
    credits_burned = serializers.CharField(help_text="Credits burned, 6 decimal places.")
    oe_tokens = serializers.CharField(help_text="Output-equivalent tokens, 4 decimal places.")
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    calls = serializers.IntegerField()


class UsageDaySerializer(UsageFiguresSerializer):
    date = serializers.DateField()


class UsageModelSerializer(UsageFiguresSerializer):
    model = ModelIdField(read_only=True)


class UsageSummarySerializer(serializers.Serializer):
    """The caller's credits now and their calls in the range, by day and by model."""

    credits = CreditsSerializer()
    by_day = UsageDaySerializer(many=True)
    by_model = UsageModelSerializer(many=True)
    spending_limits = SpendingLimitSerializer(many=True)


class LlmCallEventSerializer(serializers.ModelSerializer):
    """One call: `input_tokens` and `output_tokens` are the provider's totals; cached,
    cache-write and reasoning tokens are parts of them."""

    model = ModelIdField(read_only=True)
    pricing_version = serializers.SerializerMethodField()
    cost_usd = serializers.SerializerMethodField()
    oe_tokens = serializers.DecimalField(max_digits=20, decimal_places=4, read_only=True)
    credits_burned = serializers.SerializerMethodField()

    class Meta:
        model = LlmCallEvent
        fields = (
            "id",
            "created_at",
            "purpose",
            "status",
            "error_code",
            "model",
            "session_id",
            "turn_id",
            "agent_id",
            "input_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
            "usage_source",
            "latency_ms",
            "pricing_version",
            "cost_usd",
            "oe_tokens",
            "credits_burned",
        )
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True, help_text="Its label."))
    def get_pricing_version(self, event: LlmCallEvent) -> str | None:
        return event.pricing_version.label if event.pricing_version_id else None

    @extend_schema_field(OpenApiTypes.STR)
    def get_cost_usd(self, event: LlmCallEvent) -> str:
        return format_usd(event.cost_usd)

    @extend_schema_field(OpenApiTypes.STR)
    def get_credits_burned(self, event: LlmCallEvent) -> str:
        return format_credits(event.credits_burned)


class LedgerEntrySerializer(serializers.ModelSerializer):
    """One ledger entry: `amount` is signed (grants and refunds positive, burns negative)."""

    amount = serializers.SerializerMethodField()
    balance_after = serializers.SerializerMethodField()

    class Meta:
        model = LedgerEntry
        fields = ("id", "created_at", "kind", "amount", "balance_after", "event_id", "note")
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_amount(self, entry: LedgerEntry) -> str:
        return format_credits(entry.amount_micro)

    @extend_schema_field(OpenApiTypes.STR)
    def get_balance_after(self, entry: LedgerEntry) -> str:
        return format_credits(entry.balance_after_micro)


def spending_warnings_for(user: Any) -> list[dict[str, Any]]:
    """`auth/me`'s `spending_warnings`: the user's limits spent to 80 % or more."""
    return [
        {
            "id": state.limit.id,
            "scope": state.limit.scope,
            "window": state.limit.window,
            "limit": format_credits(state.limit.limit_micro),
            "spent": format_credits(state.spent_micro),
        }
        for state in spending_warnings_for_user(user=user)
    ]
