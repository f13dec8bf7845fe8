"""Routes of the llm API (included under /api/v1/).

A function rather than a module-level `urlpatterns`: the catalog shows current prices, which
live in the usage app, and llm imports no other app. The project's URL conf — the one module
that knows every app — builds these routes with the price reader."""

from __future__ import annotations

from django.urls import URLPattern, path

from llm.api.views import ModelListView, PricesFor, ToolListView


def api_urls(*, prices_for: PricesFor) -> list[URLPattern]:
    """The llm routes, `models` showing prices read by `prices_for`."""
    return [
        path("models", ModelListView.as_view(prices_for=prices_for), name="models-list"),
        path("tools", ToolListView.as_view(), name="tools-list"),
    ]
