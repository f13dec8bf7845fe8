"""The wire format of OpenAI-compatible chat completions, as the gateway reads it: the
Server-Sent Events of a streamed answer, its usage block, its tool-call deltas, error bodies and
`Retry-After` headers, and the socket shutdown that cancels a read in flight. Plain functions
over what came off the wire; providers send `null` or garbage where objects are expected, so
every reader is lenient about shape."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import openai

from llm.gateway import TokenUsage, ToolCall


def _shutdown(network_stream: Any) -> bool:
    sock = network_stream.get_extra_info("socket") if network_stream is not None else None
    return _shutdown_socket(sock)


def _shutdown_socket(sock: socket.socket | None) -> bool:
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
# request is on its way through httpx's connection pool (queued for a free connection,
# connecting, in a TLS handshake, or sent and waiting for its answer) while a thread is blocked
# in it. The call being opened tags its requests (an httpx request hook, in the opening thread)
# and traces them (httpcore's `trace` extension); `close()` from any other thread then reaches
# the request wherever it is, and a request not yet written refuses to go out once the call is
# cancelled — so a provider is never asked for an answer nobody will read, and one that has not
# sent a byte yet is stopped too.

_CALL_EXTENSION = "pantheon_call"
_TRACE_EXTENSION = "trace"
# httpcore trace events (after the `connection.` / `http11.` / … prefix) before which a request
# of a cancelled call refuses to go on: nothing is connected, or nothing is written yet.
_REFUSE_BEFORE = frozenset(
    {"connect_tcp.started", "connect_unix_socket.started", "send_request_headers.started"}
)
_CONNECTED = frozenset({"connect_tcp.complete", "connect_unix_socket.complete"})


class CallCancelled(Exception):
    """Raised inside httpx when a request of a cancelled call was about to go out (the `openai`
    SDK wraps it in an APIConnectionError; the gateway reports the cancel)."""

    def __init__(self) -> None:
        super().__init__("the call was cancelled before its request went out")


class PendingCall:
    """One call's requests on their way out, as seen by a cancel from another thread.

    `cancelled` is the call's own cancel event. While `opening(pending)` is active in the
    opening thread, each request sent is tagged as this call's and traced: once `cancelled` is
    set it refuses to go on before it enters the pool, before a connection is opened for it and
    before its headers are written; and a TCP connection opened for it is shut down at once
    (or by `shutdown_pending` while its TLS handshake runs)."""

    def __init__(self, cancelled: threading.Event) -> None:
        self.cancelled = cancelled
        # A duplicate of the socket of a connection being set up for the request, from its
        # TCP connect until its headers are written: the only way to a TLS handshake in
        # progress (wrapping the socket in TLS detaches the original socket object from it).
        self._connecting: socket.socket | None = None
        self._lock = threading.Lock()  # the duplicate is never shut down once closed

    def refuse_if_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise CallCancelled

    def tag(self, request: httpx.Request) -> None:
        self.refuse_if_cancelled()
        request.extensions[_CALL_EXTENSION] = self
        request.extensions[_TRACE_EXTENSION] = _Tracer(
            self, request.extensions.get(_TRACE_EXTENSION)
        )

    def traced(self, name: str, info: dict[str, Any]) -> None:
        """An httpcore trace event of one of the call's requests (in the opening thread)."""
        event = name.partition(".")[2]
        if event in _REFUSE_BEFORE:
            self.done_sending()
            self.refuse_if_cancelled()
        elif event in _CONNECTED:
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with self._lock, contextlib.suppress(OSError):
                    self._connecting = sock.dup()
            if self.cancelled.is_set():  # close() may have looked before the socket existed
                self.stop_connecting()

    def stop_connecting(self) -> bool:
        """Shut down the connection being set up for the request, if any (any thread)."""
        with self._lock:
            return _shutdown_socket(self._connecting)

    def done_sending(self) -> None:
        with self._lock:
            connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.close()  # the duplicate only: the connection itself stays open


class _Tracer:
    """The `trace` extension of a tagged request (keeping one that was already set)."""

    def __init__(self, pending: PendingCall, inner: Any) -> None:
        self._pending = pending
        self._inner = inner

    def __call__(self, name: str, info: dict[str, Any]) -> None:
        if self._inner is not None:
            self._inner(name, info)
        self._pending.traced(name, info)


class _RefusingConnection:
    """Handed by `shutdown_pending` to a cancelled call's request queued for a connection: the
    pool wakes the request with it, and it refuses to carry it. Never in the pool's own list."""

    def handle_request(self, request: Any) -> Any:
        raise CallCancelled


_opening: contextvars.ContextVar[PendingCall | None] = contextvars.ContextVar(
    "pantheon_call_opening", default=None
)


@contextlib.contextmanager
def opening(pending: PendingCall) -> Iterator[None]:
    """Within the block, requests sent by this thread are `pending`'s (tagged and traced)."""
    token = _opening.set(pending)
    try:
        yield
    finally:
        _opening.reset(token)
        pending.done_sending()


def tag_request(request: httpx.Request) -> None:
    """httpx request hook: tag the request with the call being opened in this thread — or
    refuse to send it (CallCancelled) when that call was cancelled."""
    pending = _opening.get()
    if pending is not None:
        pending.tag(request)


def shutdown_pending(client: httpx.Client, pending: PendingCall) -> bool:
    """Stop `pending`'s request before its answer, from any thread: one queued for a free
    connection is woken and refuses to go on; the socket of one being connected (TLS handshake)
    or sent and waiting for its answer is shut down. False when there is nothing to stop yet
    (not in the pool yet, or its TCP connect still running — the request hook and the trace
    refuse those once the call is cancelled) or any more (answered, or failed).

    Reads httpcore's pool (httpcore 1.0: `_requests`, each with `request` and `connection`,
    whose `_connection._network_stream` is the socket's stream, assigned under
    `_optional_thread_lock`); a test fails if an upgrade moves them."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    for pool_request in list(getattr(pool, "_requests", None) or ()):
        if pool_request.request.extensions.get(_CALL_EXTENSION) is not pending:
            continue
        lock = getattr(pool, "_optional_thread_lock", None)
        if pool_request.connection is None and lock is not None:
            with lock:  # the pool assigns connections under this lock
                if pool_request.connection is None:
                    pool_request.assign_to_connection(_RefusingConnection())
                    return True
        connection = getattr(pool_request.connection, "_connection", None)
        if _shutdown(getattr(connection, "_network_stream", None)):
            return True
        break
    return pending.stop_connecting()


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


class ToolCallAssembler:
    """Complete tool calls from a stream's `delta.tool_calls` pieces.

    Each piece has an `index` tying it to one call; the `id` and `function.name` usually come in
    the call's first piece and `function.arguments` in several (pieces of several calls may
    interleave). Lenient where providers differ: a piece without `index` takes its position in
    the list; an `id` or `name` repeated in later pieces is not duplicated; a *different* id with
    a name at an index already in use starts a new call (Ollama numbers every parallel call 0).
    Strict where the answer would be unusable: a piece that is not an object, or an
    id/name/arguments that is not text, raises ValueError; a call without a name fails
    `calls()`."""

    def __init__(self) -> None:
        self._slots: list[dict[str, Any]] = []  # in order of first appearance
        self._by_index: dict[int, dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._slots)

    def add(self, pieces: Any) -> None:
        """Take one delta's `tool_calls` list."""
        if pieces is None:
            return
        if not isinstance(pieces, list):
            raise ValueError("a delta's tool_calls is not a list")
        for position, piece in enumerate(pieces):
            if not isinstance(piece, dict):
                raise ValueError("a tool-call delta is not an object")
            index = piece.get("index", position)
            if not isinstance(index, int) or isinstance(index, bool):
                raise ValueError("a tool-call delta's index is not an integer")
            function = piece.get("function") or {}
            if not isinstance(function, dict):
                raise ValueError("a tool-call delta's function is not an object")
            call_id, name = _text_or_none(piece, "id"), _text_or_none(function, "name")
            arguments = _text_or_none(function, "arguments")
            slot = self._by_index.get(index)
            # A new id *with a name* at a used index is another call (Ollama); a new id alone is
            # the same call (LM Studio and others send a fresh id with every piece).
            fresh = call_id and name and slot is not None and slot["name"] and slot["id"]
            if slot is None or (fresh and call_id != slot["id"]):
                slot = {"id": "", "name": "", "arguments": []}
                self._slots.append(slot)
                self._by_index[index] = slot
            if call_id and not slot["id"]:
                slot["id"] = call_id
            if name and name != slot["name"]:
                slot["name"] += name
            if arguments:
                slot["arguments"].append(arguments)

    def text(self) -> str:
        """What the calls so far amount to as text (names and arguments), for token estimates."""
        return "".join(slot["name"] + "".join(slot["arguments"]) for slot in self._slots)

    def calls(self) -> tuple[ToolCall, ...]:
        """The complete calls. ValueError when one has no name. A call without an id gets
        `call_<n>`; one without arguments gets `{}`."""
        calls = []
        for n, slot in enumerate(self._slots):
            if not slot["name"]:
                raise ValueError(f"tool call {n} has no function name")
            calls.append(
                ToolCall(
                    id=slot["id"] or f"call_{n}",
                    name=slot["name"],
                    arguments="".join(slot["arguments"]) or "{}",
                )
            )
        return tuple(calls)


def _text_or_none(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"a tool-call delta's {name} is not text")
    return value


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
