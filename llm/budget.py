"""Context-budget arithmetic: the summarize → prune → reject cascade of one LLM call.

Pure functions over plain data (no database, no settings): the caller passes the prompt's parts,
the model's figures and the policy, and gets back the prompt to send plus every number the audit
records. Ratios are Decimals so "reaches 70 % of 800" is exactly 560, never 559.999….
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from llm.gateway import ChatMessage

SUMMARY_REQUESTED = "summary_requested"
SUMMARY_USED = "summary_used"
PRUNED = "pruned"
SUMMARY_DROPPED = "summary_dropped"
REJECTED = "rejected"


@dataclass(frozen=True)
class BudgetPolicy:
    """The CONTEXT_* settings."""

    summary_trigger_ratio: Decimal
    prune_trigger_ratio: Decimal
    mandatory_summary_turn: int
    recent_turns_to_keep: int
    default_model_limit: int
    default_max_output_tokens: int


@dataclass(frozen=True)
class HistoryTurn:
    turn_index: int
    messages: Sequence[ChatMessage]


@dataclass(frozen=True)
class PromptParts:
    """A call's prompt in the order it is sent. `system` and `current` are never dropped."""

    system: Sequence[ChatMessage]
    summary: ChatMessage | None
    history: Sequence[HistoryTurn]  # oldest first, all after the summary's boundary
    current: Sequence[ChatMessage]  # this turn's earlier replies, then the user input


@dataclass
class CascadeResult:
    messages: list[ChatMessage]
    model_limit: int
    output_reserve: int
    input_budget: int
    estimated_initial: int
    estimated_after_summarize: int
    estimated_after_prune: int
    estimated_final: int
    actions: list[str] = field(default_factory=list)
    turns_pruned: list[int] = field(default_factory=list)
    summary_requested: bool = False
    summary_used: bool = False
    rejected: bool = False


def model_limit_for(context_window: int | None, policy: BudgetPolicy) -> int:
    return context_window or policy.default_model_limit


def output_reserve_for(
    *, agent_max_output: int | None, model_max_output: int | None, policy: BudgetPolicy
) -> int:
    """The agent's max output, else the default — never above the model's own output limit."""
    reserve = agent_max_output or policy.default_max_output_tokens
    if model_max_output:
        reserve = min(reserve, model_max_output)
    return reserve


def run_cascade(
    parts: PromptParts,
    *,
    model_limit: int,
    output_reserve: int,
    turn_index: int,
    summary_can_be_requested: bool,
    policy: BudgetPolicy,
    message_tokens: Callable[[ChatMessage], int],
    base_tokens: int,
) -> CascadeResult:
    """Budget one call. `message_tokens` counts one message with its overhead; `base_tokens` is
    the per-request overhead. `summary_can_be_requested` is False when a summary is already
    pending or there is nothing old enough to cover."""
    input_budget = model_limit - output_reserve
    sizes = _measure(parts, message_tokens=message_tokens, base_tokens=base_tokens)
    result = CascadeResult(
        messages=[],
        model_limit=model_limit,
        output_reserve=output_reserve,
        input_budget=input_budget,
        estimated_initial=sizes.total,
        estimated_after_summarize=sizes.total,
        estimated_after_prune=sizes.total,
        estimated_final=sizes.total,
    )

    # 1. Summarize: ask the worker for a summary; this call still uses the latest ready one.
    summary_trigger = policy.summary_trigger_ratio * input_budget
    mandatory = _summary_mandatory(turn_index, has_history=bool(parts.history), policy=policy)
    if summary_can_be_requested and (sizes.total >= summary_trigger or mandatory):
        result.summary_requested = True
        result.actions.append(SUMMARY_REQUESTED)

    # 2. Prune: keep the recent window, then drop oldest turns, then the summary.
    history, summary, estimate = _prune(
        parts,
        sizes,
        result,
        trigger=policy.prune_trigger_ratio * input_budget,
        keep=policy.recent_turns_to_keep,
    )
    result.estimated_after_prune = estimate
    if summary is not None:
        result.summary_used = True
        result.actions.insert(0 if not result.summary_requested else 1, SUMMARY_USED)

    # 3. Reject what still does not fit.
    result.estimated_final = estimate
    if estimate > input_budget:
        result.rejected = True
        result.actions.append(REJECTED)

    result.messages = [
        *parts.system,
        *([summary] if summary is not None else []),
        *(m for turn in history for m in turn.messages),
        *parts.current,
    ]
    return result


@dataclass(frozen=True)
class _PromptSizes:
    """The token counts of a prompt's parts, measured once."""

    fixed: int  # the per-request overhead, `system` and `current`: never dropped
    summary: int  # 0 without a summary
    turns: tuple[int, ...]  # each history turn, oldest first

    @property
    def total(self) -> int:
        return self.fixed + self.summary + sum(self.turns)


def _measure(
    parts: PromptParts, *, message_tokens: Callable[[ChatMessage], int], base_tokens: int
) -> _PromptSizes:
    fixed = base_tokens + sum(message_tokens(m) for m in (*parts.system, *parts.current))
    summary = message_tokens(parts.summary) if parts.summary is not None else 0
    turns = tuple(sum(message_tokens(m) for m in turn.messages) for turn in parts.history)
    return _PromptSizes(fixed=fixed, summary=summary, turns=turns)


def _summary_mandatory(turn_index: int, *, has_history: bool, policy: BudgetPolicy) -> bool:
    """Every `mandatory_summary_turn`-th turn asks for a summary whatever the estimate (when
    there is history to cover), so a long session is summarized before it overflows."""
    return (
        policy.mandatory_summary_turn > 0
        and turn_index % policy.mandatory_summary_turn == 0
        and has_history
    )


def _prune(
    parts: PromptParts, sizes: _PromptSizes, result: CascadeResult, *, trigger: Decimal, keep: int
) -> tuple[list[HistoryTurn], ChatMessage | None, int]:
    """Step 2 of the cascade. Once the estimate reaches `trigger`: drop history turns oldest
    first — every turn beyond the `keep` most recent, then more while the estimate still reaches
    the trigger — and then the summary. Records what it dropped in `result`; returns the history
    and summary kept and the new estimate."""
    history, summary, estimate = list(parts.history), parts.summary, sizes.total
    if estimate < trigger:
        return history, summary, estimate
    turn_tokens = list(sizes.turns)
    while history and (len(history) > max(keep, 0) or estimate >= trigger):
        result.turns_pruned.append(history.pop(0).turn_index)
        estimate -= turn_tokens.pop(0)
    if result.turns_pruned:
        result.actions.append(PRUNED)
    if summary is not None and estimate >= trigger:
        summary = None
        estimate -= sizes.summary
        result.actions.append(SUMMARY_DROPPED)
    return history, summary, estimate
