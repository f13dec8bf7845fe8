"""One provider call as the pipeline and the summarizer make it: the gateway stream consumed
(outside any transaction), its outcome as plain data, and the metered call event written from
it (inside the caller's transaction)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from django.utils import timezone

from accounts.models import User
from llm import tokenizer
from llm.gateway import GatewayError, GatewayRequest, TokenUsage
from llm.models import ModelConfig
from llm.providers import gateway_for_model
from pantheon.api.logging import current_request_id
from usage.models import LlmCallEvent, Reservation
from usage.services import call_event_record

logger = logging.getLogger("pantheon.provider")

ERROR_CODES = {
    "timeout": "llm_timeout",
    "rate_limited": "llm_rate_limited",
    "provider_error": "llm_provider_error",
    "invalid_response": "llm_invalid_response",
    "cancelled": "interrupted",
}


@dataclass
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


def provider_call(
    model: ModelConfig,
    request: GatewayRequest,
    *,
    estimated_prompt_tokens: int,
    on_delta: Callable[[str], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    on_open: Callable[[Callable[[], None] | None], None] | None = None,
) -> CallOutcome:
    """Call the provider — never inside a transaction — and describe what happened.
    `on_open` receives the stream's `close` while the call is in flight (and None after), so
    another thread can cancel it at once: the upstream connection is closed, the provider stops.
    A provider that cannot be used (disabled, its key unreadable) is an outcome too, with
    `reached` false: the caller fails that speaker like any provider failure, billing nothing."""
    try:
        gateway = gateway_for_model(model)
    except GatewayError as exc:
        outcome = CallOutcome(
            provider=model.provider.name if model.provider_id else "default",
            started_at=timezone.now(),
            status="error",
            error_code=ERROR_CODES[exc.kind],
            error_message=exc.message,
            reached=False,
        )
        _log(model, outcome)
        return outcome
    outcome = CallOutcome(provider=gateway.provider.name, started_at=timezone.now())
    started = time.monotonic()
    parts: list[str] = []
    usage: TokenUsage | None = None
    stream = gateway.stream(request)
    if on_open is not None:
        on_open(stream.close)
    try:
        for delta in stream:
            parts.append(delta)
            if on_delta is not None:
                on_delta(delta)
            if cancelled is not None and cancelled():
                stream.close()
                outcome.status = "cancelled"
                break
        if outcome.status == "ok":
            response = stream.response
            usage, outcome.generation_id = response.usage, response.generation_id
            outcome.latency_ms = response.latency_ms
            outcome.ttft_ms = response.time_to_first_token_ms
            outcome.parsed = response.parsed
            parts = [response.text]
    except GatewayError as exc:
        outcome.status = {"cancelled": "cancelled", "timeout": "timeout"}.get(exc.kind, "error")
        outcome.error_code, outcome.error_message = ERROR_CODES[exc.kind], exc.message
        outcome.generation_id, outcome.latency_ms = exc.generation_id, exc.latency_ms
        outcome.ttft_ms = exc.time_to_first_token_ms
        if exc.partial_text and not parts:
            parts = [exc.partial_text]
        # A failed call is billed only for what the provider reports as consumed.
        usage = exc.usage if exc.usage and exc.usage.source == "provider" else None
    finally:
        stream.close()
        if on_open is not None:
            on_open(None)
    outcome.text = "".join(parts)
    if outcome.status == "cancelled":
        # The client went away: bill what was consumed, estimated when the provider never said.
        outcome.error_code = "interrupted"
        usage = usage or TokenUsage(
            prompt_tokens=estimated_prompt_tokens,
            completion_tokens=tokenizer.count_tokens(outcome.text),
            source="estimated",
        )
    outcome.usage = usage or TokenUsage(source="provider")
    if not outcome.latency_ms:
        outcome.latency_ms = int((time.monotonic() - started) * 1000)
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


def call_event_write(
    *,
    user: User,
    reservation: Reservation | None,
    purpose: str,
    model_id: str,
    outcome: CallOutcome,
    idempotency_key: str,
    room_id: UUID | None,
    session_id: UUID | None,
    turn_id: UUID | None = None,
    agent_id: UUID | None = None,
) -> LlmCallEvent:
    """The metered event of a finished call (inside the caller's transaction)."""
    usage = outcome.usage
    return call_event_record(
        user=user,
        reservation=reservation,
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
    )
