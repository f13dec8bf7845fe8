"""Usage routes, included under /api/v1/ (no trailing slashes).

A function rather than a module-level `urlpatterns`: a spending limit may be on a room, and
whether a room is the caller's is the rooms app's to say, which usage must not import. The
project's URL conf — the one module that knows every app — passes that check in."""

from __future__ import annotations

from django.urls import URLPattern, path

from usage.api.views import (
    LedgerEntryListView,
    LlmCallEventListView,
    RoomOwned,
    SpendingLimitDetailView,
    SpendingLimitListCreateView,
    UsageSummaryView,
)


def api_urls(*, room_owned: RoomOwned) -> list[URLPattern]:
    """The usage routes; `room_owned(user, room_id)` says whether a room is the user's."""
    limits = SpendingLimitListCreateView.as_view(room_owned=room_owned)
    return [
        path("usage", UsageSummaryView.as_view(), name="usage-summary"),
        path("usage/events", LlmCallEventListView.as_view(), name="usage-events"),
        path("usage/ledger", LedgerEntryListView.as_view(), name="usage-ledger"),
        path("auth/spending-limits", limits, name="auth-spending-limits"),
        path(
            "auth/spending-limits/<uuid:limit_id>",
            SpendingLimitDetailView.as_view(),
            name="auth-spending-limit",
        ),
    ]
