"""The structured-output schema subset: validation and schema-valid examples."""

from __future__ import annotations

import pytest

from llm.json_schema import UnsupportedSchema, schema_errors, schema_example

ROUTING = {
    "type": "object",
    "properties": {
        "agents": {
            "type": "array",
            "items": {"type": "string", "enum": ["ada", "bo", "cy"]},
            "minItems": 1,
            "maxItems": 2,
            "uniqueItems": True,
        },
        "reason": {"type": "string", "maxLength": 20},
    },
    "required": ["agents", "reason"],
    "additionalProperties": False,
}

ITEM = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "turns": {"type": "array", "items": {"type": "integer", "minimum": 1}},
    },
    "required": ["text", "turns"],
    "additionalProperties": False,
}
SUMMARY = {
    "type": "object",
    "properties": {
        "summary_text": {"type": "string"},
        "key_facts": {"type": "array", "items": ITEM},
        "decisions": {"type": "array", "items": ITEM, "minItems": 2},
        "confidence": {"type": "number", "minimum": 0.5, "maximum": 1},
        "final": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
    },
    "required": ["summary_text", "key_facts", "decisions", "confidence", "final", "note"],
    "additionalProperties": False,
}


def test_valid_instance_has_no_errors() -> None:
    assert schema_errors({"agents": ["bo", "ada"], "reason": "both asked"}, ROUTING) == []


@pytest.mark.parametrize(
    ("instance", "fragment"),
    [
        ({"agents": ["bo"]}, "missing required property 'reason'"),
        ({"agents": ["bo"], "reason": "x", "extra": 1}, "unexpected property 'extra'"),
        ({"agents": [], "reason": "x"}, "fewer than 1 items"),
        ({"agents": ["ada", "bo", "cy"], "reason": "x"}, "more than 2 items"),
        ({"agents": ["bo", "bo"], "reason": "x"}, "not unique"),
        ({"agents": ["zed"], "reason": "x"}, "'zed' is not one of"),
        ({"agents": "bo", "reason": "x"}, "$.agents: expected array"),
        ({"agents": ["bo"], "reason": "x" * 21}, "longer than 20"),
        ({"agents": ["bo"], "reason": 3}, "$.reason: expected string"),
        (["bo"], "$: expected object"),
    ],
)
def test_each_violation_is_reported(instance: object, fragment: str) -> None:
    errors = schema_errors(instance, ROUTING)
    assert any(fragment in e for e in errors), errors


def test_integer_number_boolean_and_null() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert schema_errors({"n": 3}, schema) == []
    assert schema_errors({"n": 3.0}, schema) == []
    assert schema_errors({"n": 3.5}, schema) != []
    assert schema_errors({"n": True}, schema) != []  # a bool is not a JSON integer
    assert schema_errors(None, {"type": ["string", "null"]}) == []
    assert schema_errors(0.4, {"type": "number", "minimum": 0.5}) != []


def test_unsupported_keywords_are_refused() -> None:
    with pytest.raises(UnsupportedSchema):
        schema_errors({}, {"type": "object", "$ref": "#/defs/x"})


def test_example_prefers_mentioned_enum_values_in_order() -> None:
    value = schema_example(ROUTING, text="routed", prefer=["cy", "zed", "ada", "cy"])
    assert value == {"agents": ["cy", "ada"], "reason": "routed"}
    assert schema_errors(value, ROUTING) == []


def test_example_falls_back_to_first_enum_value_and_respects_limits() -> None:
    value = schema_example(ROUTING, text="a reason longer than twenty characters")
    assert value["agents"] == ["ada"]
    assert len(value["reason"]) == 20
    assert schema_errors(value, ROUTING) == []


def test_example_of_a_nested_schema_is_valid() -> None:
    value = schema_example(SUMMARY, text="summary")
    assert schema_errors(value, SUMMARY) == []
    assert len(value["decisions"]) == 2
    assert value["key_facts"] == []
    assert value["confidence"] == 0.5
