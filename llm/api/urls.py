"""Routes of the llm API (included under /api/v1/)."""

from django.urls import path

from llm.api.views import ModelListView

urlpatterns = [
    path("models", ModelListView.as_view(), name="models-list"),
]
