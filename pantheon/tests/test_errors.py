"""Every error the API can give is JSON in the contract's shape, with the right status."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

ME = "/api/v1/auth/me"
KEYS = "/api/v1/auth/api-keys"
HEALTH = "/api/v1/health"


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["details"], dict)
    return body["error"]


def test_wrong_content_type_is_415(owner_client: tuple[APIClient, Any]) -> None:
    client, _ = owner_client
    response = client.post(KEYS, "name=x", content_type="application/x-www-form-urlencoded")
    assert_error(response, 415, "unsupported_media_type")
    response = client.post(KEYS, "name: x", content_type="text/plain")
    error = assert_error(response, 415, "unsupported_media_type")
    # What was sent, and what to send instead.
    assert "text/plain" in error["message"] and "application/json" in error["message"]
    assert error["details"] == {"expected": ["application/json"]}


@pytest.mark.parametrize(
    "body",
    [b'{"name": ', b"not json", b'{"name": NaN}', b"\xff\xfe\x00", b'{"name": "x"} trailing'],
)
def test_malformed_json_is_400(owner_client: tuple[APIClient, Any], body: bytes) -> None:
    client, _ = owner_client
    error = assert_error(
        client.post(KEYS, body, content_type="application/json"), 400, "validation_error"
    )
    assert "body" in error["details"]


def test_deeply_nested_json_is_400_not_500(owner_client: tuple[APIClient, Any]) -> None:
    client, _ = owner_client
    body = "[" * 100_000 + "]" * 100_000
    response = client.post(KEYS, body, content_type="application/json")
    assert_error(response, 400, "validation_error")


def test_body_over_the_upload_limit_is_413(
    owner_client: tuple[APIClient, Any], settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    client, _ = owner_client
    response = client.post(KEYS, {"name": "x" * 2_000}, format="json")
    assert_error(response, 413, "request_too_large")


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete", "options", "head"])
@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/auth/me/", "/api/nope", "/api/v2/x"])
def test_unknown_route_is_404_for_any_method(api_client: APIClient, method: str, path: str) -> None:
    response = getattr(api_client, method)(path)
    assert response.status_code == 404
    if method != "head":
        assert_error(response, 404, "not_found")


@pytest.mark.parametrize("method", ["get", "post", "patch", "delete", "head"])
@pytest.mark.parametrize(
    ("path", "meant"),
    [
        ("/api/v1/auth/me/", "/api/v1/auth/me"),
        ("/api/v1/rooms/", "/api/v1/rooms"),
        ("/api/v1/rooms/00000000-0000-0000-0000-000000000001/agents/", None),
        ("/api/schema", "/api/schema/"),
    ],
)
def test_a_path_off_by_its_trailing_slash_is_a_404_naming_the_real_one(
    api_client: APIClient, method: str, path: str, meant: str | None
) -> None:
    meant = meant or path.rstrip("/")
    response = getattr(api_client, method)(path)
    assert response.status_code == 404  # never a redirect: a POST would lose its body
    if method != "head":
        error = assert_error(response, 404, "not_found")
        assert error["message"].endswith(meant)
        assert error["details"] == {"path": meant}


@pytest.mark.parametrize("path", ["/admin", "/api/docs"])
def test_the_admin_and_the_docs_without_their_slash_redirect_to_them(
    api_client: APIClient, path: str
) -> None:
    response = api_client.get(path, {"q": "1"})
    assert response.status_code == 301
    assert response["Location"] == f"{path}/?q=1"
    assert api_client.head(path)["Location"] == f"{path}/"


def test_a_post_to_the_docs_without_their_slash_is_not_redirected(api_client: APIClient) -> None:
    error = assert_error(api_client.post("/api/docs", {"a": 1}), 404, "not_found")
    assert error["details"] == {"path": "/api/docs/"}
    assert api_client.post("/admin").status_code == 404


def test_unknown_route_is_404_for_unknown_methods_and_accept_headers(api_client: APIClient) -> None:
    assert_error(api_client.generic("FOO", "/api/v1/nope"), 404, "not_found")
    assert_error(api_client.generic("TRACE", "/api/v1/nope"), 404, "not_found")
    assert_error(api_client.get("/api/v1/nope", HTTP_ACCEPT="text/html"), 404, "not_found")


def test_unknown_route_outside_the_api_is_not_json(client: Client) -> None:
    response = client.get("/definitely-not-here")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_wrong_method_is_405(owner_client: tuple[APIClient, Any]) -> None:
    client, _ = owner_client
    response = client.put(ME, {}, format="json")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]
    assert_error(client.patch(KEYS, {}, format="json"), 405, "method_not_allowed")
    assert_error(client.generic("FOO", ME), 405, "method_not_allowed")


def test_wrong_method_on_schema_and_docs_is_json_405(api_client: APIClient) -> None:
    assert_error(api_client.post("/api/schema/"), 405, "method_not_allowed")
    assert_error(api_client.delete("/api/docs/"), 405, "method_not_allowed")


def test_not_acceptable_is_406_in_contract_shape(owner_client: tuple[APIClient, Any]) -> None:
    client, _ = owner_client
    assert_error(client.get(ME, HTTP_ACCEPT="text/html"), 406, "not_acceptable")


def test_options_describes_the_view_without_serializer_internals(
    owner_client: tuple[APIClient, Any],
) -> None:
    client, _ = owner_client
    response = client.options(KEYS)
    assert response.status_code == 200
    body = response.json()
    assert body["renders"] == ["application/json"]
    assert "actions" not in body


@pytest.mark.urls("pantheon.tests.urls_errors")
def test_options_on_a_view_without_serializer_class_is_not_500(api_client: APIClient) -> None:
    response = api_client.options("/api/v1/test/no-serializer-class")
    assert response.status_code == 200


def test_bad_host_header_is_400_json(client: Client) -> None:
    response = client.get(HEALTH, HTTP_HOST="evil.example.com")
    assert_error(response, 400, "validation_error")


@pytest.mark.redis
def test_health_with_database_and_broker_up(api_client: APIClient) -> None:
    response = api_client.get(HEALTH)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_health_with_broker_down_is_still_200(
    api_client: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Celery reads CELERY_BROKER_URL from the environment before its configuration.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    response = api_client.get(HEALTH)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "unavailable"}


def test_health_needs_no_token_and_ignores_a_bad_one(api_client: APIClient) -> None:
    api_client.credentials(HTTP_AUTHORIZATION="Bearer junk")
    assert api_client.get(HEALTH).status_code in (200,)


@pytest.mark.urls("pantheon.tests.urls_errors")
def test_unexpected_exception_in_an_api_view_is_500_json_without_internals(
    api_client: APIClient,
) -> None:
    response = api_client.get("/api/v1/test/crash")
    error = assert_error(response, 500, "internal_error")
    assert "secret internals" not in response.content.decode()
    assert "Traceback" not in response.content.decode()
    assert error["details"] == {}


@pytest.mark.urls("pantheon.tests.urls_errors")
def test_unexpected_exception_outside_drf_is_500_json() -> None:
    client = Client(raise_request_exception=False)
    response = client.get("/api/v1/test/django-crash")
    assert_error(response, 500, "internal_error")
    assert "secret internals" not in response.content.decode()


def test_throttling_is_429_with_retry_after(
    owner_client: tuple[APIClient, Any], settings: Any
) -> None:
    cache.clear()
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "2/min", "turns": "1/min"},
    }
    client, _ = owner_client
    assert client.get(ME).status_code == 200
    assert client.get(ME).status_code == 200
    response = client.get(ME)
    error = assert_error(response, 429, "throttled")
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    assert error["details"]["retry_after"] == retry_after


def test_throttle_rate_follows_settings_back(
    owner_client: tuple[APIClient, Any], settings: Any
) -> None:
    # The default rate (restored after the previous test) is far above three requests.
    client, _ = owner_client
    for _ in range(3):
        assert client.get(ME).status_code == 200
