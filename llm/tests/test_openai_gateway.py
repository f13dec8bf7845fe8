"""The OpenAI-compatible gateway, over real HTTP with the real `openai` client, against the stub
server (`llm_stub` points the default provider at it)."""

from __future__ import annotations

import threading
import time

import pytest

from llm.gateway import ChatMessage, GatewayError, GatewayRequest
from llm.openai_gateway import OpenAICompatibleGateway
from llm.providers import clear_client_cache, gateway_for_model
from llm.tokenizer import count_message_tokens, count_tokens
from testing.stub_llm import LlmStub, StubReply

pytestmark = pytest.mark.django_db

MODEL = "openai/gpt-4o-mini"
MESSAGES = (
    ChatMessage(role="system", content="You are Ada."),
    ChatMessage(role="user", content="hello there, what do you think?"),
)
ROUTING_SCHEMA = {
    "type": "object",
    "properties": {
        "agents": {
            "type": "array",
            "items": {"type": "string", "enum": ["ada", "bo"]},
            "minItems": 1,
            "maxItems": 2,
            "uniqueItems": True,
        },
        "reason": {"type": "string"},
    },
    "required": ["agents", "reason"],
    "additionalProperties": False,
}


def request(**fields) -> GatewayRequest:
    fields.setdefault("model", MODEL)
    fields.setdefault("messages", MESSAGES)
    return GatewayRequest(**fields)


def gateway() -> OpenAICompatibleGateway:
    found = gateway_for_model(MODEL)
    assert isinstance(found, OpenAICompatibleGateway)
    return found


def failure(req: GatewayRequest) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        gateway().complete(req)
    return caught.value


def wait_for(condition, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --- success ----------------------------------------------------------------------------------


def test_complete_returns_text_usage_and_generation_id(llm_stub: LlmStub) -> None:
    response = gateway().complete(request(temperature=0.3, max_tokens=256))

    assert response.text == "stub reply to: hello there, what do you think?"
    assert response.finish_reason == "stop"
    assert response.model == MODEL
    assert response.generation_id is not None and response.generation_id.startswith("gen-stub-")
    assert response.usage.source == "provider"
    assert response.usage.completion_tokens == (len(response.text) + 3) // 4  # the stub's count
    assert response.latency_ms >= 0
    assert response.time_to_first_token_ms is not None
    assert response.parsed is None

    [sent] = llm_stub.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.body["model"] == MODEL
    assert sent.body["messages"] == [
        {"role": "system", "content": "You are Ada."},
        {"role": "user", "content": "hello there, what do you think?"},
    ]
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["temperature"] == 0.3
    assert sent.body["max_tokens"] == 256
    assert "response_format" not in sent.body


def test_generation_ids_differ_per_call(llm_stub: LlmStub) -> None:
    first = gateway().complete(request())
    second = gateway().complete(request())
    assert first.generation_id != second.generation_id


def test_connection_is_reused_across_calls(llm_stub: LlmStub) -> None:
    # The stream is read to its end after [DONE], so the kept-alive connection is pooled.
    gateway().complete(request())
    gateway().complete(request())
    first, second = llm_stub.requests
    assert first.client_port == second.client_port


def test_stream_yields_deltas_incrementally(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(StubReply(text="one two three four", chunk_delay=0.15))
    stream = gateway().stream(request())
    arrivals: list[tuple[str, float]] = []
    for delta in stream:
        arrivals.append((delta, time.monotonic()))

    assert [delta for delta, _ in arrivals] == ["one ", "two ", "three ", "four"]
    # The first delta was in hand long before the last one was sent: nothing was buffered.
    assert arrivals[-1][1] - arrivals[0][1] >= 0.3
    assert stream.response.text == "one two three four"
    assert stream.response.time_to_first_token_ms < stream.response.latency_ms
    assert stream.error is None


def test_usage_detail_buckets_are_read(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(
        StubReply(
            text="ok",
            usage={
                "prompt_tokens": 1200,
                "completion_tokens": 300,
                "cached_tokens": 800,
                "cache_write_tokens": 150,
                "reasoning_tokens": 120,
            },
        )
    )
    usage = gateway().complete(request()).usage
    assert (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cached_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
        usage.source,
    ) == (1200, 300, 800, 150, 120, "provider")


def test_stream_without_usage_block_is_estimated(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(StubReply(text="an answer without usage", no_usage=True))
    response = gateway().complete(request())
    assert response.text == "an answer without usage"
    assert response.usage.source == "estimated"
    assert response.usage.prompt_tokens == count_message_tokens(MESSAGES)
    assert response.usage.completion_tokens == count_tokens("an answer without usage")


# --- retries ------------------------------------------------------------------------------------


def test_429_with_retry_after_is_retried_then_succeeds(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(StubReply(status=429, headers={"Retry-After": "0.3"}))
    started = time.monotonic()
    response = gateway().complete(request())
    elapsed = time.monotonic() - started

    assert response.text.startswith("stub reply to:")
    assert len(llm_stub.requests) == 2
    assert elapsed >= 0.3  # Retry-After was honoured


def test_429_on_every_attempt_fails_as_rate_limited(llm_stub: LlmStub, settings) -> None:
    settings.LLM_MAX_RETRIES = 2
    llm_stub.enqueue(StubReply(status=429, headers={"Retry-After": "0.05"}), times=5)
    error = failure(request())
    assert error.kind == "rate_limited"
    assert error.status_code == 429
    assert error.retry_after == pytest.approx(0.05)
    assert error.usage is None
    assert len(llm_stub.requests) == 3  # one call and two retries, never more


def test_retry_after_longer_than_the_cap_fails_at_once(llm_stub: LlmStub, settings) -> None:
    settings.LLM_RETRY_MAX_WAIT_SECONDS = 1.0
    llm_stub.enqueue(StubReply(status=429, headers={"Retry-After": "30"}))
    started = time.monotonic()
    error = failure(request())
    assert time.monotonic() - started < 1.0
    assert error.kind == "rate_limited"
    assert error.retry_after == 30
    assert len(llm_stub.requests) == 1


def test_5xx_is_retried_then_fails_as_provider_error(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(StubReply(status=500, error="upstream exploded"), times=3)
    error = failure(request())
    assert error.kind == "provider_error"
    assert error.status_code == 500
    assert "upstream exploded" in error.message
    assert len(llm_stub.requests) == 3


def test_5xx_then_success(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(StubReply(status=503))
    llm_stub.enqueue(StubReply(text="recovered"))
    assert gateway().complete(request()).text == "recovered"
    assert len(llm_stub.requests) == 2


def test_4xx_is_not_retried(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(StubReply(status=400, error="bad model"), times=3)
    error = failure(request())
    assert error.kind == "provider_error"
    assert error.status_code == 400
    assert len(llm_stub.requests) == 1


def test_unreachable_provider_is_a_provider_error(settings) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.OPENROUTER_API_KEY = "sk-test"
    settings.OPENROUTER_BASE_URL = f"http://127.0.0.1:{port}/v1"
    settings.LLM_MAX_RETRIES = 1
    clear_client_cache()
    try:
        error = failure(request())
    finally:
        clear_client_cache()
    assert error.kind == "provider_error"
    assert error.usage is None


# --- timeouts, broken answers, cancel -------------------------------------------------------------


def test_hanging_provider_times_out_within_the_read_timeout(llm_stub: LlmStub, settings) -> None:
    settings.LLM_READ_TIMEOUT_SECONDS = 0.5
    llm_stub.enqueue(StubReply(hang=True), times=3)
    started = time.monotonic()
    error = failure(request())
    elapsed = time.monotonic() - started
    assert error.kind == "timeout"
    assert 0.4 <= elapsed < 2.0
    assert len(llm_stub.requests) == 1  # a timeout is never retried


def test_request_timeout_overrides_the_setting(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(StubReply(text="late", delay=1.0))
    started = time.monotonic()
    error = failure(request(timeout=0.3))
    assert error.kind == "timeout"
    assert time.monotonic() - started < 1.0


def test_a_stall_mid_stream_is_a_timeout_with_estimated_usage(llm_stub: LlmStub, settings) -> None:
    settings.LLM_READ_TIMEOUT_SECONDS = 0.4
    llm_stub.enqueue(StubReply(text="slow words here", chunk_delay=1.5))
    error = failure(request())
    assert error.kind == "timeout"
    assert error.usage is not None and error.usage.source == "estimated"


def test_garbage_stream_is_an_invalid_response(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(StubReply(malformed=True))
    error = failure(request())
    assert error.kind == "invalid_response"
    assert len(llm_stub.requests) == 1


def test_cut_mid_stream_keeps_partial_text_and_estimates_usage(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(StubReply(text="alpha beta gamma delta epsilon", cut_after_chunks=2))
    stream = gateway().stream(request())
    received: list[str] = []
    with pytest.raises(GatewayError) as caught:
        for delta in stream:
            received.append(delta)

    error = caught.value
    assert received == ["alpha ", "beta "]
    assert error.kind == "provider_error"
    assert error.partial_text == "alpha beta "
    assert error.generation_id is not None
    assert error.usage is not None
    assert error.usage.source == "estimated"
    assert error.usage.prompt_tokens == count_message_tokens(MESSAGES)
    assert error.usage.completion_tokens == count_tokens("alpha beta ")
    assert stream.error is error


def test_error_event_inside_the_stream_is_a_provider_error(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(StubReply(text="partial answer", stream_error="upstream overloaded"))
    error = failure(request())
    assert error.kind == "provider_error"
    assert "upstream overloaded" in error.message
    assert error.partial_text == "partial answer"
    assert error.usage is not None and error.usage.source == "estimated"
    assert len(llm_stub.requests) == 1  # nothing is retried once the answer started


def test_close_during_a_slow_stream_disconnects_the_upstream(llm_stub: LlmStub) -> None:
    words = " ".join(f"word{i}" for i in range(20))
    llm_stub.enqueue(StubReply(text=words, chunk_delay=0.2))
    stream = gateway().stream(request())
    iterator = iter(stream)
    first = next(iterator)
    stream.close()

    with pytest.raises(GatewayError) as caught:
        next(iterator)
    error = caught.value
    assert error.kind == "cancelled"
    assert error.partial_text == first == "word0 "
    assert error.usage is not None and error.usage.source == "estimated"
    assert stream.error is error
    assert wait_for(lambda: llm_stub.disconnects == 1)
    assert llm_stub.requests[0].disconnected is True


def test_close_from_another_thread_interrupts_a_blocked_read(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(StubReply(text="first second third", chunk_delay=1.5))
    stream = gateway().stream(request(timeout=5))
    outcome: dict[str, object] = {}

    def consume() -> None:
        try:
            for _ in stream:
                pass
        except GatewayError as exc:
            outcome["error"] = exc
            outcome["at"] = time.monotonic()

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(0.3)  # the reader is now blocked waiting for the next chunk
    closed_at = time.monotonic()
    stream.close()
    reader.join(timeout=3)

    assert not reader.is_alive()
    assert outcome["error"].kind == "cancelled"
    assert outcome["at"] - closed_at < 1.0  # woken by the close, not by the next chunk
    assert wait_for(lambda: llm_stub.disconnects == 1)


@pytest.mark.parametrize("reused", [False, True], ids=["new connection", "pooled connection"])
def test_close_stops_a_provider_that_has_not_sent_a_byte(llm_stub: LlmStub, reused: bool) -> None:
    # The provider takes the request and never answers: no response, so no socket to reach
    # through it. The close finds the request's connection in the pool and shuts it down.
    if reused:  # a kept-alive connection from an earlier call carries the next one
        gateway().complete(request())
    llm_stub.enqueue(StubReply(hang=True))
    stream = gateway().stream(request(timeout=30))
    outcome: dict[str, object] = {}

    def consume() -> None:
        try:
            list(stream)
        except GatewayError as exc:
            outcome["error"] = exc
            outcome["at"] = time.monotonic()

    reader = threading.Thread(target=consume)
    reader.start()
    assert wait_for(lambda: len(llm_stub.requests) == (2 if reused else 1))
    time.sleep(0.1)  # the reader is blocked waiting for the answer's headers
    closed_at = time.monotonic()
    stream.close()
    reader.join(timeout=5)

    assert not reader.is_alive()
    assert outcome["error"].kind == "cancelled"
    assert outcome["at"] - closed_at < 1.0  # not the 30 s read timeout
    assert wait_for(lambda: llm_stub.requests[-1].disconnected)
    if reused:
        assert llm_stub.requests[0].client_port == llm_stub.requests[1].client_port


def test_close_before_iterating_sends_nothing(llm_stub: LlmStub) -> None:
    stream = gateway().stream(request())
    stream.close()
    with pytest.raises(GatewayError) as caught:
        list(stream)
    assert caught.value.kind == "cancelled"
    assert caught.value.usage is None
    assert llm_stub.requests == []


# --- structured output ------------------------------------------------------------------------


def test_structured_output_is_parsed_and_validated(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(StubReply(json={"agents": ["bo", "ada"], "reason": "both were asked"}))
    response = gateway().complete(request(json_schema=ROUTING_SCHEMA, schema_name="routing"))

    assert response.parsed == {"agents": ["bo", "ada"], "reason": "both were asked"}
    [sent] = llm_stub.requests
    assert sent.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "routing", "schema": ROUTING_SCHEMA, "strict": True},
    }


def test_structured_output_default_stub_answer_is_schema_valid(llm_stub: LlmStub) -> None:
    messages = (ChatMessage(role="user", content="@bo what do you say?"),)
    response = gateway().complete(request(messages=messages, json_schema=ROUTING_SCHEMA))
    assert response.parsed == {"agents": ["bo"], "reason": "stub"}


def test_answer_violating_the_schema_is_invalid_and_keeps_usage(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(
        StubReply(
            json={"agents": ["zed"], "reason": "nobody"},
            usage={"prompt_tokens": 90, "completion_tokens": 12},
        )
    )
    error = failure(request(json_schema=ROUTING_SCHEMA))
    assert error.kind == "invalid_response"
    assert "'zed' is not one of" in error.message
    assert error.partial_text == '{"agents": ["zed"], "reason": "nobody"}'
    assert error.usage is not None
    assert (error.usage.prompt_tokens, error.usage.completion_tokens) == (90, 12)
    assert error.usage.source == "provider"
    assert error.generation_id is not None


def test_answer_that_is_not_json_is_invalid(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(StubReply(text="Sure! I pick ada."))
    error = failure(request(json_schema=ROUTING_SCHEMA))
    assert error.kind == "invalid_response"
    assert error.partial_text == "Sure! I pick ada."
    assert error.usage is not None
