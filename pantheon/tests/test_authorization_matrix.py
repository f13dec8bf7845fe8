"""The authorization matrix: every endpoint and every kind of credential, answered as the contract
says — 401 (with `WWW-Authenticate: Bearer` and the error shape) for anything that is not a valid
bearer, 404 for another user's objects, 2xx for the owner."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiKey
from sessions.models import SessionSummary
from testing import factories
from usage.services import credits_grant, spending_limit_create

pytestmark = pytest.mark.postgres

SECRET = "matrix-jwt-secret-0123456789-abcdefghij"
ISSUER = "https://project.supabase.co/auth/v1"

# (method, path template, body, owner's status, another user's status)
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, int, int]] = [
    ("GET", "auth/me", None, 200, 200),
    ("GET", "auth/api-keys", None, 200, 200),
    ("POST", "auth/api-keys", {"name": "ci"}, 201, 201),
    ("DELETE", "auth/api-keys/{id}", None, 204, 404),
    ("GET", "models", None, 200, 200),
    ("GET", "tools", None, 200, 200),
    ("GET", "rooms", None, 200, 200),
    ("POST", "rooms", {"name": "New room"}, 201, 201),
    ("GET", "rooms/{room_id}", None, 200, 404),
    ("PATCH", "rooms/{room_id}", {"name": "Renamed"}, 200, 404),
    ("DELETE", "rooms/{room_id}", None, 204, 404),
    ("GET", "rooms/{room_id}/agents", None, 200, 404),
    (
        "POST",
        "rooms/{room_id}/agents",
        {
            "name": "Bo",
            "handle": "bo",
            "system_prompt": "You are Bo.",
            "model": "openai/gpt-4o-mini",
        },
        201,
        404,
    ),
    ("GET", "rooms/{room_id}/agents/{agent_id}", None, 200, 404),
    ("PATCH", "rooms/{room_id}/agents/{agent_id}", {"name": "Ada II"}, 200, 404),
    ("DELETE", "rooms/{room_id}/agents/{agent_id}", None, 204, 404),
    ("GET", "rooms/{room_id}/sessions", None, 200, 404),
    ("POST", "rooms/{room_id}/sessions", {"title": "Another"}, 201, 404),
    ("GET", "rooms/{room_id}/sessions/{session_id}", None, 200, 404),
    ("PATCH", "rooms/{room_id}/sessions/{session_id}", {"title": "Renamed"}, 200, 404),
    ("DELETE", "rooms/{room_id}/sessions/{session_id}", None, 204, 404),
    ("GET", "sessions/{session_id}/turns", None, 200, 404),
    ("POST", "sessions/{session_id}/turns", {"input": "@ada hello", "mode": "manual"}, 201, 404),
    ("GET", "sessions/{session_id}/turns/{turn_index}", None, 200, 404),
    # The turn has ended: its owner is told so, anyone else learns nothing.
    ("POST", "sessions/{session_id}/turns/{turn_index}/cancel", None, 409, 404),
    (
        "POST",
        "sessions/{session_id}/turns/{turn_index}/retry",
        {"agent_ids": ["{agent_id}"]},
        200,
        404,
    ),
    ("GET", "sessions/{session_id}/messages", None, 200, 404),
    ("GET", "sessions/{session_id}/summary", None, 200, 404),
    ("GET", "auth/spending-limits", None, 200, 200),
    ("POST", "auth/spending-limits", {"scope": "user", "window": "month", "limit": "5"}, 201, 201),
    (
        "POST",
        "auth/spending-limits",
        {"scope": "room", "room_id": "{room_id}", "window": "month", "limit": "5"},
        201,
        404,
    ),
    ("GET", "auth/spending-limits/{limit_id}", None, 200, 404),
    ("PATCH", "auth/spending-limits/{limit_id}", {"limit": "7"}, 200, 404),
    ("DELETE", "auth/spending-limits/{limit_id}", None, 204, 404),
    ("GET", "usage", None, 200, 200),
    ("GET", "usage/events", None, 200, 200),
    ("GET", "usage/ledger", None, 200, 200),
]

# Credentials that are not a valid bearer: all 401.
INVALID = [
    "none",
    "malformed",
    "wrong_scheme",
    "jwt_wrong_secret",
    "jwt_expired",
    "jwt_wrong_audience",
    "jwt_wrong_role",
    "jwt_wrong_issuer",
    "key_revoked",
    "key_expired",
    "key_wrong_secret",
]
VALID_OTHERS = ["other_key", "other_jwt"]


def _jwt(**overrides: Any) -> str:
    claims = {
        "sub": "5b1f8c1e-0000-4000-8000-000000000001",
        "email": "jwt-user@example.com",
        "aud": "authenticated",
        "role": "authenticated",
        "iss": ISSUER,
        "exp": int(time.time()) + 600,
    }
    secret = overrides.pop("secret", SECRET)
    claims.update(overrides)
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass
class World:
    owner_key: str
    other_key: str
    ids: dict[str, str]
    revoked_key: str
    expired_key: str


def _key_row(key: str) -> ApiKey:
    return ApiKey.objects.get(public_id=key.split("_")[1])


def _world() -> World:
    owner, owner_key = factories.make_api_key()
    credits_grant(user=owner, amount_micro=10**9, idempotency_key=f"matrix-{owner.id}")
    _, other_key = factories.make_api_key()
    room = factories.make_room(owner=owner)
    agent = factories.make_agent(room, name="Ada", handle="ada")
    session = factories.make_session(room)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {owner_key}")
    turn = client.post(
        f"/api/v1/sessions/{session.id}/turns",
        {"input": "@ada hi", "mode": "manual"},
        format="json",
    )
    assert turn.status_code == 201, turn.content
    SessionSummary.objects.create(session=session, last_turn_covered=1, status="pending")
    _, revoked_key = factories.make_api_key(owner, name="revoked")
    ApiKey.objects.filter(pk=_key_row(revoked_key).pk).update(revoked_at=timezone.now())
    _, expired_key = factories.make_api_key(owner, name="expired")
    ApiKey.objects.filter(pk=_key_row(expired_key).pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    _, deletable = factories.make_api_key(owner, name="to-delete")
    limit = spending_limit_create(user=owner, scope="user", window="day", limit_micro=10**9)
    ids = {
        "room_id": str(room.id),
        "agent_id": str(agent.id),
        "session_id": str(session.id),
        "turn_index": "1",
        "id": str(_key_row(deletable).id),
        "limit_id": str(limit.id),
    }
    return World(owner_key, other_key, ids, revoked_key, expired_key)


def _authorization(case: str, world: World) -> str | None:
    return {
        "none": None,
        "malformed": "Bearer",
        "wrong_scheme": f"Token {world.owner_key}",
        "jwt_wrong_secret": "Bearer " + _jwt(secret="not-the-secret-0123456789-abcdefghij"),
        "jwt_expired": "Bearer " + _jwt(exp=int(time.time()) - 5),
        "jwt_wrong_audience": "Bearer " + _jwt(aud="anon"),
        "jwt_wrong_role": "Bearer " + _jwt(role="anon"),
        "jwt_wrong_issuer": "Bearer " + _jwt(iss="https://evil.example.com/auth/v1"),
        "key_revoked": f"Bearer {world.revoked_key}",
        "key_expired": f"Bearer {world.expired_key}",
        "key_wrong_secret": "Bearer " + world.owner_key[:-4] + "abcd",
        "other_key": f"Bearer {world.other_key}",
        "other_jwt": "Bearer " + _jwt(),
        "owner": f"Bearer {world.owner_key}",
    }[case]


@pytest.fixture
def jwt_settings(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SUPABASE_JWT_SECRETS = ["an-older-secret-0123456789-abcdefghij", SECRET]
    settings.SUPABASE_ISSUER = ISSUER


def _call(method: str, template: str, body: Any, world: World, case: str) -> Any:
    client = APIClient()
    header = _authorization(case, world)
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    path = "/api/v1/" + template.format(**world.ids)
    if body is not None:
        body = {
            name: [item.format(**world.ids) for item in value]
            if isinstance(value, list)
            else value.format(**world.ids)
            if isinstance(value, str)
            else value
            for name, value in body.items()
        }
    return getattr(client, method.lower())(path, body, format="json")


@pytest.mark.parametrize("case", [*INVALID, *VALID_OTHERS, "owner"])
@pytest.mark.parametrize(("method", "template", "body", "owner_status", "other_status"), ENDPOINTS)
def test_matrix(
    db, llm_stub, jwt_settings, case, method, template, body, owner_status, other_status
) -> None:  # type: ignore[no-untyped-def]
    world = _world()
    response = _call(method, template, body, world, case)
    if case in INVALID:
        expected = 401
    elif case in VALID_OTHERS:
        expected = other_status
    else:
        expected = owner_status
    assert response.status_code == expected, (case, method, template, response.content[:300])
    if expected >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message", "details"}
        codes = {401: "not_authenticated", 404: "not_found", 409: "turn_not_running"}
        assert error["code"] == codes[expected]
    if expected == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _api_routes() -> set[tuple[str, str]]:
    """Every (method, path) the URLconf serves under /api/v1/, path parameters normalized."""
    import re

    routes: set[tuple[str, str]] = set()

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                full = prefix + str(p.pattern)
                if not full.startswith("api/v1/"):
                    continue
                view = p.callback.view_class  # type: ignore[attr-defined]
                path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", full[len("api/v1/") :])
                for method in ("get", "post", "patch", "delete", "put"):
                    if hasattr(view, method):
                        routes.add((method.upper(), path))

    walk(get_resolver().url_patterns, "")
    return routes


def test_the_matrix_covers_every_endpoint() -> None:
    covered = {(m, t) for m, t, *_ in ENDPOINTS} | {("GET", "health")}
    assert _api_routes() - covered == set()
