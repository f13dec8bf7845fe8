from django.urls import path

from sessions.api.views import (
    MessageListView,
    SessionDetailView,
    SessionListCreateView,
    SessionSummaryView,
    TurnCancelView,
    TurnDetailView,
    TurnListCreateView,
    TurnRetryView,
)

urlpatterns = [
    path(
        "rooms/<uuid:room_id>/sessions",
        SessionListCreateView.as_view(),
        name="room-sessions",
    ),
    path(
        "rooms/<uuid:room_id>/sessions/<uuid:session_id>",
        SessionDetailView.as_view(),
        name="room-session",
    ),
    path("sessions/<uuid:session_id>/turns", TurnListCreateView.as_view(), name="session-turns"),
    path(
        "sessions/<uuid:session_id>/turns/<int:turn_index>",
        TurnDetailView.as_view(),
        name="session-turn",
    ),
    path(
        "sessions/<uuid:session_id>/turns/<int:turn_index>/cancel",
        TurnCancelView.as_view(),
        name="session-turn-cancel",
    ),
    path(
        "sessions/<uuid:session_id>/turns/<int:turn_index>/retry",
        TurnRetryView.as_view(),
        name="session-turn-retry",
    ),
    path("sessions/<uuid:session_id>/messages", MessageListView.as_view(), name="session-messages"),
    path(
        "sessions/<uuid:session_id>/summary",
        SessionSummaryView.as_view(),
        name="session-summary",
    ),
]
