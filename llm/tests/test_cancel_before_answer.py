"""A call cancelled before the provider's answer, over real HTTP against the stub server: wherever
its request is — not yet sent, queued for a pooled connection, in a TLS handshake, in a retry's
backoff — the call ends as cancelled at once, and a request not yet written never goes out."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from llm.gateway import ChatMessage, GatewayError, GatewayRequest, ProviderConfig
from llm.openai_gateway import GatewayPolicy, OpenAIChatStream, OpenAICompatibleGateway
from llm.openai_wire import tag_request
from llm.providers import gateway_for_model
from llm.tokenizer import count_tokens
from testing.stub_llm import LlmStub, StubReply

pytestmark = pytest.mark.django_db

MODEL = "openai/gpt-4o-mini"
MESSAGES = (ChatMessage(role="user", content="hello there"),)
# Long enough that a call which was not stopped by the close could not end in time by itself.
SLOW_POLICY = GatewayPolicy(connect_timeout=10.0, read_timeout=30.0, retry_max_wait=10.0)


def request(**fields: Any) -> GatewayRequest:
    fields.setdefault("model", MODEL)
    fields.setdefault("messages", MESSAGES)
    return GatewayRequest(**fields)


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class Consumer:
    """Iterates a stream in a thread; records how it ended and when."""

    def __init__(self, stream: OpenAIChatStream) -> None:
        self.stream = stream
        self.error: GatewayError | None = None
        self.ended_at = 0.0
        self.thread = threading.Thread(target=self._consume, daemon=True)
        self.thread.start()

    def _consume(self) -> None:
        try:
            list(self.stream)
        except GatewayError as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()

    def close_and_join(self, timeout: float = 5.0) -> float:
        """Close the stream; the seconds the call took to end after the close."""
        closed_at = time.monotonic()
        self.stream.close()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the call did not end after the close"
        return self.ended_at - closed_at


@pytest.fixture(autouse=True)
def _tokenizer_loaded() -> None:
    # A close estimates the usage so far; the tokenizer's first load (~0.5 s) is not what the
    # timings below measure.
    count_tokens("warm up")


@pytest.fixture
def own_gateway() -> Iterator[Callable[..., OpenAICompatibleGateway]]:
    """A gateway on its own client (pool limits, hooks and endpoint chosen by the test)."""
    clients: list[openai.OpenAI] = []

    def make(
        base_url: str,
        *,
        max_connections: int | None = None,
        hooks: list[Callable[[httpx.Request], None]] | None = None,
        policy: GatewayPolicy = SLOW_POLICY,
    ) -> OpenAICompatibleGateway:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=None)
        http_client = openai.DefaultHttpxClient(
            limits=limits, verify=False, event_hooks={"request": [tag_request, *(hooks or [])]}
        )
        client = openai.OpenAI(
            base_url=base_url, api_key="sk-test", max_retries=0, http_client=http_client
        )
        clients.append(client)
        provider = ProviderConfig(name="stub", kind="openai_compatible", base_url=base_url)
        return OpenAICompatibleGateway(provider, client, policy)

    yield make
    for client in clients:
        client.close()


def pool_of(gateway: OpenAICompatibleGateway) -> Any:
    return gateway.client._client._transport._pool


def test_close_while_queued_for_a_pooled_connection_never_sends_it(
    llm_stub: LlmStub, own_gateway: Callable[..., OpenAICompatibleGateway]
) -> None:
    # One connection, busy with a call the provider never answers: the next call's request
    # waits in the pool for it (for up to the 10 s pool timeout).
    gateway = own_gateway(llm_stub.url, max_connections=1)
    llm_stub.enqueue(StubReply(hang=True))
    busy = Consumer(gateway.stream(request()))
    assert wait_for(lambda: len(llm_stub.requests) == 1)
    queued = Consumer(gateway.stream(request()))
    assert wait_for(lambda: len(pool_of(gateway)._requests) == 2)

    assert queued.close_and_join() < 1.0  # not the 10 s pool timeout
    assert queued.error is not None and queued.error.kind == "cancelled"
    assert len(pool_of(gateway)._requests) == 1

    # The connection is freed: the cancelled request does not go out on it.
    assert busy.close_and_join() < 1.0
    assert busy.error is not None and busy.error.kind == "cancelled"
    time.sleep(0.3)
    assert len(llm_stub.requests) == 1
    # The pool is sound afterwards: the next call goes out and is answered.
    assert gateway.complete(request()).text == "stub reply to: hello there"
    assert len(llm_stub.requests) == 2


@pytest.mark.parametrize("reused", [False, True], ids=["new connection", "pooled connection"])
def test_close_as_the_request_enters_the_pool_sends_nothing(
    llm_stub: LlmStub, own_gateway: Callable[..., OpenAICompatibleGateway], reused: bool
) -> None:
    # The close lands after the request was tagged (a later request hook), before it has a
    # connection: it refuses to connect, or to be written on the kept-alive connection.
    target: list[OpenAIChatStream] = []

    def close_now(http_request: httpx.Request) -> None:
        if target:
            target[0].close()

    gateway = own_gateway(llm_stub.url, hooks=[close_now])
    if reused:
        gateway.complete(request())
    llm_stub.enqueue(StubReply(hang=True))
    stream = gateway.stream(request())
    target.append(stream)
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        list(stream)
    assert caught.value.kind == "cancelled"
    assert time.monotonic() - started < 1.0
    time.sleep(0.2)
    assert len(llm_stub.requests) == (1 if reused else 0)


def test_close_after_the_cancel_check_before_the_open_is_seen(
    llm_stub: LlmStub, own_gateway: Callable[..., OpenAICompatibleGateway]
) -> None:
    # The narrowest window of the start: `_run` has checked for a cancel, the open has not
    # begun. The close must not be lost (the request would then hang until the read timeout).
    gateway = own_gateway(llm_stub.url)
    llm_stub.enqueue(StubReply(hang=True))
    stream = gateway.stream(request())
    open_ = stream._open

    def close_then_open() -> Any:
        stream.close()
        return open_()

    stream._open = close_then_open  # type: ignore[method-assign]
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        list(stream)
    assert caught.value.kind == "cancelled"
    assert time.monotonic() - started < 1.0
    assert llm_stub.requests == []


def test_close_during_the_backoff_after_a_429_sends_no_retry(
    llm_stub: LlmStub, own_gateway: Callable[..., OpenAICompatibleGateway]
) -> None:
    gateway = own_gateway(llm_stub.url)
    llm_stub.enqueue(StubReply(status=429, headers={"Retry-After": "5"}))
    consumer = Consumer(gateway.stream(request()))
    assert wait_for(lambda: len(llm_stub.requests) == 1)
    time.sleep(0.2)  # the call now waits out the Retry-After

    assert consumer.close_and_join() < 1.0
    assert consumer.error is not None and consumer.error.kind == "cancelled"
    time.sleep(0.3)
    assert len(llm_stub.requests) == 1


def test_close_during_a_tls_handshake_stops_it(
    own_gateway: Callable[..., OpenAICompatibleGateway],
) -> None:
    # A server that accepts TCP connections (the kernel does, from the backlog) and never
    # answers the TLS handshake: the request has a connection but no socket to reach through
    # the pool yet; the close shuts the connection being set up down.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        gateway = own_gateway(f"https://127.0.0.1:{port}/v1")
        consumer = Consumer(gateway.stream(request()))
        time.sleep(0.3)  # connected; the handshake waits for the server's hello

        assert consumer.close_and_join() < 1.0  # not the 10 s connect timeout
        assert consumer.error is not None and consumer.error.kind == "cancelled"


def test_close_racing_the_start_of_the_call_always_cancels(llm_stub: LlmStub) -> None:
    # A close from another thread at any moment of the start — before iterating, while the
    # request is tagged, connecting, sent, or waiting for headers — ends the call as cancelled
    # at once (a missed close would wait for the 30 s read timeout).
    rng = random.Random(1234)
    gateway = gateway_for_model(MODEL)
    assert isinstance(gateway, OpenAICompatibleGateway)
    llm_stub.enqueue(StubReply(hang=True), times=100)  # every request that gets out hangs
    for attempt in range(20):
        consumer = Consumer(gateway.stream(request(timeout=30)))
        time.sleep(rng.uniform(0, 0.012))
        took = consumer.close_and_join()
        assert took < 1.0, f"attempt {attempt}: the call ended {took:.2f} s after the close"
        assert consumer.error is not None and consumer.error.kind == "cancelled", attempt
