"""The cascade's arithmetic with exact numbers (a 1,000-token window, 200-token output reserve:
an 800-token input budget; summary from 560, prune from 720, reject above 800)."""

from __future__ import annotations

from decimal import Decimal

from llm import budget
from llm.gateway import ChatMessage

POLICY = budget.BudgetPolicy(
    summary_trigger_ratio=Decimal("0.70"),
    prune_trigger_ratio=Decimal("0.90"),
    mandatory_summary_turn=8,
    recent_turns_to_keep=4,
    default_model_limit=8192,
    default_max_output_tokens=2048,
)


def tokens_of(message: ChatMessage) -> int:
    # Test tokenizer: a message costs exactly its length in characters.
    return len(message.content)


def msg(n: int, role: str = "user") -> ChatMessage:
    return ChatMessage(role=role, content="x" * n)  # type: ignore[arg-type]


def run(
    *,
    history: list[int],
    current: int,
    summary: int | None = None,
    turn_index: int = 20,
    can_request: bool = True,
) -> budget.CascadeResult:
    parts = budget.PromptParts(
        system=[msg(0, "system")],
        summary=msg(summary, "system") if summary is not None else None,
        history=[
            budget.HistoryTurn(turn_index=i + 1, messages=[msg(size)])
            for i, size in enumerate(history)
        ],
        current=[msg(current)],
    )
    return budget.run_cascade(
        parts,
        model_limit=1000,
        output_reserve=200,
        turn_index=turn_index,
        summary_can_be_requested=can_request,
        policy=POLICY,
        message_tokens=tokens_of,
        base_tokens=0,
    )


def test_input_budget_is_window_minus_reserve() -> None:
    result = run(history=[], current=10)
    assert (result.model_limit, result.output_reserve, result.input_budget) == (1000, 200, 800)


def test_output_reserve_never_above_the_models_limit() -> None:
    assert (
        budget.output_reserve_for(agent_max_output=None, model_max_output=None, policy=POLICY)
        == 2048
    )
    assert (
        budget.output_reserve_for(agent_max_output=None, model_max_output=1024, policy=POLICY)
        == 1024
    )
    assert (
        budget.output_reserve_for(agent_max_output=300, model_max_output=1024, policy=POLICY) == 300
    )
    assert budget.model_limit_for(None, POLICY) == 8192


def test_summary_is_requested_from_560_not_559() -> None:
    below = run(history=[100, 100, 100], current=259, turn_index=5)
    assert below.estimated_initial == 559
    assert below.actions == []
    at = run(history=[100, 100, 100], current=260, turn_index=5)
    assert at.estimated_initial == 560
    assert at.actions == [budget.SUMMARY_REQUESTED]
    assert at.summary_requested and not at.rejected
    assert len(at.messages) == 5  # nothing pruned below 720


def test_no_summary_request_when_one_is_pending() -> None:
    result = run(history=[100, 100, 100], current=300, turn_index=5, can_request=False)
    assert result.actions == []


def test_mandatory_summary_at_multiples_of_eight() -> None:
    for turn_index, expected in (
        (7, []),
        (8, [budget.SUMMARY_REQUESTED]),
        (16, [budget.SUMMARY_REQUESTED]),
    ):
        result = run(history=[10] * 7, current=10, turn_index=turn_index)
        assert result.actions == expected, turn_index
    # Nothing uncovered: no request even at turn 8.
    assert run(history=[], current=10, turn_index=8).actions == []


def test_prune_from_720_keeps_the_last_four_turns() -> None:
    below = run(history=[100] * 6, current=119, can_request=False)
    assert below.estimated_initial == 719 and below.turns_pruned == []
    at = run(history=[100] * 6, current=120, can_request=False)
    assert at.estimated_initial == 720
    assert at.turns_pruned == [1, 2]
    assert at.actions == [budget.PRUNED]
    assert at.estimated_after_prune == 520 and at.estimated_final == 520
    assert [len(m.content) for m in at.messages] == [0, 100, 100, 100, 100, 120]


def test_prune_keeps_dropping_oldest_then_the_summary() -> None:
    result = run(history=[200, 200, 200], current=300, summary=150, can_request=False)
    # 1050 → drop turn 1 (850) → turn 2 (650 < 720): stop, the summary is kept.
    assert result.turns_pruned == [1, 2]
    assert result.estimated_final == 650
    assert result.actions == [budget.SUMMARY_USED, budget.PRUNED]
    heavy = run(history=[100], current=700, summary=100, can_request=False)
    # 900 → drop turn 1 (800) → still ≥ 720 → drop the summary (700).
    assert heavy.actions == [budget.PRUNED, budget.SUMMARY_DROPPED]
    assert heavy.estimated_final == 700 and not heavy.summary_used


def test_reject_only_above_800_after_pruning() -> None:
    fits = run(history=[50], current=800, can_request=False)
    assert fits.estimated_final == 800 and not fits.rejected
    assert fits.turns_pruned == [1]
    over = run(history=[50], current=801, can_request=False)
    assert over.rejected and over.estimated_final == 801
    assert over.actions == [budget.PRUNED, budget.REJECTED]


def test_summary_used_is_recorded_first() -> None:
    result = run(history=[10], current=10, summary=20)
    assert result.actions == [budget.SUMMARY_USED]
    assert result.summary_used
    assert result.messages[1].content == "x" * 20
