"""The sessions app's REST endpoints: `sessions` (a room's sessions), `turns` (running and
reading turns, messages, summaries), `control` (cancel, retry)."""

from sessions.api.views.control import TurnCancelView, TurnRetryView
from sessions.api.views.sessions import SessionDetailView, SessionListCreateView
from sessions.api.views.turns import (
    MessageListView,
    SessionSummaryView,
    TurnDetailView,
    TurnListCreateView,
)

__all__ = [
    "MessageListView",
    "SessionDetailView",
    "SessionListCreateView",
    "SessionSummaryView",
    "TurnCancelView",
    "TurnDetailView",
    "TurnListCreateView",
    "TurnRetryView",
]
