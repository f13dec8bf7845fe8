"""Serializers of the llm API."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from llm.models import ModelConfig
from pantheon.api.serializers import ModelIdField

_PRICES_SCHEMA = {
    "type": "object",
    "additionalProperties": {"type": "string", "format": "decimal"},
    "description": "Current USD prices per 1M tokens, by token bucket, as decimal strings "
    '(e.g. {"input": "0.15", "output": "0.60"}); empty when the model is not priced.',
}


class ModelConfigSerializer(serializers.ModelSerializer):
    """A model of the catalog: its `id` is what an agent's `model` and a room's `manager_model`
    take."""

    # The view passes the page's prices in the context: `{"prices": {id: {...}}}`.
    id = ModelIdField(read_only=True)
    prices = serializers.SerializerMethodField()

    class Meta:
        model = ModelConfig
        fields = (
            "id",
            "display_name",
            "context_window",
            "max_output_tokens",
            "supports_structured_output",
            "prices",
        )
        read_only_fields = fields

    @extend_schema_field(_PRICES_SCHEMA)
    def get_prices(self, obj: ModelConfig) -> dict[str, str]:
        prices = (self.context.get("prices") or {}).get(obj.id) or {}
        return {str(bucket): str(price) for bucket, price in prices.items() if price is not None}


class ToolSerializer(serializers.Serializer):
    """A tool an agent may be given."""

    name = serializers.CharField()
    description = serializers.CharField()
    kind = serializers.ChoiceField(
        choices=["builtin", "installed", "http"],
        help_text="Shipped with Pantheon, installed by the operator, or an HTTP tool of staff.",
    )
    parameters = serializers.DictField(help_text="The JSON schema of its arguments.")
