"""The tool rounds of an agent's reply (product.md, "Agent tools"): what the agent offers the
model, running the calls the model asks for — outside any database transaction, each bounded
by `TOOL_TIMEOUT_SECONDS`, a failure given back to the model as an error result — and what the
next call of the reply is told. The model calls themselves go through the same stages as every
call of a turn (execution.speak): budget, reservation, audit, metering."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llm.gateway import ChatMessage, ToolCall
from llm.tools.registry import ToolContext, ToolResult, openai_tools, tool_run
from rooms.models import Agent
from sessions.models import Message, Session, Turn
from sessions.models import ToolCall as ToolCallRow
from sessions.services.turns.observers import TurnObserver, release_connection_during_call

# Arguments are stored as the model sent them, up to this size (a hostile model cannot bloat
# the table); results are already cut to TOOL_RESULT_MAX_CHARS by the registry.
ARGUMENTS_MAX_CHARS = 20_000
# Calls one answer may have run: a model that asks for more gets an error result for the rest
# (each call still needs its result), so a reply's duration stays bounded.
CALLS_PER_ROUND_MAX = 16


@dataclass(frozen=True)
class ToolRun:
    """One tool call of a reply and how it ended."""

    round: int
    call: ToolCall
    result: ToolResult


def tool_context(session: Session, user_id: Any) -> ToolContext:
    return ToolContext(user_id=user_id, session_id=session.id, room_id=session.room_id)


def offered(agent: Agent, context: ToolContext) -> tuple[dict[str, Any], ...]:
    """The agent's tools in the OpenAI format (none for an agent without tools: no work)."""
    if not agent.tools:
        return ()
    return tuple(openai_tools(agent.tools, context))


def run_round(
    calls: tuple[ToolCall, ...],
    *,
    round_number: int,
    agent: Agent,
    context: ToolContext,
    observer: TurnObserver,
) -> list[ToolRun]:
    """Run the calls the model asked for, in order, until a cancel: each call's start and end
    go to the observer. Never raises for a tool's failure (the registry turns it into an error
    result)."""
    runs: list[ToolRun] = []
    # A tool may take seconds: this thread's database connection goes back to the pool meanwhile.
    release_connection_during_call()
    allowed = set(agent.tools or ())
    for index, call in enumerate(calls):
        if observer.cancelled():
            break
        observer.tool_started(agent, call)
        if call.name not in allowed:
            # Only the agent's own tools run, whatever a model (or text injected into its
            # prompt) asks for.
            result = _refused(f"Tool {call.name[:64]!r} is not available to this agent.")
        elif index >= CALLS_PER_ROUND_MAX:
            result = _refused(
                f"Too many tool calls in one answer: at most {CALLS_PER_ROUND_MAX} run."
            )
        else:
            result = tool_run(call.name, call.arguments, context)
        observer.tool_completed(agent, call, result)
        runs.append(ToolRun(round=round_number, call=call, result=result))
    return runs


def _refused(error: str) -> ToolResult:
    return ToolResult(status="error", content="", latency_ms=0, error=error)


def result_text(result: ToolResult) -> str:
    """What the model is told of a call: its result, or why there is none."""
    if result.status == "ok":
        return result.content
    reason = result.error or (
        "the tool did not answer in time" if result.status == "timeout" else ""
    )
    return json.dumps({"error": reason or result.status})


def exchange(text: str, calls: tuple[ToolCall, ...], runs: list[ToolRun]) -> list[ChatMessage]:
    """The messages the next call of the reply adds: what the model said with its calls, then
    one result per call (a call a cancel kept from running is never sent: the reply stops)."""
    messages = [ChatMessage(role="assistant", content=text, tool_calls=calls)]
    messages += [
        ChatMessage(role="tool", content=result_text(run.result), tool_call_id=run.call.id)
        for run in runs
    ]
    return messages


def tool_call_rows(turn: Turn, message: Message, agent: Agent, runs: list[ToolRun]) -> list[Any]:
    """The stored tool calls of a reply, unsaved."""
    return [
        ToolCallRow(
            turn=turn,
            message=message,
            agent=agent,
            round=run.round,
            call_id=run.call.id[:255],
            name=run.call.name[:128],
            arguments=run.call.arguments[:ARGUMENTS_MAX_CHARS],
            status=run.result.status,
            result=run.result.content if run.result.status == "ok" else "",
            error=run.result.error[:500],
            latency_ms=max(0, run.result.latency_ms),
        )
        for run in runs
    ]


def tool_calls_write(turn: Turn, message: Message, agent: Agent, runs: list[ToolRun]) -> list[Any]:
    """Store a reply's tool calls (one statement; none when the reply called no tool)."""
    if not runs:
        return []
    return ToolCallRow.objects.bulk_create(tool_call_rows(turn, message, agent, runs))
