"""The OpenAPI schema: public, valid OpenAPI 3, and complete — every /api/v1/ route found by
walking the URL resolver must be in it, so a new endpoint cannot be left out."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from openapi_spec_validator import validate
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

_DJANGO_PARAM = re.compile(r"<(?:[^:<>]+:)?(\w+)>")
_REGEX_PARAM = re.compile(r"\(\?P<(\w+)>[^)]*\)")
_SKIPPED_METHODS = {"options", "head", "trace"}


def _openapi_path(route: str) -> str:
    route = route.replace("^", "").replace("$", "").replace("\\Z", "")
    route = _REGEX_PARAM.sub(r"{\1}", route)
    return "/" + _DJANGO_PARAM.sub(r"{\1}", route)


def _routes(patterns: list[Any], prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            found += _routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            found.append((route, pattern.callback))
    return found


def api_v1_routes() -> dict[str, set[str]]:
    """OpenAPI path -> the HTTP methods its view implements, for every route under /api/v1/."""
    routes: dict[str, set[str]] = {}
    for route, callback in _routes(get_resolver().url_patterns):
        path = _openapi_path(route)
        if not path.startswith("/api/v1/"):
            continue
        view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
        methods = {
            method
            for method in getattr(view_class, "http_method_names", ())
            if method not in _SKIPPED_METHODS and hasattr(view_class, method)
        }
        routes.setdefault(path, set()).update(methods)
    return routes


@pytest.fixture
def schema(api_client: APIClient) -> dict[str, Any]:
    response = api_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    return response.json()


def test_schema_is_public_json_and_valid_openapi_3(schema: dict[str, Any]) -> None:
    assert schema["openapi"].startswith("3.")
    validate(schema)


def test_schema_defaults_to_yaml_without_accept(api_client: APIClient) -> None:
    response = api_client.get("/api/schema/")
    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.")


def test_every_api_v1_route_and_method_is_in_the_schema(schema: dict[str, Any]) -> None:
    routes = api_v1_routes()
    assert "/api/v1/health" in routes and "/api/v1/auth/api-keys/{id}" in routes
    missing_paths = sorted(set(routes) - set(schema["paths"]))
    assert not missing_paths, f"routes missing from the OpenAPI schema: {missing_paths}"
    missing_operations = sorted(
        f"{method.upper()} {path}"
        for path, methods in routes.items()
        for method in methods
        if method not in schema["paths"][path]
    )
    assert not missing_operations, f"operations missing from the schema: {missing_operations}"


def test_errors_are_documented_in_the_contract_shape(schema: dict[str, Any]) -> None:
    error = schema["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["$ref"].endswith("/ErrorDetail")
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and path != "/api/v1/health":
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/Error"), (method, path, status)


def test_401_is_declared_for_authenticated_endpoints_only(schema: dict[str, Any]) -> None:
    health = schema["paths"]["/api/v1/health"]["get"]
    assert "401" not in health["responses"]
    assert "429" not in health["responses"]
    assert not [s for s in health.get("security", []) if s]
    for path, method in [
        ("/api/v1/auth/me", "get"),
        ("/api/v1/auth/api-keys", "get"),
        ("/api/v1/auth/api-keys", "post"),
        ("/api/v1/auth/api-keys/{id}", "delete"),
    ]:
        operation = schema["paths"][path][method]
        assert "401" in operation["responses"], (method, path)
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
        assert "429" in operation["responses"]
        assert {"bearerAuth": []} in operation["security"]
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearerAuth"]["description"],
    }


def test_api_keys_operations_are_described_truthfully(schema: dict[str, Any]) -> None:
    create = schema["paths"]["/api/v1/auth/api-keys"]["post"]
    assert {"201", "400", "401", "415", "429"} <= set(create["responses"])
    body = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/ApiKeyCreateRequest")
    created = create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert "key" in schema["components"]["schemas"][created.rsplit("/", 1)[1]]["properties"]
    listing = schema["paths"]["/api/v1/auth/api-keys"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"limit", "offset"}
    page = listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    page_props = schema["components"]["schemas"][page.rsplit("/", 1)[1]]["properties"]
    assert {"next", "previous", "results"} <= set(page_props)
    assert "key" not in schema["components"]["schemas"]["ApiKey"]["properties"]
    revoke = schema["paths"]["/api/v1/auth/api-keys/{id}"]["delete"]
    assert {"204", "401", "404"} <= set(revoke["responses"])


def test_docs_are_public(api_client: APIClient) -> None:
    response = api_client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    ]


def test_every_operation_has_a_summary_and_a_description(schema: dict[str, Any]) -> None:
    lacking = [
        f"{method} {path}"
        for method, path, operation in _operations(schema)
        if not operation.get("summary", "").strip()
        or len(operation.get("description", "").strip()) <= len(operation["summary"])
    ]
    assert not lacking, f"operations without a summary and a description: {lacking}"


def test_request_bodies_are_not_described_by_the_strict_base_docstring(
    schema: dict[str, Any],
) -> None:
    """`StrictInputSerializer`'s docstring speaks to developers: a body without a docstring of
    its own has no description rather than that one."""
    leaking = [
        name
        for name, component in schema["components"]["schemas"].items()
        if "PantheonAutoSchema" in component.get("description", "")
    ]
    assert not leaking


def test_no_model_id_is_a_closed_enum(schema: dict[str, Any]) -> None:
    """Staff add models at any time: a model id is a string with an example, in requests and
    responses alike, so a client generated today accepts tomorrow's models."""
    schemas = schema["components"]["schemas"]
    fields = [
        ("RoomCreateRequest", "manager_model"),
        ("PatchedRoomUpdateRequest", "manager_model"),
        ("Room", "manager_model"),
        ("AgentCreateRequest", "model"),
        ("PatchedAgentUpdateRequest", "model"),
        ("Agent", "model"),
        ("ModelConfig", "id"),
        ("UsageModel", "model"),
        ("LlmCallEvent", "model"),
        ("SessionSummary", "model"),
    ]
    for component, name in fields:
        field = schemas[component]["properties"][name]
        assert field["type"] == "string" and "enum" not in field, (component, name)
        assert field["example"] == "openai/gpt-4o-mini", (component, name)
    assert not [name for name in schemas if "ModelId" in name]


def test_a_turn_mode_is_the_same_enum_in_and_out(schema: dict[str, Any]) -> None:
    schemas = schema["components"]["schemas"]
    mode_in = schemas["TurnCreateRequest"]["properties"]["mode"]
    mode_out = schemas["Turn"]["properties"]["mode"]
    assert mode_in["allOf"] == mode_out["allOf"] == [{"$ref": "#/components/schemas/TurnModeEnum"}]
    assert schemas["Room"]["properties"]["default_mode"]["allOf"] == mode_out["allOf"]


def test_the_turn_stream_is_a_string_the_accept_header_asks_for(schema: dict[str, Any]) -> None:
    run = schema["paths"]["/api/v1/sessions/{session_id}/turns"]["post"]
    stream = run["responses"]["200"]
    assert list(stream["content"]) == ["text/event-stream"]
    assert stream["content"]["text/event-stream"]["schema"]["type"] == "string"
    assert "turn.completed" in stream["description"]
    accept = next(p for p in run["parameters"] if p["name"] == "Accept")
    assert accept["in"] == "header"
    assert accept["schema"]["enum"] == ["application/json", "text/event-stream"]
    assert "format" not in [p["name"] for p in run["parameters"]]  # Accept is the one switch
    # Every other answer of the operation is JSON.
    for status, response in run["responses"].items():
        if status != "200":
            assert list(response["content"]) == ["application/json"], status


def test_a_replayed_turn_answer_is_marked_by_a_documented_header(schema: dict[str, Any]) -> None:
    run = schema["paths"]["/api/v1/sessions/{session_id}/turns"]["post"]
    for status in ("201", "502"):
        header = run["responses"][status]["headers"]["Idempotent-Replayed"]
        assert header["schema"] == {"type": "string", "enum": ["true"]}
    assert any(p["name"] == "Idempotency-Key" for p in run["parameters"])


def test_usage_figures_name_credits_burned_like_turns_do(schema: dict[str, Any]) -> None:
    schemas = schema["components"]["schemas"]
    for component in ("UsageDay", "UsageModel", "TurnUsage"):
        assert "credits_burned" in schemas[component]["properties"], component
        assert "credits" not in schemas[component]["properties"], component
    assert schemas["UsageSummary"]["properties"]["credits"]["$ref"].endswith("/Credits")
