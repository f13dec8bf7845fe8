from django.urls import path

from rooms.api.views import (
    AgentDetailView,
    AgentListCreateView,
    RoomDetailView,
    RoomListCreateView,
)

urlpatterns = [
    path("rooms", RoomListCreateView.as_view(), name="rooms"),
    path("rooms/<uuid:room_id>", RoomDetailView.as_view(), name="room"),
    path("rooms/<uuid:room_id>/agents", AgentListCreateView.as_view(), name="room-agents"),
    path(
        "rooms/<uuid:room_id>/agents/<uuid:agent_id>",
        AgentDetailView.as_view(),
        name="room-agent",
    ),
]
