"""Installed tools for the tests of `PANTHEON_TOOLS` (llm/tests/test_tools_registry.py)."""

from __future__ import annotations

from langchain_core.tools import BaseTool, tool


@tool
def word_count(text: str) -> int:
    """Count the words of a text (runs of characters between spaces)."""
    return len(text.split())


class ShoutTool(BaseTool):
    """A tool written as a `BaseTool` subclass: listed by its class path."""

    name: str = "shout"
    description: str = "The text in capital letters."

    def _run(self, text: str) -> str:
        return text.upper()


shout = ShoutTool()

NOT_A_TOOL = 42


@tool
def slow_echo(text: str, seconds: float = 1.0) -> str:
    """Say the text back after a while (for timeouts and cancels)."""
    import time

    time.sleep(seconds)
    return text


@tool
def big_text(words: int) -> str:
    """A text of that many words (for budgets)."""
    return " ".join(["lorem"] * words)
