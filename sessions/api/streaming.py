"""Server-Sent Events for `POST /sessions/{session_id}/turns` with `Accept: text/event-stream`.

A renderer over the turn pipeline, not a second pipeline: the view admits the turn (every
rejection is still an ordinary JSON response), then `turn_execute` runs in a worker thread with a
`TurnStreamObserver` that turns each pipeline step into one SSE event. The events cross to the
event loop through a thread-safe buffer; the response iterates an async generator, so under ASGI
every event is sent as it happens (a sync iterator would be buffered whole) and an open stream
holds no worker thread of the server.

When the client goes away the ASGI handler cancels the generator; the observer then reports
`cancelled()`, so the pipeline closes the provider's stream, stores what was produced as
`interrupted`, runs no later speaker and bills what was consumed. The worker thread is never
joined from the event loop: it finishes its writes on its own.

Served over WSGI (the test client, a sync server) the same events are produced by running the
turn in the request's thread and sent when it ends: correct, just not incremental.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import StreamingHttpResponse
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer

from llm.gateway import ToolCall
from llm.tools.registry import ToolResult
from pantheon.api.exceptions import error_body
from pantheon.api.presence import ClientPresence
from pantheon.api.schema import PantheonAutoSchema
from pantheon.credits import format_credits
from rooms.models import Agent
from sessions.api.serializers import tool_arguments, tool_status, turn_body
from sessions.models import Message, MessageStatus, Turn
from sessions.services.turns import CallControl, TurnObserver, TurnOutcome
from usage.models import LlmCallEvent

logger = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
# Seconds of silence after which a `: keep-alive` comment is sent, so proxies and clients do not
# time an idle stream out while a model thinks. Overridable in settings.
DEFAULT_HEARTBEAT_SECONDS = 10.0
HEARTBEAT = b": keep-alive\n\n"

_END = object()  # the worker thread is done: no more events

EVENT_NAMES = [
    "turn.started",
    "routing",
    "agent.started",
    "agent.delta",
    "agent.completed",
    "agent.failed",
    "turn.completed",
    "error",
]

STREAM_DESCRIPTION = (
    "With `Accept: text/event-stream`: the turn as Server-Sent Events while it runs. Each event "
    "is an `id:` line (counting up from 1), an `event:` line and one single-line JSON `data:` "
    "line, then a blank line: `turn.started` {turn_id, session_id, turn_index, mode}; `routing` "
    "(orchestrator turns, before the first agent) {selected, reason, fallback_used, "
    "fallback_reason}; `agent.started` {agent, agent_id, name}; `agent.delta` {agent, text}; "
    "`agent.completed` and `agent.failed` {agent, message_id, status, error, usage}; "
    "`turn.completed` (the same body as the 201 answer); `error` (the contract's error object) "
    "if the server fails mid-stream. Lines starting with `:` are keep-alive comments sent "
    "during silences. Rejections found before the stream starts are JSON with their status; an "
    "Idempotency-Key replay is the stored JSON answer."
)
# The stream is text, not a JSON document: a schema-driven client reads it as one string (or
# line by line) and parses the events itself. A JSON schema here would make generated clients
# decode the stream as JSON and fail.
STREAM_SCHEMA: dict[str, Any] = {
    "type": "string",
    "description": "Server-Sent Events: " + ", ".join(f"`{name}`" for name in EVENT_NAMES) + ".",
    "example": (
        'id: 1\nevent: turn.started\ndata: {"turn_id": "…", "session_id": "…", '
        '"turn_index": 1, "mode": "manual"}\n\n'
        'id: 2\nevent: agent.started\ndata: {"agent": "ada", "agent_id": "…", "name": "Ada"}\n\n'
        'id: 3\nevent: agent.delta\ndata: {"agent": "ada", "text": "Hello"}\n\n'
        "…\n\n"
        'id: 6\nevent: turn.completed\ndata: {"id": "…", "status": "completed", …}\n\n'
    ),
}


class EventStreamRenderer(BaseRenderer):
    """Lets content negotiation accept `Accept: text/event-stream` on the turn endpoint. The
    stream itself is a StreamingHttpResponse; any DRF Response the view returns (a rejection,
    a replay) is switched to JSON before rendering, so this only renders JSON as a safety net."""

    media_type = EVENT_STREAM
    format = "sse"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: dict[str, Any] | None = None,
    ) -> bytes:
        return JSONRenderer().render(data)


class _NoFormatOverride:
    URL_FORMAT_OVERRIDE = None


class AcceptHeaderNegotiation(DefaultContentNegotiation):
    """Chooses between JSON and the event stream by the `Accept` header alone: DRF's `?format=`
    override would be a second, undocumented switch, able to contradict the header (406)."""

    settings = _NoFormatOverride()


def wants_event_stream(request: Any) -> bool:
    """Whether content negotiation chose the event stream for this request."""
    return isinstance(getattr(request, "accepted_renderer", None), EventStreamRenderer)


def sse_event(event_id: int, name: str, data: Any) -> bytes:
    """One event: an `id:` line, an `event:` line, one single-line JSON `data:` line, a blank
    line. DRF's JSON renderer escapes every line break inside strings, so `data` is one line."""
    payload = JSONRenderer().render(data)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, name.encode(), payload)


def heartbeat_seconds() -> float:
    return float(getattr(settings, "SSE_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS))


class TurnStreamObserver(CallControl):
    """A TurnObserver that renders the pipeline's steps as SSE events for one stream.

    Its hooks run in the thread that executes the turn (where the database may be read); the
    event loop reads the events through `events()`, a WSGI response through `buffered_events()`.
    `cancel()` (from any thread) makes `cancelled()` true.
    """

    def __init__(self, turn: Turn, execute: Callable[[TurnObserver], TurnOutcome]) -> None:
        super().__init__()
        self._turn = turn
        self._execute = execute
        self._lock = threading.Lock()
        self._buffer: deque[Any] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._next_id = 0

    # --- the worker thread ------------------------------------------------------------------

    def start(self) -> None:
        """Run the turn in its own thread. Not a daemon: a shutting-down server still lets it
        finish its writes."""
        # The request's context (its request id for the logs) goes along with the turn.
        context = contextvars.copy_context()
        threading.Thread(
            target=context.run,
            args=(self._run_in_thread,),
            name=f"turn-stream-{self._turn.id}",
            daemon=False,
        ).start()

    def _run_in_thread(self) -> None:
        try:
            self.run()
        finally:
            # This thread's own connection: nothing else will ever close it.
            connection.close()

    def run(self) -> None:
        """Execute the turn here, emitting its events; always ends the stream."""
        try:
            outcome = self._execute(self)
            turn = outcome.turn
            # The same body as the 201 answer (a failed single-speaker turn included: the
            # stream is already 200, its body says `failed`).
            self._emit("turn.completed", turn_body(turn))
        except Exception:
            logger.exception("streamed turn %s failed", self._turn.id)
            self._emit(
                "error",
                error_body("internal_error", "An unexpected error occurred.")["error"],
            )
        finally:
            self._push(_END)

    def _emit(self, name: str, data: Any) -> None:
        # Only the worker thread emits, so ids are sequential in the order of the events.
        self._next_id += 1
        self._push(sse_event(self._next_id, name, data))

    def _push(self, item: Any) -> None:
        with self._lock:
            self._buffer.append(item)
            loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            # A closed loop raises RuntimeError: nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wakeup.set)

    # --- TurnObserver -----------------------------------------------------------------------

    def turn_started(self, turn: Turn) -> None:
        self._emit(
            "turn.started",
            {
                "turn_id": turn.id,
                "session_id": turn.session_id,
                "turn_index": turn.turn_index,
                "mode": turn.mode,
            },
        )

    def routed(self, turn: Turn) -> None:
        self._emit(
            "routing",
            {
                "selected": turn.routing_selected or [],
                "reason": turn.routing_reason,
                "fallback_used": turn.fallback_used,
                "fallback_reason": turn.fallback_reason or None,
            },
        )

    def call_starting(self) -> None:
        # A provider call lasts seconds: meanwhile this thread's database connection goes back
        # (to the pool), so open streams never starve other requests of connections.
        if not connection.in_atomic_block:
            connection.close()

    def agent_started(self, agent: Agent) -> None:
        self._emit(
            "agent.started", {"agent": agent.handle, "agent_id": agent.id, "name": agent.name}
        )

    def agent_delta(self, agent: Agent, text: str) -> None:
        self._emit("agent.delta", {"agent": agent.handle, "text": text})

    def agent_finished(self, agent: Agent, message: Message, event: LlmCallEvent | None) -> None:
        failed = message.status == MessageStatus.ERROR
        self._emit(
            "agent.failed" if failed else "agent.completed",
            {
                "agent": agent.handle,
                "message_id": message.id,
                "status": message.status,
                "error": (
                    {
                        "code": message.error_code,
                        "message": message.error_message or message.error_code,
                    }
                    if message.error_code
                    else None
                ),
                "usage": _call_usage(event),
            },
        )

    def tool_started(self, agent: Agent, call: ToolCall) -> None:
        self._emit(
            "tool.started",
            {
                "agent": agent.handle,
                "id": call.id,
                "name": call.name,
                "arguments": tool_arguments(call.arguments),
            },
        )

    def tool_completed(self, agent: Agent, call: ToolCall, result: ToolResult) -> None:
        self._emit(
            "tool.completed",
            {
                "agent": agent.handle,
                "id": call.id,
                "name": call.name,
                "status": tool_status(result.status),
                "result": result.content if result.status == "ok" else result.error,
            },
        )

    # --- the event loop ---------------------------------------------------------------------

    def _pop(self) -> Any:
        with self._lock:
            return self._buffer.popleft() if self._buffer else None

    async def events(self) -> AsyncIterator[bytes]:
        """The response body: events as they come, a heartbeat comment after each silence of
        `SSE_HEARTBEAT_SECONDS`. Cancelled or closed before the end (the client went away),
        it cancels the turn."""
        wakeup = asyncio.Event()
        with self._lock:
            self._loop, self._wakeup = asyncio.get_running_loop(), wakeup
        interval = heartbeat_seconds()
        finished = False
        try:
            while True:
                item = self._pop()
                if item is None:
                    # Clear, then look again: a push after the clear schedules a new set().
                    wakeup.clear()
                    item = self._pop()
                if item is None:
                    try:
                        await asyncio.wait_for(wakeup.wait(), timeout=interval)
                    except TimeoutError:
                        yield HEARTBEAT
                    continue
                if item is _END:
                    finished = True
                    return
                yield item
        finally:
            if not finished:
                self.cancel()

    def buffered_events(self) -> Iterator[bytes]:
        """The events of a turn already run (`run()`), all at once."""
        while (item := self._pop()) is not None and item is not _END:
            yield item


def _call_usage(event: LlmCallEvent | None) -> dict[str, Any] | None:
    """What the call consumed and burned; None when no call was made (budget, credits)."""
    if event is None:
        return None
    return {
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "oe_tokens": str(event.oe_tokens),
        "credits_burned": format_credits(event.credits_burned),
        "usage_source": event.usage_source,
    }


def served_over_asgi(request: Any) -> bool:
    """Whether this request came through the ASGI handler (a DRF or a Django request)."""
    return isinstance(getattr(request, "_request", request), ASGIRequest)


def turn_stream_response(
    turn: Turn,
    execute: Callable[[TurnObserver], TurnOutcome],
    *,
    incremental: bool,
    presence: ClientPresence | None = None,
) -> StreamingHttpResponse:
    """Answer 200 with the admitted turn's event stream.

    Incremental (under ASGI): the turn starts here in its worker thread — not on first read, so
    a turn is never left running unexecuted — and its events are sent as they happen. Otherwise
    (a WSGI server, the test client) the turn runs in this thread first and its events are sent
    at once: WSGI cannot stream from another thread's work without holding a worker, and a
    worker thread's own database connection would not see this request's transaction.

    `presence` cancels the turn when the client hangs up at any moment — also before the
    response starts, when the stream's body would never be read (and so never closed).
    """
    observer = TurnStreamObserver(turn, execute)
    content: Iterator[bytes] | AsyncIterator[bytes]
    if incremental:
        if presence is not None:
            presence.on_gone(observer.cancel)
        observer.start()
        content = observer.events()
        if not connection.in_atomic_block:
            # This request's thread lives as long as the stream: without this, every open
            # stream would hold two database connections (this idle one and the worker's).
            connection.close()
    else:
        observer.run()
        content = observer.buffered_events()
    response = StreamingHttpResponse(
        content, status=200, content_type=f"{EVENT_STREAM}; charset=utf-8"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through, do not buffer them
    return response


class TurnCreateSchema(PantheonAutoSchema):
    """Responses are JSON unless a view declares another media type for a status explicitly
    (the 200 event stream): an error is never an event stream. The stream is asked for with the
    `Accept` header (`AcceptHeaderNegotiation`), so there is no `?format=` parameter."""

    def _get_format_parameters(self) -> list[dict[str, Any]]:
        return []

    def _get_response_for_code(
        self,
        serializer: Any,
        status_code: str,
        media_types: Any = None,
        direction: str = "response",
    ) -> dict[str, Any]:
        return super()._get_response_for_code(
            serializer,
            status_code,
            media_types or [JSONRenderer.media_type],
            direction,
        )
