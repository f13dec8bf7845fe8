"""accounts API routes (mounted under /api/v1/, no trailing slashes).

A function rather than a module-level `urlpatterns`: `auth/me` shows the caller's credits, which
live in the usage app, and accounts must not import usage. The project's URL conf — the one
module that knows every app — builds these routes with the credits reader."""

from __future__ import annotations

from django.urls import URLPattern, path

from accounts.api.views import (
    ApiKeyDetailView,
    ApiKeyListCreateView,
    CreditsFor,
    MeView,
    SpendingWarningsFor,
)


def api_urls(
    *, credits_for: CreditsFor, spending_warnings_for: SpendingWarningsFor
) -> list[URLPattern]:
    """The accounts routes, `auth/me` showing credits read by `credits_for` and spending
    warnings by `spending_warnings_for`."""
    me = MeView.as_view(credits_for=credits_for, spending_warnings_for=spending_warnings_for)
    return [
        path("auth/me", me, name="auth-me"),
        path("auth/api-keys", ApiKeyListCreateView.as_view(), name="auth-api-keys"),
        path("auth/api-keys/<uuid:id>", ApiKeyDetailView.as_view(), name="auth-api-key"),
    ]
