"""A stub OpenAI-compatible LLM server for tests and benchmarks.

`POST /v1/chat/completions` (and `/chat/completions`) on 127.0.0.1, a free port, answering at
once: a JSON chat completion, or Server-Sent Events when the request says `stream: true`, with a
`usage` block. By default the reply is `stub reply to: <first 40 chars of the last user
message>`; a request with a `json_schema` response format gets a schema-valid object instead
(built by `llm.json_schema.schema_example`, preferring the `@handles` the last user message
mentions).

Scripted replies (FIFO, optionally keyed by model id) drive the failure cases::

    stub.enqueue(StubReply(status=429, headers={"Retry-After": "0"}))
    stub.enqueue(StubReply(text="hello", chunk_delay=0.2))
    stub.enqueue(StubReply(hang=True), model="openai/gpt-4o")   # only calls to that model
    stub.enqueue(tool_calls=[{"name": "calculator", "arguments": {"expression": "6*7"}}])

Every request is recorded (`stub.requests`), and so is a streaming client that went away
mid-answer (`stub.disconnects`, `StubRequest.disconnected`). The recorded body holds what the
client sent, `tools` and `messages` (with their `tool_calls` / `tool_call_id`) included.

Tool calls are streamed as OpenAI streams them: for each call, a first delta with its `index`,
`id`, `type` and `function.name` (arguments `""`), then its arguments in two or more pieces; then
`finish_reason: "tool_calls"` and the usage block. Non-streamed answers carry them in
`message.tool_calls`.

In tests, use the `llm_stub` fixture: it points the default provider at the stub (settings
`OPENROUTER_BASE_URL` / `OPENROUTER_API_KEY`, short timeouts) and resets the script between
tests. For benchmarks: `python -m testing.stub_llm --port 9999`.
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import json
import re
import select
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llm.json_schema import schema_example

try:  # the fixture is only defined where pytest is installed (not needed for benchmarks)
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

COMPLETION_PATHS = ("/v1/chat/completions", "/chat/completions")
_MENTION = re.compile(r"(?<![\w.@])@([A-Za-z][A-Za-z0-9_-]{0,31})")
_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class StubReply:
    """One scripted answer.

    text / json: the reply (json is sent as its JSON text); neither → the default reply.
    status, headers, error: a non-200 answer with an OpenAI-style error body.
    delay: seconds before answering. chunk_delay: seconds between SSE chunks.
    hang: never answer (until the client goes away, the stub is reset, or it stops).
    malformed: an invalid JSON body, or garbage SSE data.
    cut_after_chunks: close the connection after that many text deltas (no usage, no [DONE]).
    stream_error: after the text deltas, an in-stream error event (as OpenRouter sends) and the
    end of the stream.
    usage: overrides of prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,
    reasoning_tokens. no_usage: a stream without its usage block.
    tool_calls: the tools the answer calls, each `{"name", "arguments", "id"?}` (arguments a
    dict, sent as its JSON, or raw text; the id defaults to `call_stub_<n>`, n counting the
    calls since the last reset; no name → a malformed call). With tool calls the text defaults
    to none, after any `text`. interleave_tool_calls: stream the calls' pieces round-robin
    instead of one call after the other.
    finish_reason: default "tool_calls" with tool calls, else "stop".
    """

    text: str | None = None
    json: dict[str, Any] | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    hang: bool = False
    malformed: bool = False
    cut_after_chunks: int | None = None
    stream_error: str | None = None
    usage: dict[str, int] | None = None
    no_usage: bool = False
    finish_reason: str | None = None
    id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    interleave_tool_calls: bool = False


@dataclass
class StubRequest:
    """One request the stub received."""

    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any
    model: str | None
    stream: bool
    client_port: int  # the same port on two requests = one kept-alive connection
    disconnected: bool = False


class LlmStub:
    """The stub server. `start()` it (or use `shared_stub()` / the `llm_stub` fixture)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._queue: deque[StubReply] = deque()
        self._by_model: dict[str, deque[StubReply]] = {}
        self._requests: list[StubRequest] = []
        self._disconnects = 0
        self._generation = 0  # bumped by reset(): releases hung answers of an earlier test
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._call_ids = itertools.count(1)  # tool-call ids, from 1 after each reset
        # Generation ids unique across stub runs too, as a provider's are: a database that
        # outlives one stub (the bench's, a profile's) never sees an id twice.
        self._run = uuid.uuid4().hex[:8]
        self._server: _StubHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Detail buckets put in every usage block unless a reply overrides them.
        self.usage_defaults: dict[str, int] = {}

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> LlmStub:
        server = _StubHTTPServer((self._host, self._port), _Handler)
        server.stub = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the stub is not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (`http://127.0.0.1:PORT/v1`)."""
        return f"http://{self._host}:{self.port}/v1"

    # --- script and records -----------------------------------------------------------------

    def enqueue(
        self,
        reply: StubReply | None = None,
        *,
        model: str | None = None,
        times: int = 1,
        **fields: Any,
    ) -> None:
        """Script the next answer(s): a StubReply, or its fields as keywords. With `model`,
        only a request for that model id takes it. `times` repeats it."""
        reply = replace(reply, **fields) if reply is not None else StubReply(**fields)
        with self._lock:
            queue = self._queue if model is None else self._by_model.setdefault(model, deque())
            queue.extend([reply] * times)

    def reset(self) -> None:
        """Forget the script and the records; release any answer still hanging."""
        with self._lock:
            self._queue.clear()
            self._by_model.clear()
            self._requests.clear()
            self._disconnects = 0
            self._generation += 1
            self._call_ids = itertools.count(1)
            self.usage_defaults = {}

    @property
    def requests(self) -> list[StubRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def disconnects(self) -> int:
        """How many clients went away before their answer was complete."""
        with self._lock:
            return self._disconnects

    @property
    def pending(self) -> int:
        """Scripted replies not yet used."""
        with self._lock:
            return len(self._queue) + sum(len(q) for q in self._by_model.values())

    def _record(self, request: StubRequest) -> int:
        with self._lock:
            self._requests.append(request)
            return self._generation

    def _mark_disconnected(self, request: StubRequest) -> None:
        with self._lock:
            if not request.disconnected:
                request.disconnected = True
                self._disconnects += 1

    def _next_reply(self, model: str | None) -> StubReply | None:
        with self._lock:
            keyed = self._by_model.get(model or "")
            if keyed:
                return keyed.popleft()
            return self._queue.popleft() if self._queue else None

    def _released(self, generation: int) -> bool:
        return self._stopping.is_set() or self._generation != generation

    def _next_id(self) -> str:
        return f"gen-stub-{self._run}-{next(self._ids)}"

    def _next_call_id(self) -> str:
        with self._lock:
            return f"call_stub_{next(self._call_ids)}"


class _StubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    stub: LlmStub


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def _approx_tokens(text: str) -> int:
    # Deliberately not our tokenizer: cheap, and distinguishable from the gateway's estimates.
    return (len(text) + 3) // 4


def _pieces(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text) or ([text] if text else [])


def _argument_pieces(arguments: str) -> list[str]:
    """`arguments` in two or more pieces (about three), as a provider streams them."""
    if len(arguments) < 2:
        return [arguments] if arguments else []
    size = max(1, -(-len(arguments) // 3))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


def _tool_call_deltas(calls: list[dict[str, Any]], interleave: bool) -> list[dict[str, Any]]:
    """The `delta.tool_calls` entries that stream `calls`: per call, its head (index, id, type,
    name) then its argument pieces; call after call, or round-robin when `interleave`."""
    per_call: list[list[dict[str, Any]]] = []
    for index, call in enumerate(calls):
        function: dict[str, Any] = {"arguments": ""}
        if call["name"] is not None:
            function = {"name": call["name"], **function}
        head = {"index": index, "id": call["id"], "type": "function", "function": function}
        tail = [
            {"index": index, "function": {"arguments": piece}}
            for piece in _argument_pieces(call["arguments"])
        ]
        per_call.append([head, *tail])
    if not interleave:
        return [delta for deltas in per_call for delta in deltas]
    rounds = itertools.zip_longest(*per_call)
    return [delta for deltas in rounds for delta in deltas if delta is not None]


def _wire_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`calls` as a non-streamed message's `tool_calls`."""
    wired = []
    for call in calls:
        function: dict[str, Any] = {"arguments": call["arguments"]}
        if call["name"] is not None:
            function["name"] = call["name"]
        wired.append({"id": call["id"], "type": "function", "function": function})
    return wired


def _finish_reason(reply: StubReply, calls: list[dict[str, Any]]) -> str:
    return reply.finish_reason or ("tool_calls" if calls else "stop")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Each SSE chunk is its own small write: without TCP_NODELAY, Nagle holds the next one back
    # until the client's delayed ACK (~40 ms) on a kept-alive connection.
    disable_nagle_algorithm = True
    server: _StubHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and benchmarks read the records, not a log

    def do_GET(self) -> None:
        self._send_json(404, {"error": {"message": "not found", "type": "not_found"}})

    def do_POST(self) -> None:
        stub = self.server.stub
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path not in COMPLETION_PATHS:
            self._send_json(404, {"error": {"message": "not found", "type": "not_found"}})
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._send_json(400, {"error": {"message": "invalid JSON body", "type": "bad_request"}})
            return
        record = StubRequest(
            path=path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            model=body.get("model"),
            stream=bool(body.get("stream")),
            client_port=self.client_address[1],
        )
        generation = stub._record(record)
        reply = stub._next_reply(record.model) or StubReply()
        self._answer(stub, record, reply, generation)

    # --- answering ---------------------------------------------------------------------------

    def _answer(
        self, stub: LlmStub, record: StubRequest, reply: StubReply, generation: int
    ) -> None:
        if reply.hang:
            self._wait(stub, generation, None, record)
            self.close_connection = True
            return
        if reply.delay and self._wait(stub, generation, reply.delay, record):
            self.close_connection = True
            return
        if reply.status != 200:
            message = reply.error or f"stub error {reply.status}"
            error = {"error": {"message": message, "type": "stub_error", "code": reply.status}}
            self._send_json(reply.status, error, reply.headers)
            return
        text = self._reply_text(record.body, reply)
        calls = self._tool_calls(stub, reply)
        if record.stream:
            self._stream(stub, record, reply, text, calls, generation)
        elif reply.malformed:
            self._send_raw(200, b'{"id": "broken', "application/json", reply.headers)
        else:
            completion = self._completion(stub, record.body, reply, text, calls)
            self._send_json(200, completion, reply.headers)

    def _tool_calls(self, stub: LlmStub, reply: StubReply) -> list[dict[str, Any]]:
        """The reply's tool calls with their ids and arguments as text."""
        calls = []
        for call in reply.tool_calls or ():
            arguments = call.get("arguments", {})
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            call_id = call.get("id") or stub._next_call_id()
            calls.append({"id": call_id, "name": call.get("name"), "arguments": arguments})
        return calls

    def _reply_text(self, body: dict[str, Any], reply: StubReply) -> str:
        if reply.text is not None:
            return reply.text
        if reply.json is not None:
            return json.dumps(reply.json)
        if reply.tool_calls:
            return ""
        last = _last_user_text(body)
        response_format = body.get("response_format") or {}
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
            prefer = [handle.lower() for handle in _MENTION.findall(last)]
            return json.dumps(schema_example(schema, text="stub", prefer=prefer))
        return f"stub reply to: {last[:40]}"

    def _usage(
        self,
        stub: LlmStub,
        body: dict[str, Any],
        reply: StubReply,
        text: str,
        calls: list[dict[str, Any]] | None = None,
    ) -> dict:
        messages = body.get("messages") or []
        prompt_text = "".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
        prompt_text += "".join(
            json.dumps(m["tool_calls"])
            for m in messages
            if isinstance(m, dict) and m.get("tool_calls")
        )
        if body.get("tools"):
            prompt_text += json.dumps(body["tools"])
        called = "".join(str(call["name"] or "") + call["arguments"] for call in calls or ())
        figures = {
            "prompt_tokens": _approx_tokens(prompt_text) + 4 * len(messages) + 3,
            "completion_tokens": _approx_tokens(text + called),
            "cached_tokens": 0,
            "cache_write_tokens": 0,
            "reasoning_tokens": 0,
            **stub.usage_defaults,
            **(reply.usage or {}),
        }
        return {
            "prompt_tokens": figures["prompt_tokens"],
            "completion_tokens": figures["completion_tokens"],
            "total_tokens": figures["prompt_tokens"] + figures["completion_tokens"],
            "prompt_tokens_details": {
                "cached_tokens": figures["cached_tokens"],
                "cache_write_tokens": figures["cache_write_tokens"],
            },
            "completion_tokens_details": {"reasoning_tokens": figures["reasoning_tokens"]},
        }

    def _completion(
        self,
        stub: LlmStub,
        body: dict[str, Any],
        reply: StubReply,
        text: str,
        calls: list[dict[str, Any]],
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message = {
                "role": "assistant",
                "content": text or None,
                "tool_calls": _wire_tool_calls(calls),
            }
        return {
            "id": reply.id or stub._next_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": _finish_reason(reply, calls)}
            ],
            "usage": self._usage(stub, body, reply, text, calls),
        }

    def _stream(
        self,
        stub: LlmStub,
        record: StubRequest,
        reply: StubReply,
        text: str,
        calls: list[dict[str, Any]],
        generation: int,
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            if reply.malformed:
                self._chunk(b"data: {this is not json\n\n")
                self._chunk(b"")
                return
            self._chunk(b": stub processing\n\n")  # an SSE comment, like OpenRouter's keep-alives
            for n, event in enumerate(self._events(stub, record.body, reply, text, calls)):
                if event is None:  # the cut: drop the connection without finishing the body
                    self.close_connection = True
                    return
                if (
                    n
                    and reply.chunk_delay
                    and self._wait(stub, generation, reply.chunk_delay, record)
                ):
                    self.close_connection = True
                    return
                self._chunk(event)
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            stub._mark_disconnected(record)
            self.close_connection = True

    def _events(
        self,
        stub: LlmStub,
        body: dict[str, Any],
        reply: StubReply,
        text: str,
        calls: list[dict[str, Any]],
    ) -> Iterator[bytes | None]:
        base = {
            "id": reply.id or stub._next_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model"),
        }

        def event(payload: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps({**base, **payload}).encode() + b"\n\n"

        yield event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        for sent, piece in enumerate(_pieces(text)):
            if reply.cut_after_chunks is not None and sent >= reply.cut_after_chunks:
                yield None
                return
            yield event({"choices": [{"index": 0, "delta": {"content": piece}}]})
        if reply.cut_after_chunks is not None:
            yield None
            return
        for delta in _tool_call_deltas(calls, reply.interleave_tool_calls):
            yield event({"choices": [{"index": 0, "delta": {"tool_calls": [delta]}}]})
        if reply.stream_error is not None:
            yield event({"error": {"message": reply.stream_error, "code": 502}, "choices": []})
            return
        finish = _finish_reason(reply, calls)
        yield event({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if not reply.no_usage and (body.get("stream_options") or {}).get("include_usage"):
            yield event({"choices": [], "usage": self._usage(stub, body, reply, text, calls)})
        yield b"data: [DONE]\n\n"

    # --- wire helpers ------------------------------------------------------------------------

    def _wait(
        self, stub: LlmStub, generation: int, seconds: float | None, record: StubRequest
    ) -> bool:
        """Wait `seconds` (None: until released). True when the client went away meanwhile."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not stub._released(generation):
            remaining = _POLL_SECONDS if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._client_gone(min(remaining, _POLL_SECONDS)):
                stub._mark_disconnected(record)
                return True
        return True

    def _client_gone(self, timeout: float) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], timeout)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _send_raw(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_json(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self._send_raw(status, json.dumps(body).encode(), "application/json", headers)


# --- shared instance and the pytest fixture ---------------------------------------------------

_shared: LlmStub | None = None
_shared_lock = threading.Lock()


def shared_stub() -> LlmStub:
    """One stub per test process, started on first use, stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LlmStub().start()
            atexit.register(_shared.stop)
        return _shared


if pytest is not None:

    @pytest.fixture
    def llm_stub(settings: Any) -> Iterator[LlmStub]:
        """The shared stub, reset, with the default provider pointed at it (short timeouts)."""
        from llm.providers import clear_client_cache

        stub = shared_stub()
        stub.reset()
        settings.OPENROUTER_BASE_URL = stub.url
        settings.OPENROUTER_API_KEY = "sk-test"
        settings.LLM_CONNECT_TIMEOUT_SECONDS = 1.0
        settings.LLM_READ_TIMEOUT_SECONDS = 2.0
        settings.LLM_MAX_RETRIES = 2
        settings.LLM_RETRY_MAX_WAIT_SECONDS = 2.0
        clear_client_cache()
        yield stub
        stub.reset()
        clear_client_cache()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Stub OpenAI-compatible LLM server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    args = parser.parse_args(argv)
    stub = LlmStub(host=args.host, port=args.port).start()
    print(f"stub LLM serving on {stub.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stub.stop()


if __name__ == "__main__":
    main()
