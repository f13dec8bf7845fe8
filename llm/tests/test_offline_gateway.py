"""The offline model: deterministic, labelled, streamed, schema-valid, no network."""

from __future__ import annotations

import pytest

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


def test_routing_schema_picks_the_mentioned_handles() -> None:
    response = OfflineGateway().complete(
        ask("@cy and @Ada, what do you think? mail bo@example.com", json_schema=ROUTING_SCHEMA)
    )
    assert response.parsed is not None
    assert response.parsed["agents"] == ["cy", "ada"]
    assert OFFLINE_LABEL in response.parsed["reason"]
    assert schema_errors(response.parsed, ROUTING_SCHEMA) == []


def test_routing_schema_without_mention_picks_the_first_handle() -> None:
    response = OfflineGateway().complete(ask("anyone?", json_schema=ROUTING_SCHEMA))
    assert response.parsed is not None
    assert response.parsed["agents"] == ["ada"]


def test_summary_schema_answer_is_valid() -> None:
    response = OfflineGateway().complete(ask("summarize", json_schema=SUMMARY_SCHEMA))
    assert response.parsed is not None
    assert schema_errors(response.parsed, SUMMARY_SCHEMA) == []


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
