"""The offline model: a deterministic, clearly labelled stand-in that needs no network.

It is what runs when no provider key is configured, so a first run works on any machine. Replies
say plainly that they come from the offline model and echo a short digest of the last user
message; they stream in several deltas like a real model. Structured-output requests get a
schema-valid object (`llm.offline_structured`): orchestrator routing by @mention or keyword match
with a reason that says which, and extractive session summaries that cite their turns, so a first
run shows what these features do without pretending a model reasoned about them.

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

from llm.gateway import GatewayError, GatewayRequest, GatewayResponse, ProviderConfig, TokenUsage
from llm.offline_structured import OFFLINE_LABEL, structured_answer
from llm.tokenizer import count_message_tokens, count_tokens, get_encoding

OFFLINE_PROVIDER = ProviderConfig(name="offline", kind="offline")
__all__ = ["OFFLINE_LABEL", "OFFLINE_PROVIDER", "OfflineGateway", "OfflineStream", "offline_reply"]
_ECHO_CHARS = 80


def _last_user_message(request: GatewayRequest) -> str:
    return next((m.content for m in reversed(request.messages) if m.role == "user"), "")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def offline_reply(request: GatewayRequest) -> str:
    """The offline model's deterministic reply text for `request`."""
    last = _last_user_message(request)
    if request.json_schema is not None:
        value = structured_answer(request.messages, request.json_schema)
        return json.dumps(value, ensure_ascii=False)
    echo = " ".join(last.split())
    if len(echo) > _ECHO_CHARS:
        echo = echo[: _ECHO_CHARS - 1] + "…"
    return (
        f"{OFFLINE_LABEL} This reply comes from Pantheon's offline model, not a real LLM. "
        f'You said: "{echo}" (digest {_digest(last)}). '
        "Configure OPENROUTER_API_KEY or a provider to get real answers."
    )


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
        self._response: GatewayResponse | None = None
        self._error: GatewayError | None = None

    def __iter__(self) -> Iterator[str]:
        if self._iterated:
            raise RuntimeError("a gateway stream can be iterated only once")
        self._iterated = True
        return self._run()

    def _run(self) -> Iterator[str]:
        self._started_at = time.monotonic()
        text = offline_reply(self._request)
        structured = self._request.json_schema is not None
        if self._request.max_tokens is not None and not structured:
            tokens = get_encoding().encode_ordinary(text)
            if len(tokens) > self._request.max_tokens:
                text = get_encoding().decode(tokens[: self._request.max_tokens])
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
            finish_reason="stop",
            latency_ms=self._elapsed_ms(),
            time_to_first_token_ms=self._ttft_ms,
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
        return TokenUsage(
            prompt_tokens=count_message_tokens(self._request.messages),
            completion_tokens=count_tokens("".join(self._parts)),
            source="provider",
        )

    def _elapsed_ms(self) -> int:
        return int((time.monotonic() - self._started_at) * 1000)
