"""The OpenAI-compatible gateway (OpenRouter by default), on the `openai` SDK.

Every call streams (`stream=True` with `include_usage`), so a JSON answer and a Server-Sent
Events answer run the same code: `complete()` is `stream()` consumed whole.

Bounded failure: explicit connect/read timeouts; the SDK's own retries are off
(`max_retries=0` on the client) and this module retries instead — only before the first byte of
the answer, only on 429, 5xx and connection failures, at most `max_retries` times, with backoff
that honours `Retry-After` but never waits longer than `retry_max_wait` (a longer `Retry-After`
fails at once). A timeout is never retried: the provider may still be generating, and retrying it
would multiply both the wait and the bill.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
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
)
from llm.json_schema import schema_errors
from llm.tokenizer import count_message_tokens, count_tokens

# First backoff step when the provider gives no Retry-After; doubles per attempt, with jitter.
RETRY_BACKOFF_BASE_SECONDS = 0.25


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
        self._opened = False  # the request went out
        self._reading_thread: int | None = None  # set while blocked inside the SDK stream
        self._sdk_stream: openai.Stream[Any] | None = None
        self._parts: list[str] = []
        self._prompt_estimate: int | None = None
        self._started_at = 0.0
        self._ttft_ms: int | None = None
        self._generation_id: str | None = None
        self._response: GatewayResponse | None = None
        self._error: GatewayError | None = None

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
        if sdk_stream is not None:
            # Another thread blocked in a read gets EOF from the shutdown and closes the response
            # itself; closing it from here too would race with that thread inside httpcore.
            _shutdown_socket(sdk_stream.response)
            if reader is None or reader == threading.get_ident():
                sdk_stream.close()

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
        # The SSE body is read here rather than through the SDK's Stream: chunks stay plain dicts
        # (no model construction per chunk), provider extensions are plain keys, and the body is
        # read to its end after [DONE] so the connection goes back to the pool (the SDK stops at
        # [DONE] and closes, which costs a new TCP + TLS handshake on every call).
        events = _sse_data(sdk_stream.response.iter_lines())
        finish_reason: str | None = None
        model = self._request.model
        usage: TokenUsage | None = None
        chunks = 0
        finished_ms: int | None = None
        try:
            while True:
                self._reading_thread = threading.get_ident()
                try:
                    data = next(events, None)
                finally:
                    self._reading_thread = None
                if data is None or self._cancel.is_set():
                    break
                if data == "[DONE]":
                    finished_ms = self._elapsed_ms()
                    _drain(events)
                    break
                chunk = json.loads(data)
                if not isinstance(chunk, dict):
                    raise ValueError("a stream event is not a JSON object")
                if chunk.get("error"):
                    raise self._fail_midstream(
                        "provider_error", f"The provider failed mid-stream: {_error_text(chunk)}"
                    )
                chunks += 1
                self._generation_id = self._generation_id or chunk.get("id") or None
                model = chunk.get("model") or model
                if chunk.get("usage"):
                    usage = _usage_from(chunk["usage"])
                choices = chunk.get("choices") or []
                if not choices:
                    continue
                choice = choices[0]
                finish_reason = choice.get("finish_reason") or finish_reason
                content = (choice.get("delta") or {}).get("content")
                if content:
                    if not isinstance(content, str):
                        raise ValueError("a delta's content is not text")
                    if self._ttft_ms is None:
                        self._ttft_ms = self._elapsed_ms()
                    self._parts.append(content)
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

        if self._cancel.is_set():
            raise self._error_or_cancelled()
        if chunks == 0:
            raise self._fail("invalid_response", "The provider sent no completion chunks.")
        if finish_reason is None:
            raise self._fail("provider_error", "The stream ended before the model finished.")
        text = "".join(self._parts)
        usage = usage or self._estimated_usage()
        parsed = self._parse_structured(text, usage) if self._request.json_schema else None
        with self._lock:
            if self._cancel.is_set():  # close() won the race at the very end
                raise self._error_or_cancelled()
            self._response = GatewayResponse(
                text=text,
                usage=usage,
                model=model,
                parsed=parsed,
                generation_id=self._generation_id,
                finish_reason=finish_reason,
                latency_ms=finished_ms if finished_ms is not None else self._elapsed_ms(),
                time_to_first_token_ms=self._ttft_ms,
            )

    def _open(self) -> openai.Stream[Any]:
        """Send the request (with the retry budget) and return the SDK stream once the
        provider's headers arrived."""
        policy = self._gateway.policy
        body, timeout = self._request_body(), self._timeout()
        attempt = 0
        while True:
            try:
                self._opened = True
                # `client.post` with a plain JSON body: the same request, headers, auth and
                # stream decoding as `chat.completions.create`, without its recursive
                # TypedDict transformation of the parameters (≈10 % of a turn's CPU).
                sdk_stream = self._gateway.client.post(
                    "/chat/completions",
                    body=body,
                    cast_to=ChatCompletion,
                    stream=True,
                    stream_cls=openai.Stream[ChatCompletionChunk],
                    options={"timeout": timeout, "security": {"bearer_auth": True}},
                )
                break
            except openai.APITimeoutError as exc:
                raise self._fail("timeout", "The provider did not answer in time.") from exc
            except openai.APIConnectionError as exc:
                kind: ErrorKind = "provider_error"
                message = f"Cannot reach the provider: {exc}"
                status, retry_after = None, None
            except openai.APIStatusError as exc:
                status = exc.status_code
                retry_after = _retry_after_seconds(exc.response.headers)
                kind = "rate_limited" if status == 429 else "provider_error"
                message = f"The provider answered HTTP {status}: {_status_message(exc)}"
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
            _shutdown_socket(sdk_stream.response)
            sdk_stream.close()
            raise self._error_or_cancelled()
        return sdk_stream

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
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
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
            value = json.loads(_strip_code_fence(text))
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
            self._prompt_estimate = count_message_tokens(self._request.messages)
        return TokenUsage(
            prompt_tokens=self._prompt_estimate,
            completion_tokens=count_tokens("".join(self._parts)),
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


def _shutdown_socket(response: httpx.Response) -> None:
    """Shut the connection's socket down, which also wakes a read blocked in another thread
    (closing the file descriptor alone would not)."""
    network_stream = response.extensions.get("network_stream")
    sock = network_stream.get_extra_info("socket") if network_stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


def _sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The `data` of each Server-Sent Event (multi-line data joined; comments and other fields
    such as OpenRouter's `: OPENROUTER PROCESSING` keep-alives skipped)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _drain(events: Iterator[str], limit: int = 64) -> None:
    """Read what follows [DONE] (normally just the end of the body) so the connection can be
    reused; anything odd there no longer matters, the answer is complete."""
    with contextlib.suppress(httpx.HTTPError, OSError, ValueError):
        for _ in itertools.islice(events, limit):
            pass


def _error_text(chunk: dict[str, Any]) -> str:
    error = chunk.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:300]


def _field(obj: Any, name: str) -> Any:
    """A field of a decoded JSON object; None when absent or when `obj` is not an object (a
    provider may send `null` or garbage where a details object is expected)."""
    return obj.get(name) if isinstance(obj, dict) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _usage_from(usage: Any) -> TokenUsage:
    prompt_details = _field(usage, "prompt_tokens_details")
    completion_details = _field(usage, "completion_tokens_details")
    return TokenUsage(
        prompt_tokens=_count(_field(usage, "prompt_tokens")),
        completion_tokens=_count(_field(usage, "completion_tokens")),
        cached_tokens=_count(_field(prompt_details, "cached_tokens")),
        cache_write_tokens=_count(_field(prompt_details, "cache_write_tokens")),
        reasoning_tokens=_count(_field(completion_details, "reasoning_tokens")),
        source="provider",
    )


def _retry_after_seconds(headers: httpx.Headers) -> float | None:
    """`retry-after-ms`, or `Retry-After` as seconds or an HTTP date; None when absent/garbled."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _status_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if isinstance(message, str):
            return message[:300]
    return str(exc.message)[:300]


def _strip_code_fence(text: str) -> str:
    # Some compatible servers wrap JSON in a Markdown fence even in JSON mode.
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped[3:-3]
        if stripped.startswith("json"):
            stripped = stripped[4:]
    return stripped
