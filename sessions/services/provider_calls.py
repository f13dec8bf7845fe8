"""One provider call as the pipeline and the summarizer make it: the gateway stream consumed
(outside any transaction), its outcome as plain data, and the metered call event written from
it (inside the caller's transaction)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from django.utils import timezone

from llm import tokenizer
from llm.gateway import GatewayError, GatewayRequest, TokenUsage, ToolCall
from llm.models import ModelConfig
from llm.providers import gateway_for_model
from pantheon.api.logging import current_request_id
from pantheon.db import refuse_network_call_in_transaction
from usage.services import CallRecord

logger = logging.getLogger("pantheon.provider")

ERROR_CODES = {
    "timeout": "llm_timeout",
    "rate_limited": "llm_rate_limited",
    "provider_error": "llm_provider_error",
    "invalid_response": "llm_invalid_response",
    "cancelled": "interrupted",
}


@dataclass(frozen=True)
class CallOutcome:
    """What one provider call produced, before anything is written."""

    provider: str
    started_at: datetime
    text: str = ""
    parsed: dict[str, Any] | None = None
    status: str = "ok"  # ok | error | timeout | cancelled
    error_code: str = ""
    error_message: str = ""
    usage: TokenUsage = field(default_factory=lambda: TokenUsage(source="provider"))
    generation_id: str | None = None
    latency_ms: int = 0
    ttft_ms: int | None = None
    # False when the provider could not be used at all (disabled, its key unreadable): no
    # request was sent, so there is nothing to record or bill.
    reached: bool = True
    # The tools the model asked to call (its answer is then these calls, not a reply yet).
    tool_calls: tuple[ToolCall, ...] = ()


def provider_call(
    model: ModelConfig,
    request: GatewayRequest,
    *,
    estimated_prompt_tokens: int,
    on_delta: Callable[[str], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    on_open: Callable[[Callable[[], None] | None], None] | None = None,
) -> CallOutcome:
    """Call the provider and describe what happened. Refuses to run inside a database
    transaction (NetworkCallInTransaction): it would hold locks and a connection for seconds.

    `on_open` receives the stream's `close` while the call is in flight (and None after), so
    another thread can cancel it at once: the upstream connection is closed, the provider stops.
    A provider that cannot be used (disabled, its key unreadable) is an outcome too, with
    `reached` false: the caller fails that speaker like any provider failure, billing nothing."""
    refuse_network_call_in_transaction(f"a call to {model.id}")
    started_at, started = timezone.now(), time.monotonic()
    try:
        gateway = gateway_for_model(model)
    except GatewayError as exc:
        provider = model.provider.name if model.provider_id else "default"
        return _logged(model, _failed(exc, provider=provider, started_at=started_at, reached=False))
    stream = gateway.stream(request)
    if on_open is not None:
        on_open(stream.close)
    try:
        outcome = _consume(
            stream,
            provider=gateway.provider.name,
            started_at=started_at,
            on_delta=on_delta,
            cancelled=cancelled,
        )
    finally:
        stream.close()
        if on_open is not None:
            on_open(None)
    if outcome.status == "cancelled":
        outcome = _billed_as_consumed(outcome, estimated_prompt_tokens)
    if not outcome.latency_ms:
        outcome = replace(outcome, latency_ms=int((time.monotonic() - started) * 1000))
    return _logged(model, outcome)


def _consume(
    stream: Any,
    *,
    provider: str,
    started_at: datetime,
    on_delta: Callable[[str], None] | None,
    cancelled: Callable[[], bool] | None,
) -> CallOutcome:
    """Read the gateway's stream to its end (or until `cancelled()`), deltas to `on_delta`."""
    parts: list[str] = []
    try:
        for delta in stream:
            parts.append(delta)
            if on_delta is not None:
                on_delta(delta)
            if cancelled is not None and cancelled():
                stream.close()
                return CallOutcome(
                    provider=provider,
                    started_at=started_at,
                    text="".join(parts),
                    status="cancelled",
                    error_code=ERROR_CODES["cancelled"],
                )
        response = stream.response
    except GatewayError as exc:
        return _failed(exc, provider=provider, started_at=started_at, partial="".join(parts))
    return CallOutcome(
        provider=provider,
        started_at=started_at,
        text=response.text,
        parsed=response.parsed,
        usage=response.usage,
        generation_id=response.generation_id,
        latency_ms=response.latency_ms,
        ttft_ms=response.time_to_first_token_ms,
        tool_calls=response.tool_calls,
    )


def _failed(
    exc: GatewayError,
    *,
    provider: str,
    started_at: datetime,
    partial: str = "",
    reached: bool = True,
) -> CallOutcome:
    return CallOutcome(
        provider=provider,
        started_at=started_at,
        text=partial or exc.partial_text or "",
        status={"cancelled": "cancelled", "timeout": "timeout"}.get(exc.kind, "error"),
        error_code=ERROR_CODES[exc.kind],
        error_message=exc.message,
        # A failed call is billed only for what the provider reports as consumed.
        usage=exc.usage
        if exc.usage and exc.usage.source == "provider"
        else TokenUsage(source="provider"),
        generation_id=exc.generation_id,
        latency_ms=exc.latency_ms or 0,
        ttft_ms=exc.time_to_first_token_ms,
        reached=reached,
    )


def _billed_as_consumed(outcome: CallOutcome, estimated_prompt_tokens: int) -> CallOutcome:
    """A call stopped because the client went away: bill what was consumed, estimated when the
    provider never said."""
    usage = outcome.usage
    if not (usage.prompt_tokens or usage.completion_tokens):
        usage = TokenUsage(
            prompt_tokens=estimated_prompt_tokens,
            completion_tokens=tokenizer.count_tokens(outcome.text),
            source="estimated",
        )
    return replace(outcome, error_code="interrupted", usage=usage)


def _logged(model: ModelConfig, outcome: CallOutcome) -> CallOutcome:
    _log(model, outcome)
    return outcome


def _log(model: ModelConfig, outcome: CallOutcome) -> None:
    """One structured line per provider call: ids and figures, never prompt or reply text."""
    logger.info(
        "provider call",
        extra={
            "request_id": current_request_id(),
            "provider": outcome.provider,
            "model": model.id,
            "status": outcome.status,
            "error_code": outcome.error_code,
            "latency_ms": outcome.latency_ms,
            "ttft_ms": outcome.ttft_ms,
            "prompt_tokens": outcome.usage.prompt_tokens,
            "completion_tokens": outcome.usage.completion_tokens,
            "usage_source": outcome.usage.source,
            "generation_id": outcome.generation_id,
        },
    )


def call_record(
    outcome: CallOutcome,
    *,
    purpose: str,
    model_id: str,
    idempotency_key: str,
    room_id: UUID | None,
    session_id: UUID | None,
    turn_id: UUID | None = None,
    agent_id: UUID | None = None,
    api_key_id: UUID | None = None,
) -> CallRecord:
    """What usage records of a finished call: its outcome and where it happened."""
    usage = outcome.usage
    return CallRecord(
        purpose=purpose,
        provider=outcome.provider,
        model_id=model_id,
        status=outcome.status,
        error_code=outcome.error_code,
        started_at=outcome.started_at,
        latency_ms=outcome.latency_ms,
        time_to_first_token_ms=outcome.ttft_ms,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        usage_source=usage.source,
        generation_id=outcome.generation_id,
        idempotency_key=idempotency_key,
        room_id=room_id,
        session_id=session_id,
        turn_id=turn_id,
        agent_id=agent_id,
        api_key_id=api_key_id,
    )
