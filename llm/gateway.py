"""The one gateway protocol between Pantheon and any LLM provider.

Plain dataclasses in, plain dataclasses out: `llm` imports no other app. A call is a *stream*:
iterate it for text deltas, `close()` it to cancel (the upstream connection is closed at once),
and read `.response` once it is exhausted. `complete()` is the same stream consumed whole, so the
pipeline runs one way whether or not the client asked for Server-Sent Events.

Errors are typed (`GatewayError.kind`): `timeout`, `rate_limited`, `provider_error`,
`invalid_response`, `cancelled`. An error still carries what the provider reported as consumed
(`usage`, possibly estimated) so it can be billed exactly.

Tools: a request may offer tool definitions (`tools`, already in the OpenAI format); the response
then carries the model's `tool_calls` (finish reason `tool_calls`). The caller runs them and sends
the conversation back with the assistant's `tool_calls` message and one `role="tool"` message per
result (`tool_call_id`). `openai_messages` is the one rendering of messages to the wire format.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]
UsageSource = Literal["provider", "estimated"]
ErrorKind = Literal["timeout", "rate_limited", "provider_error", "invalid_response", "cancelled"]


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for. `arguments` is the raw JSON text the model sent (it may not
    parse: the caller validates it)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    """One message. An assistant message that called tools carries them in `tool_calls` (its
    `content` may be empty); a `role="tool"` message carries one result, for `tool_call_id`."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class ProviderConfig:
    """Where a call goes. `kind` is `openai_compatible` or `offline`."""

    name: str
    kind: str
    base_url: str = ""
    api_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class GatewayRequest:
    model: str
    messages: Sequence[ChatMessage]
    temperature: float | None = None
    max_tokens: int | None = None
    # Structured output: a JSON schema the answer must satisfy (sent as response_format).
    json_schema: dict[str, Any] | None = None
    schema_name: str = "response"
    timeout: float | None = None  # read timeout override, seconds
    # Tool definitions in the OpenAI format: {"type": "function", "function": {"name",
    # "description", "parameters"}}. None or empty: no tools offered.
    tools: Sequence[dict[str, Any]] | None = None
    tool_choice: str | None = None  # "auto" / "none"; None: not sent (the provider's default)


@dataclass(frozen=True)
class TokenUsage:
    """Provider totals plus the detail buckets that are *parts* of them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    source: UsageSource = "provider"


@dataclass(frozen=True)
class GatewayResponse:
    text: str
    usage: TokenUsage
    model: str
    parsed: dict[str, Any] | None = None  # the validated object, for structured output
    generation_id: str | None = None
    finish_reason: str | None = None
    latency_ms: int = 0
    time_to_first_token_ms: int | None = None
    # The tools the model called (finish_reason "tool_calls"); `text` may be empty then.
    tool_calls: tuple[ToolCall, ...] = ()


class GatewayError(Exception):
    """A failed call, typed. `usage` is what was consumed anyway (None when nothing was)."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        usage: TokenUsage | None = None,
        generation_id: str | None = None,
        latency_ms: int = 0,
        time_to_first_token_ms: int | None = None,
        partial_text: str = "",
        retry_after: float | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.usage = usage
        self.generation_id = generation_id
        self.latency_ms = latency_ms
        self.time_to_first_token_ms = time_to_first_token_ms
        self.partial_text = partial_text
        self.retry_after = retry_after
        self.status_code = status_code


def openai_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """`messages` in the OpenAI chat-completions wire format: `{"role", "content"}`, plus the
    assistant's `tool_calls` (content `null` when it said nothing) and the tool results'
    `tool_call_id`."""
    rendered: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            item["content"] = message.content or None
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ]
        if message.role == "tool" or message.tool_call_id is not None:
            item["tool_call_id"] = message.tool_call_id or ""
        rendered.append(item)
    return rendered


class GatewayStream(Protocol):
    """One call in flight. Iterating yields text deltas; raises GatewayError on failure."""

    def __iter__(self) -> Iterator[str]: ...

    def close(self) -> None:
        """Cancel: close the upstream connection now. Safe to call more than once."""

    @property
    def response(self) -> GatewayResponse:
        """The finished call (after iteration ended without error)."""
        ...

    @property
    def error(self) -> GatewayError | None:
        """The error the call ended with, or None. After `close()` it is the `cancelled` error
        (partial text, usage estimated so far) even if the stream is never iterated again."""
        ...


class Gateway(Protocol):
    provider: ProviderConfig

    def stream(self, request: GatewayRequest) -> GatewayStream: ...

    def complete(self, request: GatewayRequest) -> GatewayResponse: ...
