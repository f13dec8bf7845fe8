"""The stub OpenAI-compatible server itself: JSON path, scripting by model, records, CLI."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from testing.stub_llm import LlmStub, StubReply

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def post(stub: LlmStub, body: dict, path: str = "/chat/completions") -> httpx.Response:
    return httpx.post(stub.url + path, json=body, timeout=5)


def test_json_answer_through_the_openai_client(llm_stub: LlmStub) -> None:
    llm_stub.usage_defaults = {"cached_tokens": 7, "reasoning_tokens": 3}
    client = openai.OpenAI(base_url=llm_stub.url, api_key="sk-test", max_retries=0)
    completion = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x" * 60}]
    )
    assert completion.choices[0].message.content == "stub reply to: " + "x" * 40
    assert completion.id.startswith("gen-stub-")
    assert completion.usage.prompt_tokens_details.cached_tokens == 7
    assert completion.usage.completion_tokens_details.reasoning_tokens == 3
    assert llm_stub.requests[0].stream is False


def test_malformed_json_body(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(StubReply(malformed=True))
    response = post(llm_stub, {"model": "m", "messages": []})
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_replies_keyed_by_model_only_reach_that_model(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(status=500, model="agent-two")
    llm_stub.enqueue(text="general")
    assert (
        post(llm_stub, {"model": "agent-one", "messages": []}).json()["choices"][0]["message"][
            "content"
        ]
        == "general"
    )
    assert post(llm_stub, {"model": "agent-two", "messages": []}).status_code == 500
    assert post(llm_stub, {"model": "agent-two", "messages": []}).status_code == 200
    assert [r.model for r in llm_stub.requests] == ["agent-one", "agent-two", "agent-two"]
    assert llm_stub.pending == 0


def test_error_answers_carry_headers_and_an_openai_error_body(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(status=429, headers={"Retry-After": "3"}, error="slow down")
    response = post(llm_stub, {"model": "m", "messages": []})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["message"] == "slow down"


def test_unknown_paths_and_bad_bodies(llm_stub: LlmStub) -> None:
    assert post(llm_stub, {}, path="/embeddings").status_code == 404
    response = httpx.post(llm_stub.url + "/chat/completions", content=b"{nope", timeout=5)
    assert response.status_code == 400


def test_reset_forgets_script_and_records(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(text="scripted")
    post(llm_stub, {"model": "m", "messages": []})
    llm_stub.enqueue(text="left over")
    llm_stub.reset()
    assert llm_stub.requests == [] and llm_stub.pending == 0 and llm_stub.disconnects == 0


def test_a_hang_is_released_when_the_client_goes_away(llm_stub: LlmStub) -> None:
    llm_stub.enqueue(hang=True)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(llm_stub.url + "/chat/completions", json={"model": "m"}, timeout=0.3)
    deadline = time.monotonic() + 3
    while llm_stub.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert llm_stub.disconnects == 1


def test_standalone_server_for_benchmarks() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "testing.stub_llm", "--port", str(port)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert f"127.0.0.1:{port}" in process.stdout.readline()
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "ping"}]},
            timeout=5,
        )
        assert response.json()["choices"][0]["message"]["content"] == "stub reply to: ping"
    finally:
        process.terminate()
        process.wait(timeout=5)
