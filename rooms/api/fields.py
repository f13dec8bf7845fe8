"""Strict JSON field types for request bodies.

DRF's stock fields coerce (`123` → `"123"`, `"5"` → `5`, `"true"` → `True`). The OpenAPI schema
promises JSON types and a schema-driven client is held to it, so a value of the wrong JSON type
is a 400 naming the field, never silently converted.
"""

from __future__ import annotations

import logging
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers

from llm.models import ModelConfig

logger = logging.getLogger(__name__)

_MAX_DB_INTEGER = 2_147_483_647  # PostgreSQL `integer`


# PostgreSQL text cannot hold NUL; DRF rejects it, and the schema says so with a pattern.
_NO_NUL = RegexValidator(r"^[^\x00]*$", "Null characters are not allowed.")
_NOT_BLANK_NO_NUL = RegexValidator(
    r"^[^\x00]*[^\s\x00][^\x00]*$", "Must contain a visible character and no null characters."
)


class StrictCharField(serializers.CharField):
    """A JSON string only. Unless the caller gives its own pattern, the schema states what the
    field accepts: no NUL characters, and at least one visible character when it may not be
    blank (surrounding whitespace is trimmed)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not any(isinstance(v, RegexValidator) for v in self.validators):
            self.validators.append(_NO_NUL if self.allow_blank else _NOT_BLANK_NO_NUL)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON `true` or `false` only."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only (an integral number such as `5.0` counts); bounded by the database
    column so an oversized number is a 400, not a database error."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_value", _MAX_DB_INTEGER)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        if isinstance(data, float) and not data.is_integer():
            self.fail("invalid")
        return int(data)


class StrictDecimalNumberField(serializers.FloatField):
    """A JSON number (not a string), range-checked, then held as a `Decimal` rounded half-up to
    `decimal_places` — so any number the schema allows is accepted and stored exactly."""

    def __init__(self, *, decimal_places: int, **kwargs: Any) -> None:
        self.quantum = Decimal(1).scaleb(-decimal_places)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Decimal:  # type: ignore[override]
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        if self.max_value is not None and data > self.max_value:
            self.fail("max_value", max_value=self.max_value)
        if self.min_value is not None and data < self.min_value:
            self.fail("min_value", min_value=self.min_value)
        # repr() is the shortest text that round-trips the float: 0.7 -> Decimal("0.7").
        return Decimal(repr(data)).quantize(self.quantum, rounding=ROUND_HALF_UP)


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
