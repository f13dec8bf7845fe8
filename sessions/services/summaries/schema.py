"""The structured summary's shape: the JSON schema the summarizer answers with, and the
server-side checks beyond it (real text; citations of covered turns only)."""

from __future__ import annotations

from typing import Any

_ITEM = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "turns": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["text", "turns"],
    "additionalProperties": False,
}
SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary_text": {"type": "string"},
        "key_facts": {"type": "array", "items": _ITEM},
        "decisions": {"type": "array", "items": _ITEM},
        "open_questions": {"type": "array", "items": _ITEM},
        "action_items": {"type": "array", "items": _ITEM},
    },
    "required": ["summary_text", "key_facts", "decisions", "open_questions", "action_items"],
    "additionalProperties": False,
}
LIST_FIELDS = ("key_facts", "decisions", "open_questions", "action_items")


class SummaryInvalid(ValueError):
    """The summarizer's answer does not hold up; the message says why (used to re-prompt)."""


def validate_summary(answer: Any, *, first_turn: int, last_turn: int) -> dict[str, Any]:
    """Server-side checks beyond the schema: real text, and citations of covered turns only."""
    if not isinstance(answer, dict):
        raise SummaryInvalid("The answer must be a JSON object.")
    text = answer.get("summary_text")
    if not isinstance(text, str) or not text.strip():
        raise SummaryInvalid("'summary_text' must be a non-empty string.")
    clean: dict[str, Any] = {"summary_text": text.strip()}
    for name in LIST_FIELDS:
        items = answer.get(name)
        if not isinstance(items, list):
            raise SummaryInvalid(f"'{name}' must be a list of {{text, turns}} items.")
        out = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise SummaryInvalid(f"Every '{name}' item needs a 'text' string.")
            turns = item.get("turns")
            if not isinstance(turns, list) or not all(isinstance(t, int) for t in turns):
                raise SummaryInvalid(f"Every '{name}' item needs 'turns', a list of integers.")
            outside = [t for t in turns if not 1 <= t <= last_turn]
            if outside:
                raise SummaryInvalid(
                    f"'{name}' cites turns {outside}; only turns 1-{last_turn} exist."
                )
            if item["text"].strip():
                out.append({"text": item["text"].strip(), "turns": sorted(set(turns))})
        clean[name] = out
    return clean
