"""GET /api/v1/models: the active catalog, paginated, with prices from the pricing hook."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.test import force_authenticate

from llm.api.views import ModelListView
from llm.models import ModelConfig

pytestmark = pytest.mark.django_db

FIELDS = {
    "id",
    "display_name",
    "context_window",
    "max_output_tokens",
    "supports_structured_output",
    "prices",
}


def test_requires_authentication(api_client) -> None:
    response = api_client.get("/api/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_lists_active_models_with_their_limits(owner_client) -> None:
    client, _ = owner_client
    ModelConfig.objects.filter(pk="openai/gpt-4o").update(is_active=False)

    response = client.get("/api/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"next", "previous", "results"}
    ids = [m["id"] for m in body["results"]]
    assert "openai/gpt-4o" not in ids
    assert ids == sorted(ModelConfig.objects.filter(is_active=True).values_list("id", flat=True))
    mini = next(m for m in body["results"] if m["id"] == "openai/gpt-4o-mini")
    assert set(mini) == FIELDS
    assert mini == {
        "id": "openai/gpt-4o-mini",
        "display_name": "GPT-4o mini",
        "context_window": 128_000,
        "max_output_tokens": 16_384,
        "supports_structured_output": True,
        # The v1 pricing migration's list prices (wired from usage by the project's urls).
        "prices": {
            "input": "0.15",
            "output": "0.60",
            "cached_input": "0.075",
            "cache_write": "0.15",
            "reasoning": "0.60",
        },
    }


def test_is_paginated(owner_client) -> None:
    client, _ = owner_client
    page = client.get("/api/v1/models?limit=5&offset=5").json()
    assert len(page["results"]) == 5
    assert page["count"] == ModelConfig.objects.filter(is_active=True).count()
    assert page["next"] and page["previous"]


def test_bad_pagination_input_is_a_validation_error(owner_client) -> None:
    client, _ = owner_client
    response = client.get("/api/v1/models?limit=abc")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_prices_come_from_the_hook_once_per_page(rf, user) -> None:
    calls: list[list[str]] = []

    def prices_for(ids: list[str]) -> dict[str, dict]:
        calls.append(ids)
        return {ids[0]: {"input": "0.15", "output": "0.60"}}

    request = rf.get("/api/v1/models?limit=3")
    force_authenticate(request, user=user)
    body = ModelListView.as_view(prices_for=prices_for)(request).data

    assert calls == [[m["id"] for m in body["results"]]]  # once, with exactly the page's ids
    first, *others = body["results"]
    assert first["prices"] == {"input": "0.15", "output": "0.60"}
    assert others and all(m["prices"] == {} for m in others)


def test_hook_given_to_as_view(rf, user) -> None:
    view = ModelListView.as_view(prices_for=lambda ids: {i: {"input": Decimal("3")} for i in ids})
    request = rf.get("/api/v1/models")
    force_authenticate(request, user=user)
    response = view(request)
    assert response.status_code == 200
    assert all(m["prices"] == {"input": "3"} for m in response.data["results"])


def test_query_count_is_constant(owner_client, django_assert_max_num_queries) -> None:
    client, _ = owner_client
    with django_assert_max_num_queries(6):  # auth, count, page, pricing version, prices
        assert client.get("/api/v1/models?limit=200").status_code == 200


def test_documented_in_the_openapi_schema(api_client) -> None:
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/models"]["get"]
    assert operation["operationId"] == "models_list"
    assert {"200", "401"} <= set(operation["responses"])
    component = schema["components"]["schemas"]["ModelConfig"]
    assert component["properties"]["prices"]["additionalProperties"] == {
        "type": "string",
        "format": "decimal",
    }
