"""Staff admin for sessions, turns, messages, summaries, context audits and tool calls.

Navigation follows the data: a room lists its sessions (and agents), a session its turns (newest
first) and summaries, a turn its messages in order, its routing decision, its tool calls, its
context audits, its call events and its credits; every row links to its neighbours and to its
owner. Turns, messages, summaries, audits and tool calls are records the pipeline writes:
read-only here.

Speed: every changelist loads related rows with the page (`list_select_related`, annotations) and
every change page reads each related list in one query, so the number of queries does not grow
with the rows shown. Call events live in `usage` and name turns by a plain UUID column: a turn's
events are one query on `turn_id`.

Names: an untitled session is "Session N of <room>", N loaded with the page (`naming`); a
changelist narrowed to one session (`?session=<id>`) names it once, in its heading.

One module per admin page; importing them here registers them (admin autodiscovery imports
`sessions.admin`).
"""

from sessions.admin import (
    audits,
    messages,
    room_sessions,
    sessions,
    summaries,
    tool_calls,
    turns,
)

__all__ = ["audits", "messages", "room_sessions", "sessions", "summaries", "tool_calls", "turns"]
