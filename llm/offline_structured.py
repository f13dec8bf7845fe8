"""The offline model's structured answers: orchestrator routing and session summaries.

A stand-in that always said "routed by mention" and summarised with a placeholder misled a new
user, so the offline model answers the two structured requests Pantheon makes truthfully and
deterministically, from nothing but the request's own text:

- routing (a schema with an `agents` enum array and a `reason`): the @mentioned handles, else
  the agents whose roster line shares the most keywords with the input, else the first agent;
  the reason says which rule chose;
- summaries (a schema with `summary_text` and four `{text, turns}` lists): extractive; real
  sentences of the transcript, sorted by cue words, each citing the turn it came from, merged
  with the previous summary.

`llm` imports no other app, so this module knows the callers only by the visible shape of their
prompts (roster lines `- @handle (Name): …`, transcript lines `[turn N] Speaker: …`). Every
answer is checked against the request's schema; any other schema, or an answer that would not
validate, gets `schema_example`. Everything is linear in the prompt's size and bounded in size.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llm.gateway import ChatMessage
from llm.json_schema import schema_errors, schema_example

OFFLINE_LABEL = "[offline model]"
SUMMARY_LISTS = ("key_facts", "decisions", "open_questions", "action_items")

# The same mention grammar as the sessions app's parser: no e-mail addresses, `@adam` ≠ `@ada`,
# nothing inside inline code or fenced blocks.
_CODE = re.compile(r"```.*?```|``[^`]*``|`[^`\n]*`", re.DOTALL)
_MENTION = re.compile(r"(?<![\w.+\-@])@([a-z][a-z0-9_-]{0,31})(?![a-z0-9_-])", re.IGNORECASE)
_ROSTER_LINE = re.compile(r"^- @([A-Za-z][\w-]{0,31}) \(([^)\n]*)\):[ \t]*(.*)$", re.MULTILINE)
_WORD = re.compile(r"[a-z0-9]+")
_STOP_TEXT = """
    a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing done down during each else
    even ever every few for from further get gets got had has have having he her here hers him
    his how however i if in into is it its itself just let like made make many may me might
    more most much must my no nor not now of off on once one only or other our ours out over
    own please same she should so some such than that the their theirs them then there these
    they this those through to too under until up upon us very was we were what when where
    which while who whom why will with would yes yet you your yours anyone someone something
    think thing things tell say said want need know really well ok okay hi hey oh go
"""
_STOP_WORDS = frozenset(_STOP_TEXT.split())
_ROUTE_MAX = 2  # keyword routing picks one or two agents

_TURN_MARK = re.compile(r"^\[turn (\d{1,9})\] ([^:\n]{1,80}): ", re.MULTILINE)
_TURN_RANGE = re.compile(r"turns (\d{1,9})-(\d{1,9})")
_PREVIOUS = "Previous summary"
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
_LIST_MARKER = re.compile(r"^(?:[-*•>#]+|\d{1,3}[.)])\s+")
_SUMMARY_HEADER = re.compile(r"^\[offline model\] Extractive summary of turns \d+-\d+:\s*")
_MONTHS_AND_DAYS = (
    "january|february|march|april|june|july|august|september|october|november|december|"
    "monday|tuesday|wednesday|thursday|friday|saturday|sunday|today|tomorrow|yesterday"
)
_DECISION = re.compile(
    r"\b(?:we will|we['\u2019]ll|decided|decide to|let['\u2019]s|let us|agree\w*)\b", re.IGNORECASE
)
_ACTION = re.compile(
    r"\b(?:todo|to-do|need to|needs to|should|must|next steps?|action items?)\b", re.IGNORECASE
)
_FACT = re.compile(rf"\d|\b(?:is|are|was|were|will|{_MONTHS_AND_DAYS})\b", re.IGNORECASE)
_MIN_ITEM_WORDS = 3
_ITEM_CHARS = 160  # one list item's text
_MAX_ITEMS = 5  # per list: four lists stay well under the summarizer's output reserve
_SEGMENT_CHARS = 160  # one sentence of summary_text
_SUMMARY_CHARS = 700  # all of summary_text


def structured_answer(messages: Sequence[ChatMessage], schema: dict[str, Any]) -> Any:
    """The offline model's answer to a structured-output request: always valid for `schema`."""
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    value: Any = None
    if isinstance(properties.get("agents"), dict) and "reason" in properties:
        value = routing_answer(messages, schema)
    elif "summary_text" in properties and all(name in properties for name in SUMMARY_LISTS):
        value = summary_answer(messages)
    if value is None or schema_errors(value, schema):
        last = _last_user(messages)
        prefer = [handle.lower() for handle in _MENTION.findall(last)]
        value = schema_example(schema, text=f"{OFFLINE_LABEL} example answer", prefer=prefer)
    return value


def _last_user(messages: Sequence[ChatMessage]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# --- routing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    """One handle the schema allows, in roster order, with the keywords of its roster line."""

    handle: str
    words: frozenset[str]


def routing_answer(
    messages: Sequence[ChatMessage], schema: dict[str, Any]
) -> dict[str, Any] | None:
    """`{"agents", "reason"}`: by @mention, else by keyword match, else the first agent.

    None when the schema has no enum of handles to choose from (the caller falls back)."""
    agents_schema = schema["properties"]["agents"]
    items = agents_schema.get("items")
    enum = items.get("enum") if isinstance(items, dict) else None
    if not enum or not all(isinstance(h, str) for h in enum):
        return None
    roster = _roster(messages, enum)
    user_input = _last_user(messages)
    limit = max(1, agents_schema.get("maxItems", len(roster)))
    chosen, why = _by_mention(user_input, roster, limit)
    if not chosen:
        chosen, why = _by_keywords(user_input, roster, min(limit, _ROUTE_MAX))
    if not chosen:
        chosen, why = [roster[0].handle], "no mention or keyword match: first agent"
    for candidate in roster:  # pad to minItems in roster order (the routing schema asks for 1)
        if len(chosen) >= agents_schema.get("minItems", 0):
            break
        if candidate.handle not in chosen:
            chosen.append(candidate.handle)
    reason_schema = schema["properties"]["reason"]
    reason_limit = reason_schema.get("maxLength", 300) if isinstance(reason_schema, dict) else 300
    return {"agents": chosen, "reason": _cut(f"{OFFLINE_LABEL} {why}", reason_limit)}


def _roster(messages: Sequence[ChatMessage], enum: Sequence[str]) -> list[_Candidate]:
    """The allowed handles in the system prompt's roster order (then the schema's order for any
    the roster omits), each with the keywords of its roster line: handle, name, system prompt."""
    allowed = {handle.lower(): handle for handle in enum}
    lines: dict[str, str] = {}
    for message in messages:
        if message.role != "system":
            continue
        for match in _ROSTER_LINE.finditer(message.content):
            handle = allowed.get(match.group(1).lower())
            if handle is not None and handle not in lines:
                lines[handle] = " ".join(match.groups())
    order = list(lines) + [handle for handle in enum if handle not in lines]
    return [_Candidate(h, frozenset(_keywords(lines.get(h, h)))) for h in dict.fromkeys(order)]


def _keywords(text: str) -> dict[str, str]:
    """Content words of `text` (no stop words), in order, each once: the matching form
    (lower-cased, a plural `s` dropped, so `risks` meets `risk`) -> the word as written."""
    words: dict[str, str] = {}
    for word in _WORD.findall(text.lower()):
        if len(word) >= 2 and word not in _STOP_WORDS:
            plural = len(word) > 4 and word.endswith("s") and not word.endswith("ss")
            words.setdefault(word[:-1] if plural else word, word)
    return words


def _by_mention(text: str, roster: list[_Candidate], limit: int) -> tuple[list[str], str]:
    """The handles `text` @mentions outside code, in order, within `limit`."""
    allowed = {c.handle.lower(): c.handle for c in roster}
    found = _MENTION.findall(_CODE.sub(" ", text))
    mentioned = [allowed[h.lower()] for h in found if h.lower() in allowed]
    chosen = list(dict.fromkeys(mentioned))[:limit]
    return chosen, "routed by mention: " + ", ".join(f"@{h}" for h in chosen)


def _by_keywords(text: str, roster: list[_Candidate], limit: int) -> tuple[list[str], str]:
    """The best one or two agents by how many of the input's keywords their roster line shares.

    A word every agent's line has (say `agent`) tells them apart from nothing, so it does not
    count when there are several agents. A runner-up needs at least half the leader's score.
    Ties go to roster order (the sort is stable)."""
    shared = frozenset.intersection(*(c.words for c in roster)) if len(roster) > 1 else frozenset()
    wanted = {key: word for key, word in _keywords(text).items() if key not in shared}
    scored = [(c, [word for key, word in wanted.items() if key in c.words]) for c in roster]
    ranked = sorted((pair for pair in scored if pair[1]), key=lambda pair: -len(pair[1]))
    if not ranked:
        return [], ""
    top = len(ranked[0][1])
    picked = [pair for pair in ranked[:limit] if 2 * len(pair[1]) >= top]
    parts = [", ".join(f"'{w}'" for w in words[:3]) + f" ~ @{c.handle}" for c, words in picked]
    return [c.handle for c, _ in picked], "routed by keyword match: " + "; ".join(parts)


# --- summaries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    """One transcript message: `[turn N] Speaker: text` (the text may span several lines)."""

    turn: int
    speaker: str
    text: str


@dataclass(frozen=True)
class _Previous:
    """The previous summary the prompt carries, if any, and the turns it covered."""

    value: dict[str, Any]
    first_turn: int
    last_turn: int


def summary_answer(messages: Sequence[ChatMessage]) -> dict[str, Any]:
    """An extractive summary of the prompt's transcript, merged with its previous summary."""
    lines: list[_Line] = []
    previous: _Previous | None = None
    for message in messages:
        if message.role != "user":
            continue
        if message.content.startswith(_PREVIOUS):
            previous = _parse_previous(message.content) or previous
        else:
            lines += _parse_transcript(message.content)
    turns = [line.turn for line in lines]
    last = max([*turns, previous.last_turn if previous else 0])
    first = previous.first_turn if previous else min(turns, default=0)
    answer: dict[str, Any] = {"summary_text": _summary_text(lines, previous, first, last)}
    found = _extract(lines)
    for name in SUMMARY_LISTS:
        earlier = _clean_items(previous.value.get(name), last) if previous else []
        answer[name] = _merge(earlier, found[name])
    return answer


def _parse_previous(content: str) -> _Previous | None:
    header, _, body = content.partition("\n")
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    span = _TURN_RANGE.search(header)
    first, last = (int(span.group(1)), int(span.group(2))) if span else (1, 0)
    return _Previous(value=value, first_turn=first, last_turn=last)


def _parse_transcript(content: str) -> list[_Line]:
    """The `[turn N] Speaker: …` messages of one prompt message; each runs to the next mark."""
    marks = list(_TURN_MARK.finditer(content))
    ends = [mark.start() for mark in marks[1:]] + [len(content)] if marks else []
    return [
        _Line(int(mark.group(1)), mark.group(2).strip(), content[mark.end() : end])
        for mark, end in zip(marks, ends, strict=True)
        if int(mark.group(1)) >= 1
    ]


def _sentences(text: str) -> list[str]:
    """`text` cut into sentences: at line breaks, then at . ! ? followed by a space. (Lines
    first keeps the split linear: no pattern rescans a long run of spaces.)"""
    out = []
    for line in text.splitlines():
        for piece in _SENTENCE_BREAK.split(line.strip()):
            piece = _LIST_MARKER.sub("", piece.strip()).strip()
            if piece:
                out.append(piece)
    return out


def _kind(sentence: str) -> str | None:
    """Which list a sentence belongs to, by cue words; None: none (or too short to stand alone).
    The first matching rule wins, so a sentence is listed once."""
    if len(sentence.split()) < _MIN_ITEM_WORDS:
        return None
    if sentence.endswith("?"):
        return "open_questions"
    if _DECISION.search(sentence):
        return "decisions"
    if _ACTION.search(sentence):
        return "action_items"
    if _FACT.search(sentence):
        return "key_facts"
    return None


def _is_placeholder(line: _Line) -> bool:
    """The offline model's own replies echo the input and say nothing worth summarising."""
    return line.text.lstrip().startswith(OFFLINE_LABEL)


def _extract(lines: list[_Line]) -> dict[str, list[dict[str, Any]]]:
    """Every classified sentence of the transcript, once per list, citing the turns it came from."""
    found: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in SUMMARY_LISTS}
    for line in lines:
        if _is_placeholder(line):
            continue
        for sentence in _sentences(line.text):
            kind = _kind(sentence)
            if kind is None:
                continue
            text = _cut(sentence, _ITEM_CHARS)
            item = found[kind].setdefault(text.casefold(), {"text": text, "turns": []})
            if line.turn not in item["turns"]:
                item["turns"].append(line.turn)
    return {name: list(items.values()) for name, items in found.items()}


def _clean_items(items: Any, last_turn: int) -> list[dict[str, Any]]:
    """The previous summary's items that hold up: text, and turns within 1..last_turn."""
    if not isinstance(items, list):
        return []
    clean = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            continue
        text = _cut(item["text"], _ITEM_CHARS)
        cited = item.get("turns") if isinstance(item.get("turns"), list) else []
        turns = [t for t in cited if type(t) is int and 1 <= t <= last_turn]
        if text:
            clean.append({"text": text, "turns": turns})
    return clean


def _merge(earlier: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Previous items then new ones, the same text once (its turns joined); the newest
    `_MAX_ITEMS` are kept so the answer stays bounded however long the session runs."""
    merged: dict[str, dict[str, Any]] = {}
    for item in [*earlier, *new]:
        key = item["text"].casefold()
        if key in merged:
            merged[key]["turns"] = sorted({*merged[key]["turns"], *item["turns"]})
        else:
            merged[key] = {"text": item["text"], "turns": sorted(set(item["turns"]))}
    return list(merged.values())[-_MAX_ITEMS:]


def _summary_text(lines: list[_Line], previous: _Previous | None, first: int, last: int) -> str:
    """The label, the turns covered, then real sentences: the previous summary's, and for each
    new message the user's first sentence or the reply's key one. Over budget, the oldest
    sentence (the topic) and the most recent ones are kept."""
    if last < 1:
        return f"{OFFLINE_LABEL} Nothing to summarise: the transcript has no turns."
    segments: list[str] = []
    if previous is not None and isinstance(previous.value.get("summary_text"), str):
        earlier = _SUMMARY_HEADER.sub("", previous.value["summary_text"].strip())
        segments += [_cut(s, _SEGMENT_CHARS) for s in _sentences(earlier)]
        # an older offline placeholder summary is not worth quoting
        segments = [s for s in segments if not s.startswith(OFFLINE_LABEL)]
    placeholders: list[str] = []
    for line in lines:
        if _is_placeholder(line):
            placeholders.append(line.speaker)
            continue
        sentences = _sentences(line.text)
        if sentences:
            user = line.speaker == "User"
            key = sentences[0] if user else next((s for s in sentences if _kind(s)), sentences[0])
            segments.append(_cut(f"{line.speaker}: {key}", _SEGMENT_CHARS))
    if placeholders:
        names = ", ".join(dict.fromkeys(placeholders))
        segments.append(f"Replies from {names} were offline-model placeholders.")
    header = f"{OFFLINE_LABEL} Extractive summary of turns {max(1, first)}-{last}:"
    body = _fit(list(dict.fromkeys(segments)), _SUMMARY_CHARS - len(header) - 1)
    return " ".join([header, *body]) if body else f"{header} no text to quote."


def _fit(segments: list[str], budget: int) -> list[str]:
    """`segments` within `budget` characters: all of them, or the first, "…", and the latest."""
    if sum(len(s) + 1 for s in segments) <= budget:
        return segments
    used = len(segments[0]) + 3
    tail: list[str] = []
    for segment in reversed(segments[1:]):
        if used + len(segment) + 1 > budget:
            break
        tail.append(segment)
        used += len(segment) + 1
    return [segments[0], "…", *reversed(tail)]
