"""The accounts API over HTTP: auth/me and auth/api-keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient, force_authenticate

from accounts.api.views import MeView
from accounts.models import ApiKey
from testing import factories

pytestmark = pytest.mark.django_db

ME = "/api/v1/auth/me"
KEYS = "/api/v1/auth/api-keys"
KEY_FIELDS = {"id", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"}


def key_url(key_id: object) -> str:
    return f"{KEYS}/{key_id}"


def bearer(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body["error"]


# --- auth/me -----------------------------------------------------------------------------------


def test_me_returns_the_caller(owner_client: tuple[APIClient, Any]) -> None:
    client, owner = owner_client
    owner.display_name = "Ada"
    owner.save(update_fields=["display_name"])
    response = client.get(ME)
    assert response.status_code == 200
    assert response.json() == {
        "id": str(owner.id),
        "email": owner.email,
        "display_name": "Ada",
        # A new user starts at zero (the project wires usage's credits into auth/me).
        "credits": {"balance": "0.000000", "reserved": "0.000000", "available": "0.000000"},
        # No spending limit at 80 % or more (the project wires usage's limits in too).
        "spending_warnings": [],
    }


def test_me_adds_credits_when_a_provider_is_wired(
    owner_client: tuple[APIClient, Any], rf: RequestFactory
) -> None:
    _, owner = owner_client
    seen = []

    def credits_for(user: Any) -> dict[str, str]:
        seen.append(user.pk)
        return {"balance": "3.090000", "reserved": "1.000000", "available": "2.090000"}

    request = rf.get(ME)
    force_authenticate(request, user=owner)
    response = MeView.as_view(credits_for=credits_for)(request)
    assert response.status_code == 200
    assert response.data["credits"] == {
        "balance": "3.090000",
        "reserved": "1.000000",
        "available": "2.090000",
    }
    assert seen == [owner.pk]


def test_me_without_a_token_is_401(api_client: APIClient) -> None:
    response = api_client.get(ME)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Bearer"


# --- auth/api-keys -----------------------------------------------------------------------------


def test_create_shows_the_key_once_and_it_works(owner_client: tuple[APIClient, Any]) -> None:
    client, owner = owner_client
    response = client.post(KEYS, {"name": "laptop"}, format="json")
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == KEY_FIELDS | {"key"}
    assert body["name"] == "laptop"
    assert body["expires_at"] is None and body["revoked_at"] is None
    assert body["key"].startswith(body["prefix"] + "_")
    assert ApiKey.objects.get(pk=body["id"]).user_id == owner.pk

    new_client = bearer(body["key"])
    assert new_client.get(ME).json()["id"] == str(owner.id)

    listing = client.get(KEYS).json()
    assert body["id"] in {k["id"] for k in listing["results"]}
    for item in listing["results"]:
        assert set(item) == KEY_FIELDS  # never the key, never the hash
    assert body["key"] not in client.get(KEYS).content.decode()


def test_create_with_future_expiry(owner_client: tuple[APIClient, Any]) -> None:
    client, _ = owner_client
    expires_at = (timezone.now() + timedelta(days=30)).replace(microsecond=0)
    response = client.post(
        KEYS, {"name": "ci", "expires_at": expires_at.isoformat()}, format="json"
    )
    assert response.status_code == 201, response.content
    returned = datetime.fromisoformat(response.json()["expires_at"].replace("Z", "+00:00"))
    assert returned == expires_at
    assert bearer(response.json()["key"]).get(ME).status_code == 200


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": None}, "name"),
        ({"name": "ok", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "ok", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ],
)
def test_create_with_bad_input_is_400_naming_the_field(
    owner_client: tuple[APIClient, Any], payload: dict[str, Any], field: str
) -> None:
    client, owner = owner_client
    before = ApiKey.objects.filter(user=owner).count()
    error = assert_error(client.post(KEYS, payload, format="json"), 400, "validation_error")
    assert field in error["details"]
    assert ApiKey.objects.filter(user=owner).count() == before


def test_create_with_a_non_object_body_is_400(owner_client: tuple[APIClient, Any]) -> None:
    client, _ = owner_client
    response = client.post(KEYS, "[1, 2]", content_type="application/json")
    assert_error(response, 400, "validation_error")


def test_expires_at_just_past_is_400(owner_client: tuple[APIClient, Any]) -> None:
    client, _ = owner_client
    past = datetime.now(UTC) - timedelta(seconds=1)
    response = client.post(KEYS, {"name": "x", "expires_at": past.isoformat()}, format="json")
    assert "expires_at" in assert_error(response, 400, "validation_error")["details"]


def test_list_is_own_keys_newest_first_and_paginated(
    owner_client: tuple[APIClient, Any], other_client: tuple[APIClient, Any]
) -> None:
    client, owner = owner_client
    _, other = other_client
    for n in range(3):
        factories.make_api_key(owner, name=f"k{n}")
    factories.make_api_key(other, name="not mine")

    body = client.get(KEYS).json()
    assert set(body) >= {"next", "previous", "results"}
    names = [k["name"] for k in body["results"]]
    assert "not mine" not in names
    assert len(names) == 4  # the fixture's key and three more
    created = [k["created_at"] for k in body["results"]]
    assert created == sorted(created, reverse=True)

    page = client.get(KEYS, {"limit": 2, "offset": 0}).json()
    assert len(page["results"]) == 2 and page["next"] is not None
    rest = client.get(KEYS, {"limit": 2, "offset": 2}).json()
    assert {k["id"] for k in page["results"]}.isdisjoint({k["id"] for k in rest["results"]})


def test_list_query_count_does_not_grow_with_keys(owner_client: tuple[APIClient, Any]) -> None:
    client, owner = owner_client
    client.get(ME)  # settle last_used_at so it is not written during the measured requests
    with CaptureQueriesContext(connection) as few:
        assert client.get(KEYS).status_code == 200
    for n in range(10):
        factories.make_api_key(owner, name=f"k{n}")
    with CaptureQueriesContext(connection) as many:
        assert client.get(KEYS).status_code == 200
    assert len(many) == len(few)


def test_revoke_own_key(owner_client: tuple[APIClient, Any]) -> None:
    client, _ = owner_client
    created = client.post(KEYS, {"name": "temp"}, format="json").json()
    response = client.delete(key_url(created["id"]))
    assert response.status_code == 204
    assert response.content == b""
    assert ApiKey.objects.get(pk=created["id"]).revoked_at is not None
    assert bearer(created["key"]).get(ME).status_code == 401
    listed = {k["id"]: k for k in client.get(KEYS).json()["results"]}
    assert listed[created["id"]]["revoked_at"] is not None
    # Revoking again is harmless and keeps the first revocation time.
    first = ApiKey.objects.get(pk=created["id"]).revoked_at
    assert client.delete(key_url(created["id"])).status_code == 204
    assert ApiKey.objects.get(pk=created["id"]).revoked_at == first


def test_another_users_key_is_404_and_untouched(
    owner_client: tuple[APIClient, Any], other_client: tuple[APIClient, Any]
) -> None:
    client, _ = owner_client
    _, other = other_client
    other_key = ApiKey.objects.get(user=other)
    assert_error(client.delete(key_url(other_key.pk)), 404, "not_found")
    other_key.refresh_from_db()
    assert other_key.revoked_at is None


@pytest.mark.parametrize("key_id", [uuid.uuid4(), "not-a-uuid", "123"])
def test_unknown_key_is_404(owner_client: tuple[APIClient, Any], key_id: object) -> None:
    client, _ = owner_client
    assert_error(client.delete(key_url(key_id)), 404, "not_found")


def test_api_keys_need_a_token(api_client: APIClient) -> None:
    for response in (
        api_client.get(KEYS),
        api_client.post(KEYS, {"name": "x"}, format="json"),
        api_client.delete(key_url(uuid.uuid4())),
    ):
        assert_error(response, 401, "not_authenticated")
