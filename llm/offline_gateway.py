"""The offline model: a deterministic, clearly labelled stand-in that needs no network.

It is what runs when no provider key is configured, so a first run works on any machine. Replies
say plainly that they come from the offline model and echo a short digest of the last user
message; they stream in several deltas like a real model. Structured-output requests get a
schema-valid object (`llm.offline_structured`): orchestrator routing by @mention or keyword match
with a reason that says which, and extractive session summaries that cite their turns, so a first
run shows what these features do without pretending a model reasoned about them.

Tools, the same way: when a request offers `calculator` and the last user message holds an
arithmetic expression, the answer is a call to `calculator` with that expression; when it offers
`current_time` and the message asks for the time or date, a call to `current_time`. When the
conversation ends with tool results (tools offered or not: the last call of a tool loop offers
none), the answer is text that reports them. Nothing else calls a tool; a conversation without
tool results and without tools offered (or with `tool_choice="none"`) is answered as always.

Token counts come from the real tokenizer and are reported as `source="provider"`: the offline
model *is* the provider here, and these are its own exact counts, not an estimate of someone
else's.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from llm.gateway import (
    ChatMessage,
    GatewayError,
    GatewayRequest,
    GatewayResponse,
    ProviderConfig,
    TokenUsage,
    ToolCall,
)
from llm.offline_structured import OFFLINE_LABEL, structured_answer
from llm.tokenizer import count_message_tokens, count_tokens, count_tools_tokens, get_encoding

OFFLINE_PROVIDER = ProviderConfig(name="offline", kind="offline")
__all__ = [
    "OFFLINE_LABEL",
    "OFFLINE_PROVIDER",
    "OfflineGateway",
    "OfflineStream",
    "offline_reply",
    "offline_tool_calls",
]
_ECHO_CHARS = 80

# An arithmetic expression: digits, + - * / ( ) . ^ % and spaces, with at least one operator
# between two operands (so "50%" or "-3" alone is not one, "6*7" and "(2+3)^2" are).
_EXPRESSION = re.compile(r"[-+(]*\d[\d.()+\-*/^% \t]*")
_OPERATION = re.compile(r"[\d.)%][ \t]*(?:\*\*|[-+*/^%])[ \t]*[-+(]*[\d.]")
_TIME_QUESTION = re.compile(
    r"\b(?:what time|the time|what date|what day is it|today['\u2019]?s date|date today|"
    r"current (?:time|date)|time is it|date is it|time now|what(?:['\u2019]s| is) the date)\b",
    re.IGNORECASE,
)
_RESULT_CHARS = 200  # of one tool result, in the text answer


def _last_user_message(request: GatewayRequest) -> str:
    return next((m.content for m in reversed(request.messages) if m.role == "user"), "")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def offline_reply(request: GatewayRequest) -> str:
    """The offline model's deterministic reply text for `request` (empty when it calls tools
    instead, see `offline_tool_calls`)."""
    last = _last_user_message(request)
    if request.json_schema is not None:
        value = structured_answer(request.messages, request.json_schema)
        return json.dumps(value, ensure_ascii=False)
    if offline_tool_calls(request):
        return ""
    reported = tool_result_reply(request)
    if reported is not None:
        return reported
    echo = " ".join(last.split())
    if len(echo) > _ECHO_CHARS:
        echo = echo[: _ECHO_CHARS - 1] + "…"
    return (
        f"{OFFLINE_LABEL} This reply comes from Pantheon's offline model, not a real LLM. "
        f'You said: "{echo}" (digest {_digest(last)}). '
        "Configure OPENROUTER_API_KEY or a provider to get real answers."
    )


# --- tools ---------------------------------------------------------------------------------------


def _offered_tools(request: GatewayRequest) -> set[str]:
    """The names of the tools the request offers (none when `tool_choice` is "none")."""
    if not request.tools or request.tool_choice == "none":
        return set()
    names = set()
    for tool in request.tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            names.add(name)
    return names


# The offline model looks for an expression in the end of the message only: a scan of a very long
# input of brackets or signs would take a time that grows with the square of its length.
_EXPRESSION_SCAN_CHARS = 2_000


def find_expression(text: str) -> str | None:
    """The first arithmetic expression in the end of `text` (trimmed, parentheses balanced), or
    None."""
    text = text[-_EXPRESSION_SCAN_CHARS:]
    for match in _EXPRESSION.finditer(text):
        expression = match.group().strip().rstrip("+-*/^(. \t")
        while expression.count(")") > expression.count("(") and expression.endswith(")"):
            expression = expression[:-1].rstrip()
        while expression.count("(") > expression.count(")") and expression.startswith("("):
            expression = expression[1:].lstrip()
        if expression.count("(") == expression.count(")") and _OPERATION.search(expression):
            return expression
    return None


def offline_tool_calls(request: GatewayRequest) -> tuple[ToolCall, ...]:
    """The tools the offline model calls for `request`: `calculator` for an arithmetic
    expression and `current_time` for a question about the time, in the last message when it is
    the user's (after tool results, the model answers instead)."""
    offered = _offered_tools(request)
    messages = list(request.messages)
    if not offered or request.json_schema is not None or not messages:
        return ()
    if messages[-1].role != "user":
        return ()
    text = messages[-1].content
    wanted: list[tuple[str, dict[str, str]]] = []
    expression = find_expression(text) if "calculator" in offered else None
    if expression is not None:
        wanted.append(("calculator", {"expression": expression}))
    if "current_time" in offered and _TIME_QUESTION.search(text):
        wanted.append(("current_time", {}))
    # Ids unique within the conversation, and the same for the same conversation.
    round_number = 1 + sum(1 for m in messages if m.role == "assistant" and m.tool_calls)
    return tuple(
        ToolCall(
            id=f"call_offline_{round_number}_{n}",
            name=name,
            arguments=json.dumps(arguments, ensure_ascii=False),
        )
        for n, (name, arguments) in enumerate(wanted, start=1)
    )


def _tool_results(messages: list[ChatMessage]) -> list[tuple[str, str]]:
    """(tool name, result) of the tool messages that end the conversation."""
    start = len(messages)
    while start > 0 and messages[start - 1].role == "tool":
        start -= 1
    names: dict[str, str] = {}
    for message in messages[:start]:
        for call in message.tool_calls:
            names[call.id] = call.name
    return [(names.get(m.tool_call_id or "", "tool"), m.content) for m in messages[start:]]


def _result_sentence(name: str, result: str) -> str:
    shown = " ".join(result.split())
    if len(shown) > _RESULT_CHARS:
        shown = shown[: _RESULT_CHARS - 1] + "…"
    shown = shown.rstrip(".")
    try:
        decoded = json.loads(result)
    except ValueError:
        decoded = None
    if shown.lower().startswith("error") or (isinstance(decoded, dict) and "error" in decoded):
        return f"The {name} tool failed: {shown}."
    if name == "calculator":
        return f"The result is {shown}."
    if name == "current_time":
        return f"It is {shown}."
    return f"The {name} tool returned: {shown}."


def tool_result_reply(request: GatewayRequest) -> str | None:
    """The text answer to a conversation that ends with tool results (None when it does not):
    what the tools returned, labelled."""
    results = _tool_results(list(request.messages))
    if not results:
        return None
    return " ".join([OFFLINE_LABEL, *(_result_sentence(name, text) for name, text in results)])


def _deltas(text: str, pieces: int = 6) -> list[str]:
    """`text` split at word boundaries into about `pieces` deltas (joined, they are `text`)."""
    words = re.findall(r"\S+\s*|\s+", text)
    if len(words) <= 1:
        return [text] if text else []
    size = max(1, -(-len(words) // pieces))
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


class OfflineGateway:
    """The `Gateway` of the offline model. Stateless and thread-safe."""

    def __init__(self, provider: ProviderConfig = OFFLINE_PROVIDER) -> None:
        self.provider = provider

    def stream(self, request: GatewayRequest) -> OfflineStream:
        return OfflineStream(request)

    def complete(self, request: GatewayRequest) -> GatewayResponse:
        stream = self.stream(request)
        for _ in stream:
            pass
        return stream.response


class OfflineStream:
    """The offline model's answer, streamed in several deltas; `close()` cancels it."""

    def __init__(self, request: GatewayRequest) -> None:
        self._request = request
        self._cancelled = threading.Event()
        self._iterated = False
        self._parts: list[str] = []
        self._started_at = time.monotonic()
        self._ttft_ms: int | None = None
        self._generation_id = f"offline-{uuid.uuid4().hex}"  # unique per call, like a provider's
        self._tool_calls: tuple[ToolCall, ...] = ()
        self._response: GatewayResponse | None = None
        self._error: GatewayError | None = None

    def __iter__(self) -> Iterator[str]:
        if self._iterated:
            raise RuntimeError("a gateway stream can be iterated only once")
        self._iterated = True
        return self._run()

    def _run(self) -> Iterator[str]:
        self._started_at = time.monotonic()
        tool_calls = offline_tool_calls(self._request)
        text = "" if tool_calls else offline_reply(self._request)
        structured = self._request.json_schema is not None
        if self._request.max_tokens is not None and not structured:
            tokens = get_encoding().encode_ordinary(text)
            if len(tokens) > self._request.max_tokens:
                text = get_encoding().decode(tokens[: self._request.max_tokens])
        self._tool_calls = tool_calls
        if tool_calls and self._ttft_ms is None:
            self._ttft_ms = self._elapsed_ms()
        for delta in _deltas(text):
            if self._cancelled.is_set():
                break
            if self._ttft_ms is None:
                self._ttft_ms = self._elapsed_ms()
            self._parts.append(delta)
            yield delta
        if self._cancelled.is_set():
            assert self._error is not None
            raise self._error
        parsed: dict[str, Any] | None = json.loads(text) if structured else None
        self._response = GatewayResponse(
            text=text,
            usage=self._usage(),
            model=self._request.model,
            parsed=parsed,
            generation_id=self._generation_id,
            finish_reason="tool_calls" if tool_calls else "stop",
            latency_ms=self._elapsed_ms(),
            time_to_first_token_ms=self._ttft_ms,
            tool_calls=tool_calls,
        )

    def close(self) -> None:
        if self._response is not None or self._cancelled.is_set():
            return
        self._error = GatewayError(
            "cancelled",
            "The call was cancelled.",
            usage=self._usage() if self._iterated else None,
            generation_id=self._generation_id,
            latency_ms=self._elapsed_ms(),
            time_to_first_token_ms=self._ttft_ms,
            partial_text="".join(self._parts),
        )
        self._cancelled.set()

    @property
    def response(self) -> GatewayResponse:
        if self._response is None:
            raise RuntimeError("the call has not finished successfully")
        return self._response

    @property
    def error(self) -> GatewayError | None:
        return self._error

    def _usage(self) -> TokenUsage:
        called = "".join(call.name + call.arguments for call in self._tool_calls)
        return TokenUsage(
            prompt_tokens=count_message_tokens(self._request.messages)
            + count_tools_tokens(self._request.tools),
            completion_tokens=count_tokens("".join(self._parts) + called),
            source="provider",
        )

    def _elapsed_ms(self) -> int:
        return int((time.monotonic() - self._started_at) * 1000)
