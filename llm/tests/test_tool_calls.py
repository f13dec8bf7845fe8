"""Tool calls through the gateway: definitions and tool messages on the wire, streamed tool-call
deltas assembled into ToolCalls (real `openai` client, real HTTP, the stub server), the offline
model's truthful stand-in calls, and the tokenizer's counts of tools."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from llm.gateway import ChatMessage, GatewayError, GatewayRequest, ToolCall, openai_messages
from llm.offline_gateway import OFFLINE_LABEL, OfflineGateway, find_expression
from llm.openai_gateway import OpenAICompatibleGateway
from llm.openai_wire import ToolCallAssembler
from llm.providers import gateway_for_model
from llm.tokenizer import count_message_tokens, count_tokens, count_tools_tokens
from testing.stub_llm import LlmStub, StubReply

MODEL = "openai/gpt-4o-mini"
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Exact arithmetic on an expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}
CURRENT_TIME = {
    "type": "function",
    "function": {
        "name": "current_time",
        "description": "The current date and time (UTC, or an IANA zone).",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}},
    },
}
TOOLS = (CALCULATOR, CURRENT_TIME)
QUESTION = (
    ChatMessage(role="system", content="You are Ada."),
    ChatMessage(role="user", content="what is 6*7, and what time is it?"),
)
CALLS = (
    ToolCall(id="call_a", name="calculator", arguments='{"expression": "6*7"}'),
    ToolCall(id="call_b", name="current_time", arguments="{}"),
)
FOLLOW_UP = (
    *QUESTION,
    ChatMessage(role="assistant", content="", tool_calls=CALLS),
    ChatMessage(role="tool", content="42", tool_call_id="call_a"),
    ChatMessage(role="tool", content="2026-12-04 17:00 UTC", tool_call_id="call_b"),
)


def request(**fields) -> GatewayRequest:
    fields.setdefault("model", MODEL)
    fields.setdefault("messages", QUESTION)
    return GatewayRequest(**fields)


def gateway() -> OpenAICompatibleGateway:
    found = gateway_for_model(MODEL)
    assert isinstance(found, OpenAICompatibleGateway)
    return found


def stub_tokens(text: str) -> int:
    return (len(text) + 3) // 4  # the stub's own count


def wait_for(condition, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --- the OpenAI-compatible gateway, over HTTP ---------------------------------------------------


@pytest.mark.django_db
def test_tools_are_sent_and_streamed_calls_are_assembled(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(
        tool_calls=[
            {"name": "calculator", "arguments": {"expression": "(1234 + 5678) * 9"}},
            {"name": "current_time", "arguments": {"timezone": "Europe/Paris"}},
        ],
        interleave_tool_calls=True,  # the two calls' pieces alternate on the wire
    )
    stream = gateway().stream(request(tools=TOOLS, tool_choice="auto"))
    deltas = list(stream)
    response = stream.response

    body = llm_stub.requests[0].body
    assert body["tools"] == [CALCULATOR, CURRENT_TIME]
    assert body["tool_choice"] == "auto"
    assert body["stream"] is True
    assert deltas == []  # a tool-call-only answer streams no text
    assert response.text == ""
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == (
        ToolCall(
            id="call_stub_1",
            name="calculator",
            arguments='{"expression": "(1234 + 5678) * 9"}',
        ),
        ToolCall(id="call_stub_2", name="current_time", arguments='{"timezone": "Europe/Paris"}'),
    )
    assert response.usage.source == "provider"
    assert response.time_to_first_token_ms is not None


def test_the_stub_streams_tool_calls_in_pieces_as_openai_does(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(
        tool_calls=[
            {"name": "calculator", "arguments": {"expression": "6*7"}},
            {"name": "current_time", "arguments": {}, "id": "call_given"},
        ]
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    body["stream_options"] = {"include_usage": True}
    raw = httpx.post(llm_stub.url + "/chat/completions", json=body, timeout=5).text
    events = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    pieces = [
        piece
        for chunk in chunks
        for choice in chunk["choices"]
        for piece in choice["delta"].get("tool_calls") or []
    ]
    for index, (call_id, name, arguments) in enumerate(
        [
            ("call_stub_1", "calculator", '{"expression": "6*7"}'),
            ("call_given", "current_time", "{}"),
        ]
    ):
        mine = [piece for piece in pieces if piece["index"] == index]
        assert mine[0]["id"] == call_id and mine[0]["type"] == "function"
        assert mine[0]["function"] == {"name": name, "arguments": ""}  # the name first
        assert all("name" not in piece["function"] for piece in mine[1:])
        assert len(mine) >= 3  # the head, then the arguments in two or more pieces
        assert "".join(piece["function"]["arguments"] for piece in mine) == arguments
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_the_sdk_accumulates_the_stubs_tool_calls(llm_stub: LlmStub) -> None:
    # The SDK's own stream accumulator reads the stub's deltas as it reads OpenAI's.
    llm_stub.enqueue(
        StubReply(tool_calls=[{"name": "calculator", "arguments": {"expression": "6*7"}}])
    )
    llm_stub.enqueue(
        StubReply(tool_calls=[{"name": "calculator", "arguments": {"expression": "2+2"}}])
    )
    client = openai.OpenAI(base_url=llm_stub.url, api_key="sk-test", max_retries=0)
    messages = [{"role": "user", "content": "what is 6*7?"}]
    with client.chat.completions.stream(model="m", messages=messages, tools=[CALCULATOR]) as s:
        final = s.get_final_completion()
    (call,) = final.choices[0].message.tool_calls
    assert (call.id, call.function.name) == ("call_stub_1", "calculator")
    assert json.loads(call.function.arguments) == {"expression": "6*7"}
    assert final.choices[0].finish_reason == "tool_calls"

    # Non-streamed, the calls are in the message.
    completion = client.chat.completions.create(model="m", messages=messages, tools=[CALCULATOR])
    message = completion.choices[0].message
    assert message.content is None
    assert message.tool_calls[0].id == "call_stub_2"
    assert message.tool_calls[0].function.arguments == '{"expression": "2+2"}'
    assert completion.choices[0].finish_reason == "tool_calls"


@pytest.mark.django_db
def test_a_follow_up_renders_tool_calls_and_results_on_the_wire(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(text="6*7 is 42, and it is 17:00 UTC.")
    response = gateway().complete(request(messages=FOLLOW_UP, tools=TOOLS))

    assert llm_stub.requests[0].body["messages"] == [
        {"role": "system", "content": "You are Ada."},
        {"role": "user", "content": "what is 6*7, and what time is it?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "current_time", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "content": "42", "tool_call_id": "call_a"},
        {"role": "tool", "content": "2026-12-04 17:00 UTC", "tool_call_id": "call_b"},
    ]
    assert response.text == "6*7 is 42, and it is 17:00 UTC."
    assert response.tool_calls == ()
    assert response.finish_reason == "stop"


def test_openai_messages_keeps_what_the_assistant_said_with_its_calls() -> None:
    said = ChatMessage(role="assistant", content="Let me check.", tool_calls=CALLS[:1])
    assert openai_messages([said, ChatMessage(role="user", content="ok")]) == [
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'},
                }
            ],
        },
        {"role": "user", "content": "ok"},
    ]


@pytest.mark.django_db
def test_a_request_without_tools_is_sent_as_before(llm_stub: LlmStub) -> None:
    response = gateway().complete(request(tool_choice="none"))  # no tools: no tool_choice either
    body = llm_stub.requests[0].body
    assert "tools" not in body and "tool_choice" not in body
    assert body["messages"] == [
        {"role": "system", "content": "You are Ada."},
        {"role": "user", "content": "what is 6*7, and what time is it?"},
    ]
    assert response.tool_calls == ()
    assert response.finish_reason == "stop"


@pytest.mark.django_db
def test_text_and_tool_calls_in_one_answer(llm_stub: LlmStub) -> None:
    arguments = {"expression": "6*7"}
    llm_stub.enqueue(
        text="Let me compute that.", tool_calls=[{"name": "calculator", "arguments": arguments}]
    )
    stream = gateway().stream(request(tools=TOOLS))
    deltas = list(stream)
    response = stream.response

    assert "".join(deltas) == response.text == "Let me compute that."
    assert len(deltas) > 1
    assert response.tool_calls == (
        ToolCall(id="call_stub_1", name="calculator", arguments='{"expression": "6*7"}'),
    )
    assert response.finish_reason == "tool_calls"
    assert response.usage.source == "provider"
    called = "calculator" + json.dumps(arguments)
    assert response.usage.completion_tokens == stub_tokens("Let me compute that." + called)
    assert response.usage.prompt_tokens > 0


@pytest.mark.django_db
def test_tool_calls_after_finish_reason_stop_still_say_tool_calls(llm_stub: LlmStub) -> None:
    # Some providers end a tool-call answer with "stop".
    llm_stub.enqueue(tool_calls=[{"name": "current_time"}], finish_reason="stop")
    response = gateway().complete(request(tools=TOOLS))
    assert response.tool_calls == (ToolCall(id="call_stub_1", name="current_time", arguments="{}"),)
    assert response.finish_reason == "tool_calls"


@pytest.mark.django_db
def test_tool_calls_without_usage_block_are_estimated(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(
        tool_calls=[{"name": "calculator", "arguments": {"expression": "6*7"}}], no_usage=True
    )
    response = gateway().complete(request(tools=TOOLS))
    usage = response.usage
    assert usage.source == "estimated"
    assert usage.prompt_tokens == count_message_tokens(QUESTION) + count_tools_tokens(TOOLS)
    assert usage.completion_tokens == count_tokens('calculator{"expression": "6*7"}')


@pytest.mark.django_db
def test_a_tool_call_without_a_name_is_an_invalid_response(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(tool_calls=[{"arguments": {"expression": "6*7"}}])
    with pytest.raises(GatewayError) as caught:
        gateway().complete(request(tools=TOOLS))
    error = caught.value
    assert error.kind == "invalid_response"
    assert "no function name" in error.message
    assert error.usage is not None and error.usage.source == "provider"  # the answer is billed
    assert len(llm_stub.requests) == 1


@pytest.mark.django_db
def test_an_ill_typed_tool_call_delta_is_an_invalid_response(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(tool_calls=[{"name": 42, "arguments": "{}"}])
    with pytest.raises(GatewayError) as caught:
        gateway().complete(request(tools=TOOLS))
    assert caught.value.kind == "invalid_response"
    assert caught.value.usage is not None and caught.value.usage.source == "estimated"


@pytest.mark.django_db
def test_close_during_a_tool_call_stream_cancels_it(llm_stub: LlmStub) -> None:
    # A tool-call answer yields no text, so the reader is blocked until the end: the close
    # comes from another thread.
    llm_stub.enqueue(
        tool_calls=[{"name": "calculator", "arguments": {"expression": "1+2+3+4+5+6+7+8+9"}}],
        chunk_delay=1.0,
    )
    stream = gateway().stream(request(tools=TOOLS, timeout=5))
    outcome: dict[str, object] = {}

    def consume() -> None:
        try:
            list(stream)
        except GatewayError as exc:
            outcome["error"] = exc

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(0.3)
    stream.close()
    reader.join(timeout=3)

    assert not reader.is_alive()
    assert outcome["error"].kind == "cancelled"
    assert outcome["error"].usage is not None and outcome["error"].usage.source == "estimated"
    assert wait_for(lambda: llm_stub.disconnects == 1)


def test_the_assembler_is_lenient_where_providers_differ() -> None:
    assembler = ToolCallAssembler()
    # Ollama: every parallel call at index 0, told apart by id.
    assembler.add([{"index": 0, "id": "a", "function": {"name": "calculator", "arguments": "{}"}}])
    assembler.add([{"index": 0, "id": "b", "function": {"name": "current_time"}}])
    # LM Studio and others: a fresh id on every piece of the same call.
    assembler.add([{"index": 0, "id": "c", "function": {"arguments": '{"timezone":'}}])
    assembler.add([{"index": 0, "id": "d", "function": {"arguments": ' "UTC"}'}}])
    # No index: the position in the list; the name repeated in a later piece.
    assembler.add([{"id": "e", "function": {"name": "calculator", "arguments": '{"expression"'}}])
    assembler.add(None)
    assembler.add([{"function": {"name": "calculator", "arguments": ': "1+1"}'}}])
    assert assembler.calls() == (
        ToolCall(id="a", name="calculator", arguments="{}"),
        ToolCall(id="b", name="current_time", arguments='{"timezone": "UTC"}'),
        ToolCall(id="e", name="calculator", arguments='{"expression": "1+1"}'),
    )


@pytest.mark.parametrize(
    "pieces",
    ["not a list", ["not an object"], [{"index": "0"}], [{"index": 0, "function": "x"}]],
)
def test_the_assembler_rejects_ill_shaped_pieces(pieces) -> None:
    with pytest.raises(ValueError):
        ToolCallAssembler().add(pieces)


# --- the offline model --------------------------------------------------------------------------


def offline(messages, **fields):
    stream = OfflineGateway().stream(GatewayRequest(model="offline", messages=messages, **fields))
    deltas = list(stream)
    return deltas, stream.response


def test_offline_calls_the_calculator_for_an_arithmetic_question() -> None:
    messages = [ChatMessage(role="user", content="what is 6*7?")]
    deltas, response = offline(messages, tools=TOOLS, tool_choice="auto")

    assert deltas == [] and response.text == ""
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == (
        ToolCall(id="call_offline_1_1", name="calculator", arguments='{"expression": "6*7"}'),
    )
    assert response.usage.prompt_tokens == count_message_tokens(messages) + count_tools_tokens(
        TOOLS
    )
    assert response.usage.completion_tokens == count_tokens('calculator{"expression": "6*7"}')


def test_offline_calls_current_time_when_asked_for_the_time() -> None:
    _, response = offline([ChatMessage(role="user", content="What time is it?")], tools=TOOLS)
    assert response.tool_calls == (
        ToolCall(id="call_offline_1_1", name="current_time", arguments="{}"),
    )
    _, both = offline(QUESTION, tools=TOOLS)
    assert [call.name for call in both.tool_calls] == ["calculator", "current_time"]
    assert [call.id for call in both.tool_calls] == ["call_offline_1_1", "call_offline_1_2"]


def test_offline_answers_in_text_after_the_tool_results() -> None:
    deltas, response = offline(FOLLOW_UP, tools=TOOLS)
    assert response.tool_calls == ()
    assert response.finish_reason == "stop"
    assert "".join(deltas) == response.text
    assert response.text == f"{OFFLINE_LABEL} The result is 42. It is 2026-12-04 17:00 UTC."

    failed = (
        *FOLLOW_UP[:3],
        ChatMessage(role="tool", content="Error: division by zero", tool_call_id="call_a"),
    )
    _, response = offline(failed, tools=TOOLS)
    assert response.text == f"{OFFLINE_LABEL} The calculator tool failed: Error: division by zero."


def test_offline_next_round_has_new_call_ids() -> None:
    messages = [
        *FOLLOW_UP,
        ChatMessage(role="assistant", content="42."),
        ChatMessage(role="user", content="and 2+2?"),
    ]
    _, response = offline(messages, tools=TOOLS)
    assert response.tool_calls == (
        ToolCall(id="call_offline_2_1", name="calculator", arguments='{"expression": "2+2"}'),
    )


def test_offline_without_tools_behaves_as_before() -> None:
    messages = [ChatMessage(role="user", content="what is 6*7?")]
    deltas, plain = offline(messages)
    assert plain.tool_calls == () and plain.finish_reason == "stop"
    assert plain.text.startswith(OFFLINE_LABEL) and 'You said: "what is 6*7?"' in plain.text
    assert "".join(deltas) == plain.text
    assert plain.usage.prompt_tokens == count_message_tokens(messages)

    # Tools refused, or offered but nothing to call them for: the same text answer.
    for fields in (
        {"tools": TOOLS, "tool_choice": "none"},
        {"tools": (CURRENT_TIME,)},
        {"tools": []},
    ):
        _, response = offline(messages, **fields)
        assert response.tool_calls == () and response.text == plain.text
    _, chat = offline([ChatMessage(role="user", content="hello there")], tools=TOOLS)
    assert chat.tool_calls == () and chat.text.startswith(OFFLINE_LABEL)


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("what is 6*7?", "6*7"),
        ("compute (2 + 3) ^ 2 please", "(2 + 3) ^ 2"),
        ("(what is 12.5/5)", "12.5/5"),
        ("and 10 % 3.", "10 % 3"),
        ("-3 + 4", "-3 + 4"),
        ("2**10", "2**10"),
        ("I have 3 apples", None),
        ("50% off", None),
        ("call me at 5", None),
        ("no numbers at all", None),
    ],
)
def test_find_expression(text: str, expression: str | None) -> None:
    assert find_expression(text) == expression


# --- the tokenizer ------------------------------------------------------------------------------


def test_tokenizer_counts_tool_calls_tool_messages_and_definitions() -> None:
    bare = ChatMessage(role="assistant", content="")
    calling = ChatMessage(role="assistant", content="", tool_calls=CALLS)
    assert count_message_tokens([calling]) > count_message_tokens([bare])
    assert count_message_tokens([calling]) - count_message_tokens([bare]) >= count_tokens(
        'calculator{"expression": "6*7"}current_time{}'
    )
    assert count_message_tokens(FOLLOW_UP) > count_message_tokens(QUESTION) + count_tokens("42")

    assert count_tools_tokens(None) == count_tools_tokens([]) == 0
    one = count_tools_tokens([CALCULATOR])
    assert one >= count_tokens("Exact arithmetic on an expression.")
    assert count_tools_tokens(TOOLS) == one + count_tools_tokens([CURRENT_TIME]) > one


def test_find_expression_stays_fast_on_hostile_input() -> None:
    import time

    from llm.offline_gateway import find_expression

    started = time.monotonic()
    for hostile in ("(" * 200_000, "-" * 200_000, "+(" * 100_000):
        assert find_expression(hostile) is None
    assert find_expression("x" * 100_000 + " what is 6*7?") == "6*7"
    assert time.monotonic() - started < 1.0
