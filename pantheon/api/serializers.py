"""Request-body plumbing shared by every endpoint: the strict base serializer and strict fields.

Two promises of the API live here. *Strict input*: a body field the endpoint does
not define is a 400 naming it, never silently ignored. *Hostile input stays cheap*: every check is
linear in the input's size and the length limits run first, so no body holds a worker.

DRF's stock fields coerce (`123` → `"123"`, `"5"` → `5`, `"true"` → `True`). The OpenAPI schema
promises JSON types and a schema-driven client is held to it, so a value of the wrong JSON type
is a 400 naming the field, never silently converted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from pantheon.credits import CREDITS_PATTERN, format_credits, parse_credits

MAX_DB_INTEGER = 2_147_483_647  # PostgreSQL `integer`
MODEL_ID_MAX = 128  # the catalog's primary key
UNKNOWN_FIELD = "Unknown field."
# A body can hold thousands of made-up keys: naming a few is enough, and keeps the answer small.
MAX_UNKNOWN_FIELDS_REPORTED = 20


class StrictInputSerializer(serializers.Serializer):
    """The base of every request body. A field the endpoint does not define — a typo, or a
    read-only field such as `id` or `created_at` — is a 400 `validation_error` whose details name
    it, next to the body's other errors. The schema states `additionalProperties: false` for
    these bodies (`pantheon.api.schema.PantheonAutoSchema`)."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        unknown = self._unknown_fields(data)
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if unknown and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **unknown}) from exc
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value

    def _unknown_fields(self, data: Any) -> dict[str, list[str]]:
        if not isinstance(data, Mapping):
            return {}  # DRF itself answers 400 for a body that is not a JSON object
        writable = {name for name, field in self.fields.items() if not field.read_only}
        unknown = [str(name) for name in data if name not in writable]
        return {name: [UNKNOWN_FIELD] for name in unknown[:MAX_UNKNOWN_FIELDS_REPORTED]}


# --- strict fields -----------------------------------------------------------------------------


class DocumentedPattern(RegexValidator):
    """A pattern stated in the schema, checked by `accepts`, an equivalent test that is linear
    in the value's length. Python's regex engine backtracks: `^[^\\x00]*[^\\s\\x00][^\\x00]*$`
    takes quadratic time on a long string holding a NUL (seconds for 40 KB)."""

    def __init__(self, regex: str, message: str, accepts: Callable[[str], bool]) -> None:
        super().__init__(regex, message)
        self.accepts = accepts

    def __call__(self, value: Any) -> None:
        if not self.accepts(str(value)):
            raise DjangoValidationError(self.message, code=self.code)


def _has_no_nul(value: str) -> bool:
    return "\x00" not in value


def _is_visible_without_nul(value: str) -> bool:
    # `str.isspace` and the regex class `\s` agree on every code point.
    return "\x00" not in value and value != "" and not value.isspace()


# PostgreSQL text cannot hold NUL; the schema says so with a pattern.
NO_NUL = DocumentedPattern(r"^[^\x00]*$", "Null characters are not allowed.", _has_no_nul)
VISIBLE_NO_NUL = DocumentedPattern(
    r"^[^\x00]*[^\s\x00][^\x00]*$",
    "Must contain a visible character and no null characters.",
    _is_visible_without_nul,
)


class StrictCharField(serializers.CharField):
    """A JSON string only, of at most `max_length` characters (required: every text the API
    takes is bounded). The type and the length are checked before anything else, on the string
    as sent, so trimming and the character checks only ever see a bounded string. Unless the
    caller gives its own pattern, the schema states what the field accepts: no NUL characters,
    and at least one visible character when it may not be blank (surrounding whitespace is
    trimmed)."""

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("max_length") is None:
            raise TypeError("StrictCharField needs a max_length.")
        super().__init__(**kwargs)
        if not any(isinstance(v, RegexValidator) for v in self.validators):
            self.validators.append(NO_NUL if self.allow_blank else VISIBLE_NO_NUL)

    def run_validation(self, data: Any = empty) -> Any:
        if data is not empty and data is not None:
            if not isinstance(data, str):
                self.fail("invalid")
            if len(data) > self.max_length:
                self.fail("max_length", max_length=self.max_length)
        return super().run_validation(data)


class StrictListField(serializers.ListField):
    """A JSON array whose length is checked before any of its items is."""

    def to_internal_value(self, data: Any) -> list[Any]:
        if isinstance(data, list) and self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
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
        kwargs.setdefault("max_value", MAX_DB_INTEGER)
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


class ModelIdField(StrictCharField):
    """The id of a model of the catalog (`openai/gpt-4o-mini`), in request and response bodies.
    Whether an id names an active model is a domain rule the services check (staff edit the
    catalog at any time), so the schema describes a string with an example, never an enum: a
    client generated today keeps working with the models added tomorrow."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", MODEL_ID_MAX)
        super().__init__(**kwargs)


# --- shared response bodies --------------------------------------------------------------------
# Bodies that more than one app renders. The docstrings are the schema's descriptions.


class CreditsSerializer(serializers.Serializer):
    """The caller's credits, as decimal strings with 6 places (e.g. `"3.090000"`)."""

    balance = serializers.CharField()
    reserved = serializers.CharField()
    available = serializers.CharField()


class SpendingWarningSerializer(serializers.Serializer):
    """A spending limit spent to 80 % or more in its current window."""

    id = serializers.UUIDField()
    scope = serializers.ChoiceField(choices=["user", "room", "api_key"])
    window = serializers.ChoiceField(choices=["day", "month"])
    limit = serializers.CharField(help_text="Credits, 6 decimal places.")
    spent = serializers.CharField(help_text="Credits burned in the current window.")


@extend_schema_field(
    {
        "type": "string",
        "format": "decimal",
        "pattern": CREDITS_PATTERN,
        "example": "25.000000",
    }
)
class CreditAmountField(serializers.Field):
    """A positive credit amount as a decimal string with at most 6 places (`"25.000000"`), held
    as integer micro-credits."""

    default_error_messages = {
        "invalid": 'Must be a decimal string of credits, e.g. "25.000000".',
        "credits": "Must be a positive amount of credits: {reason}.",
    }
    MAX_LENGTH = 40

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, str | int | float):
            self.fail("invalid")
        text = str(data)
        if len(text) > self.MAX_LENGTH:
            self.fail("credits", reason="too long")
        try:
            return parse_credits(text)
        except ValueError as exc:
            self.fail("credits", reason=str(exc))
            raise  # unreachable: `fail` raises

    def to_representation(self, value: int) -> str:
        return format_credits(value)
