"""Usage routes, included under /api/v1/ (no trailing slashes)."""

from django.urls import path

from usage.api.views import LedgerEntryListView, LlmCallEventListView, UsageSummaryView

urlpatterns = [
    path("usage", UsageSummaryView.as_view(), name="usage-summary"),
    path("usage/events", LlmCallEventListView.as_view(), name="usage-events"),
    path("usage/ledger", LedgerEntryListView.as_view(), name="usage-ledger"),
]
