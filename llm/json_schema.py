"""The JSON-schema subset Pantheon uses for structured output: validate an answer, and build a
schema-valid example (the offline model's answer and the test stub's default).

Supported keywords: `type` (object, array, string, integer, number, boolean, null, or a list of
them), `properties`, `required`, `additionalProperties` (false or a schema), `enum`, `const`,
`items`, `minItems`, `maxItems`, `uniqueItems`, `minLength`, `maxLength`, `pattern`, `minimum`,
`maximum`, `anyOf`. Annotations (`title`, `description`, `default`, `$schema`, `examples`) are
ignored. Any other keyword is a programming error and raises `UnsupportedSchema`, so a schema we
cannot check is never silently accepted.

Pure functions, no Django: the test stub imports this module outside any Django process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

SCHEMA_ANNOTATIONS = frozenset(
    {"title", "description", "default", "$schema", "examples", "$comment"}
)
SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "enum",
        "const",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "anyOf",
    }
)


class UnsupportedSchema(ValueError):
    """The schema uses a keyword outside the subset this module implements."""


def _type_matches(value: Any, type_name: str) -> bool:
    if type_name == "object":
        return isinstance(value, dict)
    if type_name == "array":
        return isinstance(value, list)
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "boolean":
        return isinstance(value, bool)
    if type_name == "null":
        return value is None
    if isinstance(value, bool):  # bool is an int in Python, never in JSON
        return False
    if type_name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if type_name == "number":
        return isinstance(value, int | float)
    raise UnsupportedSchema(f"unknown type {type_name!r}")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def schema_errors(instance: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every way `instance` violates `schema`, as readable messages (empty list = valid)."""
    unknown = set(schema) - SCHEMA_KEYWORDS - SCHEMA_ANNOTATIONS
    if unknown:
        raise UnsupportedSchema(f"unsupported schema keyword(s) at {path}: {sorted(unknown)}")
    errors: list[str] = []

    if "anyOf" in schema:
        branches = schema["anyOf"]
        if not any(not schema_errors(instance, branch, path) for branch in branches):
            errors.append(f"{path}: matches none of the allowed alternatives")

    declared = schema.get("type")
    if declared is not None:
        types = [declared] if isinstance(declared, str) else list(declared)
        if not any(_type_matches(instance, t) for t in types):
            errors.append(f"{path}: expected {' or '.join(types)}")
            return errors  # the other keywords presuppose the type

    if "const" in schema and _canonical(instance) != _canonical(schema["const"]):
        errors.append(f"{path}: must be {schema['const']!r}")
    if "enum" in schema and _canonical(instance) not in {_canonical(v) for v in schema["enum"]}:
        errors.append(f"{path}: {instance!r} is not one of {schema['enum']!r}")

    if isinstance(instance, dict):
        errors += _object_errors(instance, schema, path)
    elif isinstance(instance, list):
        errors += _array_errors(instance, schema, path)
    elif isinstance(instance, str):
        if "minLength" in schema and len(instance) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errors.append(f"{path}: does not match {schema['pattern']!r}")
    elif isinstance(instance, int | float) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{path}: less than {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{path}: greater than {schema['maximum']}")
    return errors


def _object_errors(instance: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    errors: list[str] = []
    properties: dict[str, Any] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in instance:
            errors.append(f"{path}: missing required property {name!r}")
    additional = schema.get("additionalProperties", True)
    for name, value in instance.items():
        child = f"{path}.{name}"
        if name in properties:
            errors += schema_errors(value, properties[name], child)
        elif additional is False:
            errors.append(f"{path}: unexpected property {name!r}")
        elif isinstance(additional, dict):
            errors += schema_errors(value, additional, child)
    return errors


def _array_errors(instance: list[Any], schema: dict[str, Any], path: str) -> list[str]:
    errors: list[str] = []
    if "minItems" in schema and len(instance) < schema["minItems"]:
        errors.append(f"{path}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(instance) > schema["maxItems"]:
        errors.append(f"{path}: more than {schema['maxItems']} items")
    if schema.get("uniqueItems"):
        seen = [_canonical(v) for v in instance]
        if len(set(seen)) != len(seen):
            errors.append(f"{path}: items are not unique")
    if isinstance(schema.get("items"), dict):
        for index, value in enumerate(instance):
            errors += schema_errors(value, schema["items"], f"{path}[{index}]")
    return errors


def schema_example(
    schema: dict[str, Any], *, text: str = "example", prefer: Sequence[str] = ()
) -> Any:
    """A value valid against `schema`, built deterministically.

    Strings are `text` (cut to `maxLength`, padded to `minLength`); integers and numbers are 0 or
    their `minimum`; arrays hold `minItems` items. For an enum, the first value of `prefer` that
    the enum allows wins, else the enum's first value; an array of enum values takes every
    allowed value of `prefer` in order (at least one item), within `maxItems`.
    """
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        allowed = list(schema["enum"])
        return next((p for p in prefer if p in allowed), allowed[0])
    if "anyOf" in schema:
        return schema_example(schema["anyOf"][0], text=text, prefer=prefer)
    declared = schema.get("type", "object" if "properties" in schema else "string")
    kind = declared if isinstance(declared, str) else next(t for t in declared if t != "null")
    if kind == "object":
        return {
            name: schema_example(child, text=text, prefer=prefer)
            for name, child in schema.get("properties", {}).items()
        }
    if kind == "array":
        return _array_example(schema, text=text, prefer=prefer)
    if kind == "string":
        value = text[: schema["maxLength"]] if "maxLength" in schema else text
        return value.ljust(schema.get("minLength", 0), ".")
    if kind in ("integer", "number"):
        value = max(0, schema.get("minimum", 0))
        value = min(value, schema.get("maximum", value))
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    return None


def _array_example(schema: dict[str, Any], *, text: str, prefer: Sequence[str]) -> list[Any]:
    items: dict[str, Any] = schema.get("items", {})
    low = schema.get("minItems", 0)
    high = schema.get("maxItems")
    unique = bool(schema.get("uniqueItems"))
    if "enum" in items:
        allowed = list(items["enum"])
        chosen = [p for p in dict.fromkeys(prefer) if p in allowed] or allowed[:1]
        for extra in allowed:  # pad to minItems with the remaining values, in enum order
            if len(chosen) >= low:
                break
            if extra not in chosen or not unique:
                chosen.append(extra)
        return chosen[:high] if high is not None else chosen
    values: list[Any] = []
    for index in range(low):
        value = schema_example(items, text=text, prefer=prefer)
        if unique and isinstance(value, str):
            value = f"{value} {index + 1}"
        elif unique and isinstance(value, int | float) and not isinstance(value, bool):
            value = value + index
        values.append(value)
    return values
