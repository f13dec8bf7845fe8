from django.urls import path

from sessions.api.views import (
    MessageListView,
    SessionDetailView,
    SessionListCreateView,
    SessionSummaryView,
    TurnDetailView,
    TurnListCreateView,
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
    path("sessions/<uuid:session_id>/messages", MessageListView.as_view(), name="session-messages"),
    path(
        "sessions/<uuid:session_id>/summary",
        SessionSummaryView.as_view(),
        name="session-summary",
    ),
]
