"""Building and budgeting a call's prompt. Pure: the data comes in (agent, models, history,
summaries), a budgeted `PreparedCall` comes out; nothing is read or written here.

A prompt is: the system prompt, the latest ready summary (as system context), the history that
summary does not cover, this turn's earlier replies (attributed), the user input. The cascade
(summarize → prune → reject) fits it to the model's window.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.conf import settings

from llm import budget, tokenizer
from llm.gateway import ChatMessage
from llm.models import ModelConfig
from pantheon.errors import ApplicationError
from rooms.models import Agent, Room
from sessions.models import MessageRole, SessionSummary
from sessions.selectors import HistoryMessage
from sessions.services.turns.state import PreparedCall, PromptContext, Reply

# The orchestrator's answer is a short JSON object: handles and a one-line reason.
ROUTING_OUTPUT_TOKENS = 256


def budget_policy() -> budget.BudgetPolicy:
    """The cascade's thresholds, from settings (read per call: a test may change them)."""
    return budget.BudgetPolicy(
        summary_trigger_ratio=Decimal(str(settings.CONTEXT_SUMMARY_TRIGGER_RATIO)),
        prune_trigger_ratio=Decimal(str(settings.CONTEXT_PRUNE_TRIGGER_RATIO)),
        mandatory_summary_turn=settings.CONTEXT_MANDATORY_SUMMARY_TURN,
        recent_turns_to_keep=settings.CONTEXT_RECENT_TURNS_TO_KEEP,
        default_model_limit=settings.CONTEXT_DEFAULT_MODEL_LIMIT,
        default_max_output_tokens=settings.CONTEXT_MAX_OUTPUT_TOKENS,
    )


def summary_message(summary: SessionSummary) -> ChatMessage:
    """A ready summary as system context."""
    lines = [f"Summary of the conversation so far (turns 1-{summary.last_turn_covered}):"]
    lines.append(summary.summary_text)
    for title, items in (
        ("Key facts", summary.key_facts),
        ("Decisions", summary.decisions),
        ("Open questions", summary.open_questions),
        ("Action items", summary.action_items),
    ):
        if items:
            lines.append(f"{title}:")
            lines.extend(f"- {item.get('text', '')}" for item in items)
    return ChatMessage(role="system", content="\n".join(lines))


def render_history(
    agent: Agent | None, history: tuple[HistoryMessage, ...]
) -> list[budget.HistoryTurn]:
    """The uncovered history as chat messages grouped by turn (the unit pruning drops)."""
    turns: dict[int, list[ChatMessage]] = {}
    for item in history:
        turns.setdefault(item.turn_index, []).append(_as_chat(agent, item))
    return [budget.HistoryTurn(turn_index=i, messages=msgs) for i, msgs in turns.items()]


def _as_chat(agent: Agent | None, item: HistoryMessage) -> ChatMessage:
    if item.role == MessageRole.USER:
        return ChatMessage(role="user", content=item.content)
    if agent is not None and item.agent_id == agent.id:
        return ChatMessage(role="assistant", content=item.content)
    # Another agent's words are attributed, so no agent mistakes them for its own.
    return ChatMessage(role="user", content=f"[{item.agent_name}]: {item.content}")


def _budgeted(
    *,
    agent: Agent | None,
    model: ModelConfig,
    purpose: str,
    parts: budget.PromptParts,
    agent_max_output: int | None,
    context: PromptContext,
    tools: tuple[dict[str, Any], ...] = (),
) -> PreparedCall:
    policy = budget_policy()
    summaries = context.summaries
    cover_to = context.turn_index - 1 - policy.recent_turns_to_keep
    cascade = budget.run_cascade(
        parts,
        model_limit=budget.model_limit_for(model.context_window, policy),
        output_reserve=budget.output_reserve_for(
            agent_max_output=agent_max_output,
            model_max_output=model.max_output_tokens,
            policy=policy,
        ),
        turn_index=context.turn_index,
        summary_can_be_requested=summaries.pending is None and cover_to > summaries.boundary,
        policy=policy,
        message_tokens=tokenizer.message_tokens,
        base_tokens=tokenizer.TOKENS_PER_REPLY + tokenizer.count_tools_tokens(tools),
    )
    return PreparedCall(
        agent=agent,
        model=model,
        purpose=purpose,
        cascade=cascade,
        summary=summaries.ready if cascade.summary_used else None,
        summary_cover_to=cover_to if cascade.summary_requested else None,
        tools=tools,
    )


def prepare_call(
    *,
    agent: Agent,
    context: PromptContext,
    earlier: list[Reply],
    tools: Sequence[dict[str, Any]] = (),
    exchange: Sequence[ChatMessage] = (),
) -> PreparedCall:
    """One agent's prompt, budgeted: system prompt, ready summary, uncovered history, this
    turn's earlier replies (attributed), the user input — then, in a tool round, the reply's
    tool calls and their results so far (`exchange`). The `tools` offered count toward the
    budget like the messages; the cascade makes room for both by summarizing and pruning the
    history."""
    system = (
        [ChatMessage(role="system", content=agent.system_prompt)] if agent.system_prompt else []
    )
    current = [
        *(ChatMessage(role="user", content=f"[{r.agent.name}]: {r.content}") for r in earlier),
        ChatMessage(role="user", content=context.user_input),
        *exchange,
    ]
    parts = budget.PromptParts(
        system=system,
        summary=summary_message(context.summaries.ready) if context.summaries.ready else None,
        history=render_history(agent, context.history),
        current=current,
    )
    return _budgeted(
        agent=agent,
        model=agent.model,
        purpose="agent_reply",
        parts=parts,
        agent_max_output=agent.max_output_tokens,
        context=context,
        tools=tuple(tools),
    )


def prepare_routing_call(
    *, room: Room, model: ModelConfig, agents: tuple[Agent, ...], context: PromptContext
) -> PreparedCall:
    """The orchestrator's prompt: who is in the room, the conversation, the user input."""
    roster = "\n".join(
        f"- @{a.handle} ({a.name}): {(a.system_prompt or '').strip()[:200]}" for a in agents
    )
    instructions = (
        "You are the orchestrator of a room of AI agents. Choose which agents should answer the "
        "user's latest message, most relevant first, and give a one-line reason.\n"
        f"{room.manager_instructions.strip()}\n\nAgents in this room:\n{roster}"
    )
    parts = budget.PromptParts(
        system=[ChatMessage(role="system", content=instructions)],
        summary=summary_message(context.summaries.ready) if context.summaries.ready else None,
        history=render_history(None, context.history),
        current=[ChatMessage(role="user", content=context.user_input)],
    )
    return _budgeted(
        agent=None,
        model=model,
        purpose="routing",
        parts=parts,
        agent_max_output=ROUTING_OUTPUT_TOKENS,
        context=context,
    )


def budget_rejection(prepared: PreparedCall) -> ApplicationError:
    """The 422 of a prompt that does not fit, with the figures a client needs."""
    c = prepared.cascade
    who = f"@{prepared.agent.handle}" if prepared.agent else "the orchestrator"
    return ApplicationError(
        f"The prompt for {who} does not fit {prepared.model.id}'s context window.",
        code="context_budget_exceeded",
        details={
            "estimated_tokens": c.estimated_final,
            "input_budget": c.input_budget,
            "model_limit": c.model_limit,
            "model": prepared.model.id,
            "agent": prepared.agent.handle if prepared.agent else None,
        },
    )
