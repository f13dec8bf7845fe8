"""Reads of the model catalog."""

from __future__ import annotations

from django.db.models import QuerySet

from llm.models import ModelConfig


def model_list_active() -> QuerySet[ModelConfig]:
    """Active catalog models, by id."""
    return ModelConfig.objects.filter(is_active=True).order_by("id")
