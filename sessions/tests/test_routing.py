"""Mention parsing and routing validation: pure functions, no database."""

from __future__ import annotations

import pytest

from sessions.routing import RoutingInvalid, parse_mentions, routing_schema, validate_routing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@ada what do you think?", ["ada"]),
        ("@Ada, @ADA and @ada again", ["ada"]),
        ("hey @bo! and (@cy) — also @ada.", ["bo", "cy", "ada"]),
        ("@cy then @bo then @cy", ["cy", "bo"]),
        ("write to ada@example.com or bo.smith@ada.org", []),
        ("`@ada` is code, ```\n@bo in a block\n``` but @cy is not", ["cy"]),
        ("@adam is not @ada", ["adam", "ada"]),
        ("@ada_2 and @ada-bot", ["ada_2", "ada-bot"]),
        ("no mentions here", []),
        ("@@ada double at", []),
        ("trailing @", []),
        ("@1abc starts with a digit", []),
        ("a:@ada;@bo?", ["ada", "bo"]),
        ("@" + "a" * 33 + " too long", []),
    ],
)
def test_parse_mentions(text: str, expected: list[str]) -> None:
    assert parse_mentions(text) == expected


def test_routing_schema_enumerates_handles() -> None:
    schema = routing_schema(["ada", "bo", "cy"], max_agents=2)
    agents = schema["properties"]["agents"]
    assert agents["items"]["enum"] == ["ada", "bo", "cy"]
    assert (agents["minItems"], agents["maxItems"], agents["uniqueItems"]) == (1, 2, True)
    assert schema["additionalProperties"] is False


def test_validate_routing_accepts_a_valid_answer() -> None:
    decision = validate_routing({"agents": ["bo", "ada"], "reason": " build it "}, ["ada", "bo"], 3)
    assert decision.selected == ["bo", "ada"] and decision.reason == "build it"


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        ("ada, bo", "JSON object"),
        ({"agents": [], "reason": "x"}, "non-empty"),
        ({"agents": ["zed"], "reason": "x"}, "Unknown handles ['zed']"),
        ({"agents": ["ada", "ada"], "reason": "x"}, "repeat"),
        ({"agents": ["ada", "bo", "cy"], "reason": "x"}, "at most 2"),
        ({"agents": ["ada"]}, "'reason'"),
        ({"agents": ["ada"], "reason": "x", "extra": 1}, "Unexpected"),
        ({"agents": "ada", "reason": "x"}, "non-empty list"),
    ],
)
def test_validate_routing_rejects(answer: object, fragment: str) -> None:
    with pytest.raises(RoutingInvalid, match=None) as info:
        validate_routing(answer, ["ada", "bo", "cy"], 2)
    assert fragment in str(info.value)
