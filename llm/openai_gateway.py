"""The OpenAI-compatible gateway (OpenRouter by default), on the `openai` SDK.

Every call streams (`stream=True` with `include_usage`), so a JSON answer and a Server-Sent
Events answer run the same code: `complete()` is `stream()` consumed whole. Tool definitions are
sent as given; the tool-call deltas of the answer are assembled into the response's `tool_calls`
(`openai_wire.ToolCallAssembler`), while its text deltas stream as usual.

Bounded failure: explicit connect/read timeouts; the SDK's own retries are off
(`max_retries=0` on the client) and this module retries instead — only before the first byte of
the answer, only on 429, 5xx and connection failures, at most `max_retries` times, with backoff
that honours `Retry-After` but never waits longer than `retry_max_wait` (a longer `Retry-After`
fails at once). A timeout is never retried: the provider may still be generating, and retrying it
would multiply both the wait and the bill.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from llm.gateway import (
    ErrorKind,
    GatewayError,
    GatewayRequest,
    GatewayResponse,
    ProviderConfig,
    TokenUsage,
    openai_messages,
)
from llm.json_schema import schema_errors
from llm.openai_wire import (
    PendingCall,
    ToolCallAssembler,
    chunk_error_text,
    drain_events,
    opening,
    retry_after_seconds,
    shutdown_pending,
    shutdown_socket,
    sse_data,
    status_error_message,
    strip_code_fence,
    token_usage_from,
)
from llm.tokenizer import count_message_tokens, count_tokens, count_tools_tokens

# First backoff step when the provider gives no Retry-After; doubles per attempt, with jitter.
RETRY_BACKOFF_BASE_SECONDS = 0.25
# A cancel before the answer's headers looks for the request this often until the open has
# ended (the request may still be queued for a connection, connecting, or not in the pool yet).
_STOP_PENDING_EVERY = 0.02


@dataclass(frozen=True)
class GatewayPolicy:
    """Timeouts and the retry budget of one gateway (from settings, see llm.providers)."""

    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_retries: int = 2
    retry_max_wait: float = 10.0


class OpenAICompatibleGateway:
    """A `Gateway` over any OpenAI-compatible chat-completions endpoint."""

    def __init__(
        self, provider: ProviderConfig, client: openai.OpenAI, policy: GatewayPolicy
    ) -> None:
        self.provider = provider
        self.client = client
        self.policy = policy

    def stream(self, request: GatewayRequest) -> OpenAIChatStream:
        """A call in flight; nothing is sent until it is iterated."""
        return OpenAIChatStream(self, request)

    def complete(self, request: GatewayRequest) -> GatewayResponse:
        """The whole answer (the stream, consumed)."""
        stream = self.stream(request)
        for _ in stream:
            pass
        return stream.response


class OpenAIChatStream:
    """One streamed chat completion. Iterate for text deltas; `close()` cancels from any thread."""

    def __init__(self, gateway: OpenAICompatibleGateway, request: GatewayRequest) -> None:
        self._gateway = gateway
        self._request = request
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._iterated = False
        self._opened = False  # the request (may have) gone out
        self._open_started = False  # `_open` began: a close from now on must stop what it sends
        self._pending = PendingCall(self._cancel)  # what a close reaches before any answer
        self._reading_thread: int | None = None  # set while blocked inside the SDK stream
        self._sdk_stream: openai.Stream[Any] | None = None
        self._parts: list[str] = []
        self._tool_calls = ToolCallAssembler()
        self._prompt_estimate: int | None = None
        self._started_at = 0.0
        self._ttft_ms: int | None = None
        self._generation_id: str | None = None
        # What the chunks said so far (read by `_finish` once the body ended).
        self._chunks = 0
        self._model = request.model
        self._provider_usage: TokenUsage | None = None
        self._finish_reason: str | None = None
        self._finished_ms: int | None = None  # when [DONE] arrived
        self._response: GatewayResponse | None = None
        self._error: GatewayError | None = None
        self._open_ended = threading.Event()  # the request was answered, or failed

    # --- the protocol -----------------------------------------------------------------------

    def __iter__(self) -> Iterator[str]:
        if self._iterated:
            raise RuntimeError("a gateway stream can be iterated only once")
        self._iterated = True
        return self._run()

    def close(self) -> None:
        """Cancel now: the HTTP connection is shut down, so the upstream sees it closed. After a
        cancel, `error` holds the `cancelled` GatewayError with the partial text and the usage
        estimated so far; iterating further raises it."""
        with self._lock:
            if self._cancel.is_set() or self._response is not None or self._error is not None:
                return
            self._cancel.set()
            usage = self._estimated_usage() if self._opened else None
            self._error = self._make_error("cancelled", "The call was cancelled.", usage=usage)
            sdk_stream = self._sdk_stream
            reader = self._reading_thread
            open_started = self._open_started
        if sdk_stream is not None:
            # Another thread blocked in a read gets EOF from the shutdown and closes the response
            # itself; closing it from here too would race with that thread inside httpcore.
            shutdown_socket(sdk_stream.response)
            if reader is None or reader == threading.get_ident():
                sdk_stream.close()
        elif open_started and not self._open_ended.is_set():
            # No answer yet: the request is somewhere in the connection pool (queued, connecting
            # or waiting for its headers), or about to be sent — and then refuses to go out.
            threading.Thread(target=self._stop_pending, daemon=True).start()

    def _stop_pending(self) -> None:
        """Stop the request that has no answer yet, wherever it is in the pool — again and
        again until the open has ended (the request may not have reached the pool yet, or a
        retry's request may follow): `_open` ends soon after, as cancelled."""
        http_client = self._gateway.client._client
        while not self._open_ended.is_set():
            shutdown_pending(http_client, self._pending)
            self._open_ended.wait(_STOP_PENDING_EVERY)

    @property
    def response(self) -> GatewayResponse:
        if self._response is None:
            raise RuntimeError("the call has not finished successfully")
        return self._response

    @property
    def error(self) -> GatewayError | None:
        """The error the call ended with (including a cancel), or None."""
        return self._error

    # --- the call ---------------------------------------------------------------------------

    def _run(self) -> Iterator[str]:
        self._started_at = time.monotonic()
        if self._cancel.is_set():
            raise self._error_or_cancelled()
        sdk_stream = self._open()
        yield from self._read(sdk_stream)
        self._finish()

    def _read(self, sdk_stream: openai.Stream[Any]) -> Iterator[str]:
        """Yield the answer's text deltas until [DONE], the end of the body or a cancel. Any
        failure to read or decode the body becomes the call's error; the stream is closed
        however this ends."""
        # The SSE body is read here rather than through the SDK's Stream: chunks stay plain dicts
        # (no model construction per chunk), provider extensions are plain keys, and the body is
        # read to its end after [DONE] so the connection goes back to the pool (the SDK stops at
        # [DONE] and closes, which costs a new TCP + TLS handshake on every call).
        events = sse_data(sdk_stream.response.iter_lines())
        try:
            while True:
                data = self._next_event(events)
                if data is None or self._cancel.is_set():
                    break
                if data == "[DONE]":
                    self._finished_ms = self._elapsed_ms()
                    drain_events(events)
                    break
                content = self._take_chunk(data)
                if content:
                    yield content
                    if self._cancel.is_set():
                        break
        except GatewayError:
            raise
        except httpx.TimeoutException as exc:
            raise self._fail_midstream(
                "timeout", "The provider stopped sending (read timeout)."
            ) from exc
        except (httpx.HTTPError, OSError) as exc:
            raise self._fail_midstream("provider_error", f"The stream was cut: {exc}") from exc
        except (ValueError, TypeError, AttributeError) as exc:  # undecodable or ill-shaped chunk
            raise self._fail_midstream("invalid_response", f"Malformed stream data: {exc}") from exc
        finally:
            self._reading_thread = None
            sdk_stream.close()

    def _next_event(self, events: Iterator[str]) -> str | None:
        """The next event's data, None at the end of the body. While blocked here, `close()`
        from another thread knows who reads the connection."""
        self._reading_thread = threading.get_ident()
        try:
            return next(events, None)
        finally:
            self._reading_thread = None

    def _take_chunk(self, data: str) -> str | None:
        """Record one completion chunk (id, model, usage, finish reason); return its text delta,
        if it carries one."""
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise ValueError("a stream event is not a JSON object")
        if chunk.get("error"):
            raise self._fail_midstream(
                "provider_error", f"The provider failed mid-stream: {chunk_error_text(chunk)}"
            )
        self._chunks += 1
        self._generation_id = self._generation_id or chunk.get("id") or None
        self._model = chunk.get("model") or self._model
        if chunk.get("usage"):
            self._provider_usage = token_usage_from(chunk["usage"])
        choices = chunk.get("choices") or []
        if not choices:
            return None
        choice = choices[0]
        self._finish_reason = choice.get("finish_reason") or self._finish_reason
        delta = choice.get("delta") or {}
        if delta.get("tool_calls"):
            self._tool_calls.add(delta["tool_calls"])
            if self._ttft_ms is None:
                self._ttft_ms = self._elapsed_ms()
        content = delta.get("content")
        if not content:
            return None
        if not isinstance(content, str):
            raise ValueError("a delta's content is not text")
        if self._ttft_ms is None:
            self._ttft_ms = self._elapsed_ms()
        self._parts.append(content)
        return content

    def _finish(self) -> None:
        """After the body: the response — or the error of a cancel, of a stream without chunks or
        cut before the model finished, of tool calls without a name, or of a structured answer
        that does not parse."""
        if self._cancel.is_set():
            raise self._error_or_cancelled()
        if self._chunks == 0:
            raise self._fail("invalid_response", "The provider sent no completion chunks.")
        if self._finish_reason is None:
            raise self._fail("provider_error", "The stream ended before the model finished.")
        text = "".join(self._parts)
        usage = self._provider_usage or self._estimated_usage()
        try:
            tool_calls = self._tool_calls.calls()
        except ValueError as exc:
            raise self._fail(
                "invalid_response", f"Malformed tool call: {exc}", usage=usage
            ) from exc
        finish_reason = self._finish_reason
        if tool_calls and finish_reason == "stop":
            finish_reason = "tool_calls"  # some providers say "stop" after tool calls
        parsed = None
        if self._request.json_schema and not tool_calls:
            parsed = self._parse_structured(text, usage)
        with self._lock:
            if self._cancel.is_set():  # close() won the race at the very end
                raise self._error_or_cancelled()
            latency_ms = self._elapsed_ms() if self._finished_ms is None else self._finished_ms
            self._response = GatewayResponse(
                text=text,
                usage=usage,
                model=self._model,
                parsed=parsed,
                generation_id=self._generation_id,
                finish_reason=finish_reason,
                latency_ms=latency_ms,
                time_to_first_token_ms=self._ttft_ms,
                tool_calls=tool_calls,
            )

    def _open(self) -> openai.Stream[Any]:
        """Send the request (with the retry budget) and return the SDK stream once the
        provider's headers arrived."""
        with self._lock:
            # A close() from here on sees the open started (and stops what it sends); one that
            # came before is seen here.
            self._open_started = True
            cancelled = self._cancel.is_set()
        try:
            if cancelled:
                raise self._error_or_cancelled()
            return self._open_with_retries()
        finally:
            self._open_ended.set()

    def _open_with_retries(self) -> openai.Stream[Any]:
        policy = self._gateway.policy
        body, timeout = self._request_body(), self._timeout()
        attempt = 0
        while True:
            try:
                self._opened = True
                sdk_stream = self._send(body, timeout)
                break
            except openai.APITimeoutError as exc:
                raise self._fail("timeout", "The provider did not answer in time.") from exc
            except openai.APIConnectionError as exc:
                kind: ErrorKind = "provider_error"
                message = f"Cannot reach the provider: {exc}"
                status, retry_after = None, None
            except openai.APIStatusError as exc:
                status = exc.status_code
                retry_after = retry_after_seconds(exc.response.headers)
                kind = "rate_limited" if status == 429 else "provider_error"
                message = f"The provider answered HTTP {status}: {status_error_message(exc)}"
                if status != 429 and status < 500:  # a request the provider will never accept
                    raise self._fail(kind, message, status_code=status) from exc
            too_long = retry_after is not None and retry_after > policy.retry_max_wait
            if attempt >= policy.max_retries or too_long:
                raise self._fail(
                    kind, message, status_code=status, retry_after=retry_after
                ) from None
            backoff = RETRY_BACKOFF_BASE_SECONDS * (2**attempt) * random.uniform(0.75, 1.25)
            wait = retry_after if retry_after is not None else min(backoff, policy.retry_max_wait)
            if self._cancel.wait(wait):
                raise self._error_or_cancelled()
            attempt += 1
        with self._lock:
            self._sdk_stream = sdk_stream
            cancelled = self._cancel.is_set()
        if cancelled:  # close() came while we waited for the headers
            shutdown_socket(sdk_stream.response)
            sdk_stream.close()
            raise self._error_or_cancelled()
        return sdk_stream

    def _send(self, body: dict[str, Any], timeout: httpx.Timeout) -> openai.Stream[Any]:
        """One attempt. A cancelled call sends nothing: checked here, then by the wire until the
        request's headers are written (`openai_wire.PendingCall`); a failure of an attempt the
        call was cancelled during is the cancel."""
        if self._cancel.is_set():
            raise self._error_or_cancelled()
        try:
            # `client.post` with a plain JSON body: the same request, headers, auth and stream
            # decoding as `chat.completions.create`, without its recursive TypedDict
            # transformation of the parameters (≈10 % of a turn's CPU). The request is tagged
            # as this call's, so `close()` can stop it before it answers.
            with opening(self._pending):
                return self._gateway.client.post(
                    "/chat/completions",
                    body=body,
                    cast_to=ChatCompletion,
                    stream=True,
                    stream_cls=openai.Stream[ChatCompletionChunk],
                    options={"timeout": timeout, "security": {"bearer_auth": True}},
                )
        except openai.APIError as exc:
            if self._cancel.is_set():
                raise self._error_or_cancelled() from exc
            raise

    def _timeout(self) -> httpx.Timeout:
        request, policy = self._request, self._gateway.policy
        read = request.timeout if request.timeout is not None else policy.read_timeout
        return httpx.Timeout(
            connect=policy.connect_timeout, read=read, write=read, pool=policy.connect_timeout
        )

    def _request_body(self) -> dict[str, Any]:
        """The chat-completions request body, as JSON-ready values."""
        request = self._request
        body: dict[str, Any] = {
            "model": request.model,
            "messages": openai_messages(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.tools:
            body["tools"] = list(request.tools)
            if request.tool_choice is not None:  # providers refuse a tool_choice without tools
                body["tool_choice"] = request.tool_choice
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": request.json_schema,
                    "strict": True,
                },
            }
        return body

    def _parse_structured(self, text: str, usage: TokenUsage) -> dict[str, Any]:
        schema = self._request.json_schema or {}
        try:
            value = json.loads(strip_code_fence(text))
        except ValueError as exc:
            raise self._fail(
                "invalid_response", f"The answer is not JSON: {exc}", usage=usage
            ) from exc
        if not isinstance(value, dict):
            raise self._fail("invalid_response", "The answer is not a JSON object.", usage=usage)
        errors = schema_errors(value, schema)
        if errors:
            raise self._fail(
                "invalid_response",
                "The answer does not match the schema: " + "; ".join(errors[:5]),
                usage=usage,
            )
        return value

    # --- bookkeeping ------------------------------------------------------------------------

    def _elapsed_ms(self) -> int:
        return int((time.monotonic() - self._started_at) * 1000)

    def _estimated_usage(self) -> TokenUsage:
        if self._prompt_estimate is None:
            self._prompt_estimate = count_message_tokens(
                self._request.messages
            ) + count_tools_tokens(self._request.tools)
        return TokenUsage(
            prompt_tokens=self._prompt_estimate,
            completion_tokens=count_tokens("".join(self._parts) + self._tool_calls.text()),
            source="estimated",
        )

    def _make_error(
        self,
        kind: ErrorKind,
        message: str,
        *,
        usage: TokenUsage | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> GatewayError:
        return GatewayError(
            kind,
            message,
            usage=usage,
            generation_id=self._generation_id,
            latency_ms=self._elapsed_ms() if self._started_at else 0,
            time_to_first_token_ms=self._ttft_ms,
            partial_text="".join(self._parts),
            retry_after=retry_after,
            status_code=status_code,
        )

    def _fail(
        self,
        kind: ErrorKind,
        message: str,
        *,
        usage: TokenUsage | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> GatewayError:
        """Record the call's error (unless a cancel already did) and return it to raise."""
        with self._lock:
            if self._error is None:
                self._error = self._make_error(
                    kind, message, usage=usage, status_code=status_code, retry_after=retry_after
                )
            return self._error

    def _fail_midstream(self, kind: ErrorKind, message: str) -> GatewayError:
        # Once the answer started, the provider may bill it: carry an estimate of what was used.
        if self._cancel.is_set():
            return self._error_or_cancelled()
        return self._fail(kind, message, usage=self._estimated_usage())

    def _error_or_cancelled(self) -> GatewayError:
        with self._lock:
            if self._error is None:
                self._error = self._make_error("cancelled", "The call was cancelled.")
            return self._error
