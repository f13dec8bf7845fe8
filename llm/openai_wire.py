"""The wire format of OpenAI-compatible chat completions, as the gateway reads it: the
Server-Sent Events of a streamed answer, its usage block, error bodies and `Retry-After`
headers, and the socket shutdown that cancels a read in flight. Plain functions over what came
off the wire; providers send `null` or garbage where objects are expected, so every reader is
lenient about shape."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import socket
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import openai

from llm.gateway import TokenUsage


def _shutdown(network_stream: Any) -> bool:
    sock = network_stream.get_extra_info("socket") if network_stream is not None else None
    if sock is None:
        return False
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)
    return True


def shutdown_socket(response: httpx.Response) -> None:
    """Shut the connection's socket down, which also wakes a read blocked in another thread
    (closing the file descriptor alone would not)."""
    _shutdown(response.extensions.get("network_stream"))


# --- cancelling a call that has no response yet ------------------------------------------------
#
# Before the provider's headers arrive there is no response to reach the socket through: the
# request sits in httpx's connection pool, and a thread is blocked reading its answer. The call
# being opened tags its request (an httpx request hook, in the opening thread); `close()` from
# any other thread then finds the pooled connection that carries that request and shuts its
# socket down, so a provider that has not sent a byte is stopped too.

_CALL_EXTENSION = "pantheon_call"
_opening: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "pantheon_call_opening", default=None
)


@contextlib.contextmanager
def opening(call: object) -> Iterator[None]:
    """Within the block, requests sent by this thread are tagged as `call`'s."""
    token = _opening.set(call)
    try:
        yield
    finally:
        _opening.reset(token)


def tag_request(request: httpx.Request) -> None:
    """httpx request hook: tag the request with the call being opened in this thread."""
    call = _opening.get()
    if call is not None:
        request.extensions[_CALL_EXTENSION] = call


def shutdown_pending(client: httpx.Client, call: object) -> bool:
    """Shut down the socket of the pooled connection carrying `call`'s request while it waits
    for its answer. False when there is none (not sent yet, still queued for a connection,
    already answered). Reads httpcore's pool (httpcore 1.0: `_requests`, each with `request`
    and `connection`, whose `_connection._network_stream` is the socket's stream); a test
    fails if an upgrade moves them."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    for pool_request in list(getattr(pool, "_requests", None) or ()):
        if pool_request.request.extensions.get(_CALL_EXTENSION) is not call:
            continue
        connection = getattr(pool_request.connection, "_connection", None)
        return _shutdown(getattr(connection, "_network_stream", None))
    return False


def sse_data(lines: Iterator[str]) -> Iterator[str]:
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


def drain_events(events: Iterator[str], limit: int = 64) -> None:
    """Read what follows [DONE] (normally just the end of the body) so the connection can be
    reused; anything odd there no longer matters, the answer is complete."""
    with contextlib.suppress(httpx.HTTPError, OSError, ValueError):
        for _ in itertools.islice(events, limit):
            pass


def chunk_error_text(chunk: dict[str, Any]) -> str:
    error = chunk.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:300]


def _field(obj: Any, name: str) -> Any:
    """A field of a decoded JSON object; None when absent or when `obj` is not an object (a
    provider may send `null` or garbage where a details object is expected)."""
    return obj.get(name) if isinstance(obj, dict) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def token_usage_from(usage: Any) -> TokenUsage:
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


def retry_after_seconds(headers: httpx.Headers) -> float | None:
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


def status_error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if isinstance(message, str):
            return message[:300]
    return str(exc.message)[:300]


def strip_code_fence(text: str) -> str:
    # Some compatible servers wrap JSON in a Markdown fence even in JSON mode.
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped[3:-3]
        if stripped.startswith("json"):
            stripped = stripped[4:]
    return stripped
