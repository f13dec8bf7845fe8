"""Reads of the model catalog.

`model_get` answers from the process's copy of the catalog, reloaded at least every
`CATALOG_CACHE_SECONDS`: staff edits take effect within that bound (the admin says so), and the
turn's hot path reads a model without a query."""

from __future__ import annotations

from django.db.models import QuerySet

from llm.models import ModelConfig
from pantheon.process_cache import ProcessValue


def model_list_active() -> QuerySet[ModelConfig]:
    """Active catalog models, by id."""
    return ModelConfig.objects.filter(is_active=True).order_by("id")


def _catalog_load() -> dict[str, ModelConfig]:
    # One query for the whole catalog: it is a staff-edited list of tens of models.
    return {model.pk: model for model in ModelConfig.objects.all()}


_catalog = ProcessValue(load=_catalog_load, seconds_setting="CATALOG_CACHE_SECONDS")


def model_get(model_id: str) -> ModelConfig | None:
    """The catalog entry `model_id`, active or not; None when the catalog has no such model.

    The instance is shared by the process's threads until the next reload: read it, never
    change or save it."""
    return _catalog.get().get(model_id)
