"""One bearer authentication for the API: Pantheon API keys and, when configured, Supabase JWTs.

Every failure is a 401 with `WWW-Authenticate: Bearer` (the exception handler adds the header)."""

from __future__ import annotations

import hmac
import logging
import threading
from typing import Any

import jwt
from django.conf import settings
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from accounts.models import ApiKey, User
from accounts.services import (
    API_KEY_PREFIX,
    api_key_touch,
    hash_secret,
    user_get_or_create_for_subject,
)

logger = logging.getLogger(__name__)

_INVALID = "Invalid or expired bearer token."


class BearerAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>`: an API key `pan_<id>_<secret>` or a Supabase JWT."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, Any] | None:
        header = authentication.get_authorization_header(request)
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0].lower() != b"bearer":
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <token>'.")
        try:
            token = parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed(_INVALID) from exc
        if token.startswith(f"{API_KEY_PREFIX}_"):
            return _authenticate_api_key(token)
        if token.count(".") == 2 and jwt_configured():
            return _authenticate_jwt(token)
        raise exceptions.AuthenticationFailed(_INVALID)

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


def _authenticate_api_key(token: str) -> tuple[User, ApiKey]:
    parts = token.split("_", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise exceptions.AuthenticationFailed(_INVALID)
    _, public_id, secret = parts
    api_key = (
        ApiKey.objects.select_related("user").filter(public_id=public_id).first()
        if len(public_id) <= 16
        else None
    )
    # Compare in constant time, and hash even when the key is unknown so timing says nothing.
    expected = api_key.secret_hash if api_key else "0" * 64
    if not hmac.compare_digest(hash_secret(secret), expected) or api_key is None:
        raise exceptions.AuthenticationFailed(_INVALID)
    now = timezone.now()
    if not api_key.is_usable(now) or not api_key.user.is_active:
        raise exceptions.AuthenticationFailed(_INVALID)
    api_key_touch(api_key=api_key, now=now)
    return api_key.user, api_key


# --- Supabase JWTs ---------------------------------------------------------------------------


def jwt_configured() -> bool:
    return bool(settings.SUPABASE_JWT_SECRETS or settings.SUPABASE_JWKS_URL)


_jwks_lock = threading.Lock()
_jwks_client: jwt.PyJWKClient | None = None
_jwks_url: str = ""


def _jwks() -> jwt.PyJWKClient:
    """One cached JWKS client per process (keys cached for 10 minutes)."""
    global _jwks_client, _jwks_url
    with _jwks_lock:
        if _jwks_client is None or _jwks_url != settings.SUPABASE_JWKS_URL:
            _jwks_client = jwt.PyJWKClient(
                settings.SUPABASE_JWKS_URL, cache_keys=True, lifespan=600, timeout=5
            )
            _jwks_url = settings.SUPABASE_JWKS_URL
        return _jwks_client


def _decode_options() -> dict[str, Any]:
    options: dict[str, Any] = {"require": ["exp", "sub", "aud"]}
    return options


def decode_supabase_jwt(token: str) -> dict[str, Any]:
    """Verify a Supabase JWT (HS256 with any configured secret, or the JWKS) and its claims."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise exceptions.AuthenticationFailed(_INVALID) from exc
    algorithm = header.get("alg")
    common: dict[str, Any] = {
        "audience": settings.SUPABASE_JWT_AUDIENCE,
        "options": _decode_options(),
        "leeway": 0,
    }
    if settings.SUPABASE_ISSUER:
        common["issuer"] = settings.SUPABASE_ISSUER
    claims: dict[str, Any] | None = None
    if algorithm == "HS256" and settings.SUPABASE_JWT_SECRETS:
        for secret in settings.SUPABASE_JWT_SECRETS:
            try:
                claims = jwt.decode(token, secret, algorithms=["HS256"], **common)
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise exceptions.AuthenticationFailed(_INVALID) from exc
    elif algorithm in ("RS256", "ES256") and settings.SUPABASE_JWKS_URL:
        try:
            signing_key = _jwks().get_signing_key_from_jwt(token)
            claims = jwt.decode(token, signing_key.key, algorithms=[algorithm], **common)
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            raise exceptions.AuthenticationFailed(_INVALID) from exc
    if claims is None:
        raise exceptions.AuthenticationFailed(_INVALID)
    if claims.get("role") != "authenticated" or not isinstance(claims.get("sub"), str):
        raise exceptions.AuthenticationFailed(_INVALID)
    return claims


def _authenticate_jwt(token: str) -> tuple[User, dict[str, Any]]:
    claims = decode_supabase_jwt(token)
    user = user_get_or_create_for_subject(subject=claims["sub"], email=claims.get("email"))
    if not user.is_active:
        raise exceptions.AuthenticationFailed(_INVALID)
    return user, claims
