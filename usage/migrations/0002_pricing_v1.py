"""The first pricing version, "v1": list prices (USD per 1M tokens) of every model in the initial
catalog (llm/catalog.py INITIAL_MODELS; ids copied as literals because `usage` must not import
`llm`). A blank cached / cache-write price means the input price, a blank reasoning price the
output price."""

from datetime import UTC, datetime
from decimal import Decimal

from django.db import migrations

V1_LABEL = "v1"

# model id: (input, output, cached_input, cache_write, reasoning)
V1_PRICES = {
    "openai/gpt-4o-mini": ("0.15", "0.60", "0.075", None, None),
    "openai/gpt-4o": ("2.50", "10.00", "1.25", None, None),
    "openai/gpt-4.1": ("2.00", "8.00", "0.50", None, None),
    "openai/gpt-4.1-mini": ("0.40", "1.60", "0.10", None, None),
    "openai/o3-mini": ("1.10", "4.40", "0.55", None, None),
    "openai/gpt-3.5-turbo": ("0.50", "1.50", None, None, None),
    "anthropic/claude-3.5-haiku": ("0.80", "4.00", "0.08", "1.00", None),
    "anthropic/claude-sonnet-4": ("3.00", "15.00", "0.30", "3.75", None),
    "google/gemini-2.0-flash-001": ("0.10", "0.40", "0.025", None, None),
    "google/gemini-2.5-pro": ("1.25", "10.00", "0.31", None, None),
    "meta-llama/llama-3.3-70b-instruct": ("0.13", "0.40", None, None, None),
    "mistralai/mistral-7b-instruct": ("0.03", "0.06", None, None, None),
    "qwen/qwen-2.5-7b-instruct": ("0.04", "0.10", None, None, None),
    "deepseek/deepseek-chat": ("0.30", "0.85", None, None, None),
}


def _decimal(value):
    return None if value is None else Decimal(value)


def load_v1(apps, schema_editor):
    PricingVersion = apps.get_model("usage", "PricingVersion")
    ModelPrice = apps.get_model("usage", "ModelPrice")
    version, _ = PricingVersion.objects.get_or_create(
        label=V1_LABEL,
        defaults={
            "effective_from": datetime(2026, 1, 1, tzinfo=UTC),
            "credits_per_usd": Decimal("100"),
            "markup": Decimal("1.00"),
            "status": "active",
        },
    )
    for model_id, (inp, out, cached, cache_write, reasoning) in V1_PRICES.items():
        ModelPrice.objects.get_or_create(
            version=version,
            model_id=model_id,
            defaults={
                "input": Decimal(inp),
                "output": Decimal(out),
                "cached_input": _decimal(cached),
                "cache_write": _decimal(cache_write),
                "reasoning": _decimal(reasoning),
            },
        )


def unload_v1(apps, schema_editor):
    PricingVersion = apps.get_model("usage", "PricingVersion")
    PricingVersion.objects.filter(label=V1_LABEL, events__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("usage", "0001_initial")]

    operations = [migrations.RunPython(load_v1, unload_v1)]
