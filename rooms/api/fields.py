"""The catalog model id field of room and agent bodies (the generic strict fields live in
`pantheon.api.serializers`)."""

from __future__ import annotations

import logging
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension

from llm.models import ModelConfig
from pantheon.api.serializers import StrictCharField

logger = logging.getLogger(__name__)


class CatalogModelIdField(StrictCharField):
    """The id of a model of the catalog (`openai/gpt-4o-mini`). Whether it is an active model is
    a domain rule checked by the services; the schema lists the active ids as an enum."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 128)
        super().__init__(**kwargs)


def _active_model_ids() -> list[str] | None:
    try:
        return list(ModelConfig.objects.filter(is_active=True).values_list("pk", flat=True))
    except Exception:  # no database while generating the schema offline: no enum then
        logger.debug("model catalog unavailable for the schema", exc_info=True)
        return None


class CatalogModelIdFieldSchema(OpenApiSerializerFieldExtension):
    """The schema of `CatalogModelIdField`: the catalog's active model ids, read when the schema
    is generated, so a schema-driven client only sends ids the API accepts."""

    target_class = CatalogModelIdField

    def get_name(self) -> str:
        return "CatalogModelId"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        ids = _active_model_ids()
        if not ids:
            return {"type": "string", "minLength": 1, "maxLength": 128}
        return {"type": "string", "enum": ids}
