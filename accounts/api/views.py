"""The accounts API: the caller (`auth/me`) and their API keys."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    MeSerializer,
)
from accounts.models import ApiKey, User
from accounts.selectors import api_key_get_for_user, api_key_list_for_user
from accounts.services import api_key_create, api_key_revoke
from pantheon.api.serializers import CreditsSerializer
from pantheon.api.views import PaginatedAPIView

# Reads a user's credits as `{balance, reserved, available}` (decimal strings).
CreditsFor = Callable[[User], dict[str, Any]]
SpendingWarningsFor = Callable[[User], list[dict[str, Any]]]


class MeView(APIView):
    """`GET auth/me`: who the bearer token belongs to.

    The caller's credits live in the usage app, which accounts must not import: the project's
    URL conf passes their reader in, `MeView.as_view(credits_for=...)`. Without one the body
    has no `credits`."""

    credits_for: CreditsFor | None = None
    # The caller's spending limits at 80 % or more, from usage like the credits.
    spending_warnings_for: SpendingWarningsFor | None = None

    @extend_schema(
        operation_id="auth_me",
        summary="The caller",
        description="The user the bearer token belongs to, with their credits and "
        "`spending_warnings`: their spending limits spent to 80 % or more in the current window "
        "(see `auth/spending-limits`).",
        responses={200: MeSerializer},
    )
    def get(self, request: Request) -> Response:
        user: User = request.user
        body: dict[str, Any] = {
            "id": user.id,
            "email": user.email,
            "display_name": user.display_name,
        }
        if self.credits_for is not None:
            body["credits"] = CreditsSerializer(self.credits_for(user)).data
        if self.spending_warnings_for is not None:
            body["spending_warnings"] = self.spending_warnings_for(user)
        return Response(MeSerializer(body).data)


class ApiKeyListCreateView(PaginatedAPIView):
    """`GET auth/api-keys` (own keys, paginated) and `POST auth/api-keys` (issue one)."""

    @extend_schema(
        operation_id="auth_api_keys_list",
        summary="List your API keys",
        description="Your keys, newest first, revoked and expired ones included. "
        "The secret is never shown again.",
        responses={200: ApiKeySerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        return self.paginated(api_key_list_for_user(user=request.user), ApiKeySerializer)

    @extend_schema(
        operation_id="auth_api_keys_create",
        summary="Create an API key",
        description="Issues a key for the caller. The full key is in `key`, shown this once.",
        request=ApiKeyCreateSerializer,
        responses={201: ApiKeyCreatedSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = api_key_create(
            user=request.user,
            name=serializer.validated_data["name"],
            expires_at=serializer.validated_data.get("expires_at"),
        )
        body = ApiKeyCreatedSerializer(issued.api_key, context={"key": issued.key}).data
        # The secret is in this body: no cache may keep it.
        return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})


class ApiKeyDetailView(APIView):
    """`DELETE auth/api-keys/{id}`: revoke one of your keys (someone else's is a 404)."""

    @extend_schema(
        operation_id="auth_api_keys_revoke",
        summary="Revoke an API key",
        description="Revokes one of your keys (revoking twice is harmless): every server "
        "refuses it within `API_KEY_CACHE_SECONDS` (5 by default). Another user's key is a "
        "404, like a missing one.",
        request=None,
        responses={204: None},
    )
    def delete(self, request: Request, id: uuid.UUID) -> Response:  # `id`: the contract's name
        api_key: ApiKey | None = api_key_get_for_user(user=request.user, api_key_id=id)
        if api_key is None:
            raise NotFound()
        api_key_revoke(api_key=api_key)
        return Response(status=status.HTTP_204_NO_CONTENT)
