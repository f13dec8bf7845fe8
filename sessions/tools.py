"""The sessions app's tool: `session_search`, a full-text search over the calling session's own
messages. Registered with the tool registry at start-up (apps.py), built for each call's context
— the session and its owner — so a model can only ever search the conversation it is in."""

from __future__ import annotations

import json
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from llm.tools.registry import ToolContext
from sessions import selectors

DESCRIPTION = (
    "Search this conversation's earlier messages (the user's and the agents') for words or a "
    "phrase; returns the best matching messages with their turn numbers."
)
RESULT_CONTENT_CHARS = 500


class SessionSearchArguments(BaseModel):
    query: str = Field(min_length=1, max_length=500, description="Words or a phrase to find.")
    limit: int = Field(default=5, ge=1, le=10, description="How many messages at most.")


def session_search_tool(context: ToolContext) -> BaseTool:
    """`session_search` for one call: scoped to `context`'s session and its owner."""

    def search(query: str, limit: int = 5) -> str:
        if context.session_id is None:
            return json.dumps([])
        found = selectors.messages_search(
            session_id=context.session_id, user_id=context.user_id, query=query, limit=limit
        )
        return json.dumps([_hit(message) for message in found], ensure_ascii=False)

    return StructuredTool.from_function(
        func=search,
        name="session_search",
        description=DESCRIPTION,
        args_schema=SessionSearchArguments,
    )


def _hit(message: Any) -> dict[str, Any]:
    return {
        "turn": message.turn.turn_index if message.turn_id else None,
        "from": message.agent.handle if message.agent_id else "user",
        "content": message.content[:RESULT_CONTENT_CHARS],
    }
