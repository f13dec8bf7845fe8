"""Test builders for usage: funded users, reservations and recorded calls, made through the real
services."""

from __future__ import annotations

import itertools
from typing import Any

from django.utils import timezone

from usage.models import CreditAccount, LlmCallEvent, Reservation
from usage.services import CallRecord, call_event_record, credits_grant, credits_reserve

_seq = itertools.count(1)

# In the v1 pricing migration. Sonnet 4: $3 in, $15 out, $0.30 cached, $3.75 cache write per 1M
# (the product spec's worked example); GPT-4o mini: $0.15 in, $0.60 out, $0.075 cached.
SONNET = "anthropic/claude-sonnet-4"
MINI = "openai/gpt-4o-mini"

# The worked example: 2,000 uncached + 8,000 cached + 2,000 cache-write input tokens, 600
# visible + 400 reasoning output tokens → $0.0309, 2,060 OE tokens, 3,090,000 micro-credits.
WORKED_EXAMPLE_USAGE = {
    "prompt_tokens": 12_000,
    "completion_tokens": 1_000,
    "cached_tokens": 8_000,
    "cache_write_tokens": 2_000,
    "reasoning_tokens": 400,
}
WORKED_EXAMPLE_MICRO = 3_090_000

# What `reserve` holds by default. Sonnet 4, 1,000 input / 500 output tokens:
# 1,000 x 1.1 x $3.75 + 500 x $15 = 4,125 + 7,500 = 11,625 / 1M USD = 1.1625 credits
SONNET_1000_500 = 1_162_500


def grant(user: Any, micro: int) -> None:
    credits_grant(user=user, amount_micro=micro, idempotency_key=f"test-grant:{next(_seq)}")


def account_of(user: Any) -> CreditAccount:
    return CreditAccount.objects.get(user=user)


def reserve(user: Any, **overrides: Any) -> Reservation:
    """Reserve for one call (by default: Sonnet 4, 1,000 input / 500 output tokens, an agent
    reply); `overrides` are `credits_reserve` arguments."""
    fields: dict[str, Any] = {
        "user": user,
        "model_id": SONNET,
        "estimated_input_tokens": 1_000,
        "output_reserve": 500,
        "purpose": "agent_reply",
    }
    fields.update(overrides)
    return credits_reserve(**fields)


def record(user: Any, *, reservation: Reservation | None = None, **overrides: Any) -> LlmCallEvent:
    """Record one call (by default: the worked example on Sonnet 4, status ok, no
    reservation); `overrides` are `CallRecord` fields."""
    fields: dict[str, Any] = {
        "purpose": "agent_reply",
        "provider": "openrouter",
        "model_id": SONNET,
        "status": "ok",
        "started_at": timezone.now(),
        "latency_ms": 120,
        "time_to_first_token_ms": 40,
        **WORKED_EXAMPLE_USAGE,
        "usage_source": "provider",
        "generation_id": None,
        "idempotency_key": f"test-call:{next(_seq)}",
    }
    fields.update(overrides)
    return call_event_record(user=user, reservation=reservation, call=CallRecord(**fields))
