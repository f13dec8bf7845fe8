"""Who answers a turn: the @mention parser and the orchestrator's routing schema and validation.

Pure functions over plain data. There is no comma-split or free-text name parsing anywhere
(an earlier prototype fell back to splitting the orchestrator's free text on commas): the
orchestrator answers with a JSON object validated against a schema whose agent field is an enum
of the room's active handles.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Inline code (`…`) and fenced blocks (```…```) are not prose: mentions inside them do not count.
_CODE = re.compile(r"```.*?```|``[^`]*``|`[^`\n]*`", re.DOTALL)
# `@handle` at a word boundary. The look-behind rules out e-mail addresses (`ada@example.com`)
# and the look-ahead makes `@adam` never a mention of `@ada`.
_MENTION = re.compile(r"(?<![\w.+\-@])@([a-z][a-z0-9_-]{0,31})(?![a-z0-9_-])", re.IGNORECASE)


def parse_mentions(text: str) -> list[str]:
    """Lower-cased handles mentioned in `text`, each once, in order of first mention."""
    prose = _CODE.sub(" ", text)
    seen: dict[str, None] = {}
    for match in _MENTION.finditer(prose):
        seen.setdefault(match.group(1).lower(), None)
    return list(seen)


def routing_schema(handles: Sequence[str], max_agents: int) -> dict[str, Any]:
    """The orchestrator's structured-output schema for this room."""
    return {
        "type": "object",
        "properties": {
            "agents": {
                "type": "array",
                "items": {"type": "string", "enum": list(handles)},
                "minItems": 1,
                "maxItems": max(1, min(max_agents, len(handles))),
                "uniqueItems": True,
            },
            "reason": {"type": "string", "maxLength": 300},
        },
        "required": ["agents", "reason"],
        "additionalProperties": False,
    }


class RoutingInvalid(ValueError):
    """The orchestrator's answer does not satisfy the routing schema; the message says why."""


@dataclass(frozen=True)
class RoutingDecision:
    selected: list[str]
    reason: str


def validate_routing(answer: Any, handles: Sequence[str], max_agents: int) -> RoutingDecision:
    """Check an orchestrator answer on the server, whatever the provider promised."""
    if not isinstance(answer, dict):
        raise RoutingInvalid("The answer must be a JSON object with 'agents' and 'reason'.")
    extra = set(answer) - {"agents", "reason"}
    if extra:
        raise RoutingInvalid(f"Unexpected fields: {', '.join(sorted(extra))}.")
    agents, reason = answer.get("agents"), answer.get("reason")
    if not isinstance(agents, list) or not agents:
        raise RoutingInvalid("'agents' must be a non-empty list of handles.")
    limit = max(1, min(max_agents, len(handles)))
    if len(agents) > limit:
        raise RoutingInvalid(f"'agents' may name at most {limit} agents.")
    if not all(isinstance(a, str) for a in agents):
        raise RoutingInvalid("'agents' must contain handles (strings).")
    unknown = [a for a in agents if a not in handles]
    if unknown:
        raise RoutingInvalid(f"Unknown handles {unknown}; choose only from {list(handles)}.")
    if len(set(agents)) != len(agents):
        raise RoutingInvalid("'agents' must not repeat a handle.")
    if not isinstance(reason, str):
        raise RoutingInvalid("'reason' must be a string.")
    return RoutingDecision(selected=list(agents), reason=reason.strip()[:300])
