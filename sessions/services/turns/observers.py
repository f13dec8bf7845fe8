"""How a renderer follows a running turn. The JSON answer needs nothing but the end; the event
stream (sessions/api/streaming.py) implements `TurnObserver` to send each step as it happens.
Hooks are called in the thread that runs the turn, outside any database transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from django.db import connection

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
    def cancelled(self) -> bool: ...


class NullObserver:
    """The JSON answer's observer: it only hands the database connection back during calls."""

    def turn_started(self, turn: Turn) -> None:
        pass

    def call_starting(self) -> None:
        release_connection_during_call()

    def call_opened(self, close: Callable[[], None] | None) -> None:
        pass

    def agent_started(self, agent: Agent) -> None:
        pass

    def agent_delta(self, agent: Agent, text: str) -> None:
        pass

    def routed(self, turn: Turn) -> None:
        pass

    def agent_finished(self, agent: Agent, message: Message, event: LlmCallEvent | None) -> None:
        pass

    def cancelled(self) -> bool:
        return False


def release_connection_during_call() -> None:
    """A provider call lasts seconds: give this thread's database connection back (to the pool)
    meanwhile, so slow providers never starve other requests of connections."""
    if not connection.in_atomic_block:
        connection.close()
