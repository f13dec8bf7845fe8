"""How a renderer follows a running turn, and how a turn is stopped. The JSON answer needs
nothing but the end; the event stream (sessions/api/streaming.py) implements `TurnObserver` to
send each step as it happens. Hooks are called in the thread that runs the turn, outside any
database transaction; `cancel()` may come from any thread (a client that went away, a cancel
asked for through the API and seen by the cancel watch)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from django.db import connection

from llm.gateway import ToolCall
from llm.tools.registry import ToolResult
from rooms.models import Agent
from sessions.models import Message, Turn
from usage.models import LlmCallEvent


class TurnObserver(Protocol):
    def turn_started(self, turn: Turn) -> None: ...
    # Right before each provider call (routing, re-prompt, reply).
    def call_starting(self) -> None: ...
    # The in-flight call's `close` (None once it ended): cancelling closes the upstream at once.
    def call_opened(self, close: Callable[[], None] | None) -> None: ...
    def agent_started(self, agent: Agent) -> None: ...
    def agent_delta(self, agent: Agent, text: str) -> None: ...
    def routed(self, turn: Turn) -> None: ...
    def agent_finished(
        self, agent: Agent, message: Message, event: LlmCallEvent | None
    ) -> None: ...
    # Around each tool call of an agent's reply (outside any transaction).
    def tool_started(self, agent: Agent, call: ToolCall) -> None: ...
    def tool_completed(self, agent: Agent, call: ToolCall, result: ToolResult) -> None: ...
    def cancelled(self) -> bool: ...
    def cancel(self) -> None: ...


class CallControl:
    """Whether the turn was asked to stop, and the close of the call in flight: `cancel()` from
    any thread marks the turn cancelled and closes that call at once (the provider stops, even
    one that has not answered yet); the pipeline then keeps what was produced and runs no later
    speaker."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._close_call: Callable[[], None] | None = None
        self._control_lock = threading.Lock()

    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def call_opened(self, close: Callable[[], None] | None) -> None:
        with self._control_lock:
            self._close_call = close
        if close is not None and self._cancelled.is_set():
            close()

    def cancel(self) -> None:
        self._cancelled.set()
        with self._control_lock:
            close = self._close_call
        if close is not None:
            close()


class NullObserver(CallControl):
    """The JSON answer's observer: it hands the database connection back during calls, and can
    be cancelled."""

    def turn_started(self, turn: Turn) -> None:
        pass

    def call_starting(self) -> None:
        release_connection_during_call()

    def agent_started(self, agent: Agent) -> None:
        pass

    def agent_delta(self, agent: Agent, text: str) -> None:
        pass

    def routed(self, turn: Turn) -> None:
        pass

    def agent_finished(self, agent: Agent, message: Message, event: LlmCallEvent | None) -> None:
        pass

    def tool_started(self, agent: Agent, call: ToolCall) -> None:
        pass

    def tool_completed(self, agent: Agent, call: ToolCall, result: ToolResult) -> None:
        pass


def release_connection_during_call() -> None:
    """A provider call lasts seconds: give this thread's database connection back (to the pool)
    meanwhile, so slow providers never starve other requests of connections."""
    if not connection.in_atomic_block:
        connection.close()
