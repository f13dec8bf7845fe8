"""Exceptions a tool raises to shape its result (`llm.tools.registry.tool_run`)."""

from __future__ import annotations


class ToolError(Exception):
    """A tool's failure whose message is meant for the model as it is: the result's `error` is
    the message alone, without the exception's type."""


class ToolTimeout(ToolError):
    """The tool gave up waiting (e.g. an HTTP tool's request timed out): a `timeout` result."""
