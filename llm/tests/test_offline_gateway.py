"""The offline model: deterministic, labelled, streamed, schema-valid, no network."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.gateway import ChatMessage, GatewayError, GatewayRequest
from llm.json_schema import schema_errors
from llm.offline_gateway import OFFLINE_LABEL, OfflineGateway
from llm.tokenizer import count_message_tokens, count_tokens

ROUTING_SCHEMA = {
    "type": "object",
    "properties": {
        "agents": {
            "type": "array",
            "items": {"type": "string", "enum": ["ada", "bo", "cy"]},
            "minItems": 1,
            "maxItems": 2,
            "uniqueItems": True,
        },
        "reason": {"type": "string", "maxLength": 200},
    },
    "required": ["agents", "reason"],
    "additionalProperties": False,
}
ITEM = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "turns": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["text", "turns"],
    "additionalProperties": False,
}
SUMMARY_SCHEMA = {
    "type": "object",
    "properties": {
        "summary_text": {"type": "string"},
        "key_facts": {"type": "array", "items": ITEM},
        "decisions": {"type": "array", "items": ITEM},
        "open_questions": {"type": "array", "items": ITEM},
        "action_items": {"type": "array", "items": ITEM},
    },
    "required": ["summary_text", "key_facts", "decisions", "open_questions", "action_items"],
    "additionalProperties": False,
}


def ask(text: str, **fields) -> GatewayRequest:
    messages = (
        ChatMessage(role="system", content="You are Ada."),
        ChatMessage(role="user", content=text),
    )
    return GatewayRequest(model="openai/gpt-4o-mini", messages=messages, **fields)


def test_reply_is_labelled_deterministic_and_echoes_the_input() -> None:
    gateway = OfflineGateway()
    first = gateway.complete(ask("What is the plan for Tuesday?"))
    again = gateway.complete(ask("What is the plan for Tuesday?"))
    other = gateway.complete(ask("Something else entirely"))

    assert first.text.startswith(OFFLINE_LABEL)
    assert "offline model" in first.text
    assert "What is the plan for Tuesday?" in first.text
    assert first.text == again.text
    assert other.text != first.text
    assert first.generation_id != again.generation_id  # ids stay unique per call
    assert first.finish_reason == "stop"


def test_reply_streams_in_several_deltas() -> None:
    stream = OfflineGateway().stream(ask("Tell me something"))
    deltas = list(stream)
    assert len(deltas) >= 3
    assert "".join(deltas) == stream.response.text
    assert stream.response.time_to_first_token_ms is not None


def test_token_counts_are_the_tokenizers_reported_as_provider() -> None:
    request = ask("count me")
    response = OfflineGateway().complete(request)
    assert response.usage.prompt_tokens == count_message_tokens(request.messages)
    assert response.usage.completion_tokens == count_tokens(response.text)
    assert response.usage.source == "provider"


def test_max_tokens_truncates_the_reply() -> None:
    response = OfflineGateway().complete(ask("a question", max_tokens=5))
    assert count_tokens(response.text) <= 5
    assert response.usage.completion_tokens == count_tokens(response.text)


# --- routing -----------------------------------------------------------------------------------

ROSTER = (
    "You are the orchestrator of a room of AI agents. Choose which agents should answer.\n\n"
    "Agents in this room:\n"
    "- @ada (Ada): You are Ada, the analyst. Back every claim with numbers.\n"
    "- @bo (Bo): You are Bo, the builder. Turn the discussion into a plan and its pricing.\n"
    "- @cy (Cy): You are Cy, the critic. Name the risk plainly and suggest how to test it.\n"
)


def routing_schema(max_items: int = 2) -> dict[str, Any]:
    return {
        **ROUTING_SCHEMA,
        "properties": {
            **ROUTING_SCHEMA["properties"],
            "agents": {**ROUTING_SCHEMA["properties"]["agents"], "maxItems": max_items},
        },
    }


def route(text: str, *, schema: dict[str, Any] = ROUTING_SCHEMA, roster: str = ROSTER) -> Any:
    """The offline routing answer to `text`, after an earlier exchange (which must not count)."""
    messages = (
        ChatMessage(role="system", content=roster),
        ChatMessage(role="user", content="@bo what is the pricing?"),
        ChatMessage(role="assistant", content="[Bo]: about the pricing"),
        ChatMessage(role="user", content=text),
    )
    request = GatewayRequest(model="m", messages=messages, json_schema=schema)
    response = OfflineGateway().complete(request)
    assert schema_errors(response.parsed, schema) == []
    assert json.loads(response.text) == response.parsed
    return response.parsed


def test_routing_by_mention_in_order_and_says_so() -> None:
    answer = route("@cy and @Ada, what do you think? mail bo@example.com")
    assert answer == {
        "agents": ["cy", "ada"],
        "reason": f"{OFFLINE_LABEL} routed by mention: @cy, @ada",
    }


def test_routing_by_mention_ignores_unknown_handles_and_keeps_within_max_items() -> None:
    answer = route("@zed @bo @cy @ada, all of you", schema=routing_schema(max_items=2))
    assert answer["agents"] == ["bo", "cy"]
    assert answer["reason"] == f"{OFFLINE_LABEL} routed by mention: @bo, @cy"


def test_routing_by_keyword_names_the_matched_word() -> None:
    answer = route("What will the pricing be?")
    assert answer == {
        "agents": ["bo"],
        "reason": f"{OFFLINE_LABEL} routed by keyword match: 'pricing' ~ @bo",
    }


def test_routing_by_keyword_takes_a_close_runner_up_within_max_items() -> None:
    text = "Which risk should we test first, and what do the numbers say?"
    answer = route(text)
    assert answer["agents"] == ["cy", "ada"]  # cy: risk, test; ada: numbers
    assert answer["reason"] == (
        f"{OFFLINE_LABEL} routed by keyword match: 'risk', 'test' ~ @cy; 'numbers' ~ @ada"
    )
    assert route(text, schema=routing_schema(max_items=1))["agents"] == ["cy"]


def test_routing_by_keyword_breaks_ties_by_roster_order() -> None:
    reordered = ROSTER.replace("- @cy", "- @zz").replace("- @bo", "- @cy").replace("- @zz", "- @bo")
    assert route("plans and risks", schema=routing_schema(max_items=1))["agents"] == ["bo"]
    one = route("plans and risks", schema=routing_schema(max_items=1), roster=reordered)
    assert one["agents"] == ["cy"]  # the same words now sit on cy's line, listed first


def test_routing_ignores_words_every_agent_shares() -> None:
    roster = "\n".join(
        f"- @{h} ({h.title()}): You work on the launch." for h in ("ada", "bo", "cy")
    )
    assert route("The launch?", roster=roster)["agents"] == ["ada"]


def test_routing_without_mention_or_keyword_falls_back_to_the_first_agent() -> None:
    answer = route("Hello there, anyone?")
    assert answer == {
        "agents": ["ada"],
        "reason": f"{OFFLINE_LABEL} no mention or keyword match: first agent",
    }


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=200), max_items=st.integers(min_value=1, max_value=3))
def test_routing_answer_is_always_schema_valid(text: str, max_items: int) -> None:
    schema = routing_schema(max_items=max_items)
    answer = route(text + " @bo @ada pricing risk", schema=schema)
    assert 1 <= len(answer["agents"]) <= max_items
    assert answer["reason"].startswith(OFFLINE_LABEL)


# --- summaries ---------------------------------------------------------------------------------

TRANSCRIPT = """New turns 1-3:
[turn 1] User: Hello team, what should we build first? We have 3 weeks.
[turn 1] Ada: The signup flow loses 40% of visitors. It hurts.
[turn 1] Bo: Let's build the onboarding checklist first. We need to write the spec by Friday.
[turn 2] User: Which risk should we test this week?
[turn 2] Cy: [offline model] This reply comes from Pantheon's offline model. You said: "x".
[turn 3] User: Fine.
[turn 3] Ada: Next step: Bo should draft the checklist.
- Who owns analytics?"""


def summarize(*contents: str) -> Any:
    messages = [ChatMessage(role="system", content="You maintain a structured summary.")]
    messages += [ChatMessage(role="user", content=content) for content in contents]
    request = GatewayRequest(
        model="m", messages=messages, max_tokens=1500, json_schema=SUMMARY_SCHEMA
    )
    response = OfflineGateway().complete(request)
    assert schema_errors(response.parsed, SUMMARY_SCHEMA) == []
    assert json.loads(response.text) == response.parsed
    return response.parsed


def cited(answer: dict[str, Any], field: str) -> dict[str, list[int]]:
    return {item["text"]: item["turns"] for item in answer[field]}


def assert_summary_contract(answer: dict[str, Any], last_turn: int) -> None:
    """What the summarizer's server-side check (`validate_summary`) requires."""
    assert answer["summary_text"].strip()
    for field in ("key_facts", "decisions", "open_questions", "action_items"):
        for item in answer[field]:
            assert item["text"].strip()
            assert all(1 <= turn <= last_turn for turn in item["turns"]), item


def test_summary_lists_cite_the_turns_their_sentences_came_from() -> None:
    answer = summarize(TRANSCRIPT)
    assert cited(answer, "key_facts") == {
        "We have 3 weeks.": [1],
        "The signup flow loses 40% of visitors.": [1],
    }
    assert cited(answer, "decisions") == {"Let's build the onboarding checklist first.": [1]}
    assert cited(answer, "open_questions") == {
        "Hello team, what should we build first?": [1],
        "Which risk should we test this week?": [2],
        "Who owns analytics?": [3],
    }
    assert cited(answer, "action_items") == {
        "We need to write the spec by Friday.": [1],
        "Next step: Bo should draft the checklist.": [3],
    }
    assert_summary_contract(answer, last_turn=3)


def test_summary_text_quotes_the_transcript_and_is_labelled() -> None:
    text = summarize(TRANSCRIPT)["summary_text"]
    assert text == (
        f"{OFFLINE_LABEL} Extractive summary of turns 1-3: "
        "User: Hello team, what should we build first? "
        "Ada: The signup flow loses 40% of visitors. "
        "Bo: Let's build the onboarding checklist first. "
        "User: Which risk should we test this week? "
        "User: Fine. "
        "Ada: Next step: Bo should draft the checklist. "
        "Replies from Cy were offline-model placeholders."
    )


def test_summary_merges_the_previous_summary() -> None:
    previous = summarize(TRANSCRIPT)
    new_turns = (
        "New turns 4-4:\n"
        "[turn 4] User: Who owns analytics? The budget is 5000 euros.\n"
        "[turn 4] Bo: We will ship on Monday."
    )
    answer = summarize(f"Previous summary (turns 1-3):\n{json.dumps(previous)}", new_turns)
    assert cited(answer, "key_facts") == {
        **cited(previous, "key_facts"),
        "The budget is 5000 euros.": [4],
    }
    assert cited(answer, "decisions") == {
        "Let's build the onboarding checklist first.": [1],
        "We will ship on Monday.": [4],
    }
    assert cited(answer, "open_questions")["Who owns analytics?"] == [3, 4]  # asked twice
    assert cited(answer, "action_items") == cited(previous, "action_items")
    text = answer["summary_text"]
    assert text.startswith(f"{OFFLINE_LABEL} Extractive summary of turns 1-4: User: Hello team")
    assert text.count(OFFLINE_LABEL) == 1
    assert text.endswith("User: Who owns analytics? Bo: We will ship on Monday.")
    assert_summary_contract(answer, last_turn=4)


def test_summary_drops_previous_citations_outside_the_covered_turns() -> None:
    previous = {
        "summary_text": "Earlier talk.",
        "key_facts": [{"text": "The sky is blue.", "turns": [0, 2, 99]}, {"text": 7, "turns": []}],
        "decisions": "not a list",
        "open_questions": [],
        "action_items": [],
    }
    answer = summarize(
        f"Previous summary (turns 1-2):\n{json.dumps(previous)}",
        "New turns 3-3:\n[turn 3] User: Go on.",
    )
    assert answer["key_facts"] == [{"text": "The sky is blue.", "turns": [2]}]
    assert answer["decisions"] == []
    assert answer["summary_text"].endswith("turns 1-3: Earlier talk. User: Go on.")
    assert_summary_contract(answer, last_turn=3)


def test_summary_is_bounded_and_deterministic_on_a_long_transcript() -> None:
    lines = [
        f"[turn {n}] User: Is item {n} ready? We decided on plan {n}. We must fix bug {n}. "
        f"The count is {n}. " + "Filler words go here without cues " * 20
        for n in range(1, 301)
    ]
    transcript = "New turns 1-300:\n" + "\n".join(lines)
    answer = summarize(transcript)
    assert answer == summarize(transcript)
    assert len(answer["summary_text"]) <= 700
    for field in ("key_facts", "decisions", "open_questions", "action_items"):
        assert 1 <= len(answer[field]) <= 5
        assert all(len(item["text"]) <= 160 for item in answer[field])
    assert cited(answer, "open_questions")["Is item 300 ready?"] == [300]  # the newest kept
    assert "User: Is item 1 ready?" in answer["summary_text"]  # and the topic
    assert_summary_contract(answer, last_turn=300)


@settings(max_examples=60, deadline=None)
@given(
    body=st.lists(
        st.tuples(st.integers(min_value=-2, max_value=9), st.text(max_size=80)), max_size=8
    )
)
def test_summary_answer_is_always_valid(body: list[tuple[int, str]]) -> None:
    transcript = "\n".join(f"[turn {n}] User: {text}" for n, text in body)
    answer = summarize(f"New turns 1-9:\n{transcript}")
    assert_summary_contract(answer, last_turn=max([1, *(n for n, _ in body)]))


def test_summary_of_nothing_still_has_text() -> None:
    answer = summarize("New turns 1-1:\n")
    assert answer["summary_text"].startswith(OFFLINE_LABEL)
    assert answer["key_facts"] == answer["open_questions"] == []


def test_summary_survives_a_corrective_reprompt() -> None:
    reprompt = "Your previous answer was invalid: nope. Answer again with only the JSON object."
    assert summarize(TRANSCRIPT, reprompt) == summarize(TRANSCRIPT)


def test_other_schemas_get_a_labelled_schema_valid_example() -> None:
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "n": {"type": "integer", "minimum": 2}},
        "required": ["title", "n"],
        "additionalProperties": False,
    }
    response = OfflineGateway().complete(ask("anything", json_schema=schema))
    assert response.parsed == {"title": f"{OFFLINE_LABEL} example answer", "n": 2}


def test_close_mid_stream_cancels_with_partial_text() -> None:
    stream = OfflineGateway().stream(ask("a long enough question to stream"))
    iterator = iter(stream)
    first = next(iterator)
    stream.close()
    with pytest.raises(GatewayError) as caught:
        next(iterator)
    assert caught.value.kind == "cancelled"
    assert caught.value.partial_text == first
    assert stream.error is caught.value
