"""accounts API routes (mounted under /api/v1/, no trailing slashes)."""

from django.urls import path

from accounts.api.views import ApiKeyDetailView, ApiKeyListCreateView, MeView

urlpatterns = [
    path("auth/me", MeView.as_view(), name="auth-me"),
    path("auth/api-keys", ApiKeyListCreateView.as_view(), name="auth-api-keys"),
    path("auth/api-keys/<uuid:id>", ApiKeyDetailView.as_view(), name="auth-api-key"),
]
