"""One bearer authentication for the API: Pantheon API keys and, when configured, Supabase JWTs.

Every failure is a 401 with `WWW-Authenticate: Bearer` (the exception handler adds the header).
No token at all is also a 401: the permission check raises `NotAuthenticated`, and because this
class answers `authenticate_header`, DRF keeps the 401 instead of turning it into a 403.

An API key's row (its secret's SHA-256, expiry, revocation) and its user are cached per process
by the key's public id for at most `API_KEY_CACHE_SECONDS` (default 5), so a request needs no
query to authenticate. The presented secret is still hashed and compared in constant time on
every request, and `expires_at` is checked against the clock on every request; a revocation, a
new `expires_at` (a rotation's grace period), a deleted key or a deactivated user take effect
within that bound. `last_used_at` is written at most once a minute, as before: the write updates
the cached row too, so the requests of the next minute see that nothing is due."""

from __future__ import annotations

import copy
import hmac
import json
import logging
import re
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

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
from pantheon.process_cache import ProcessCache

logger = logging.getLogger(__name__)

_INVALID = "Invalid or expired bearer token."
# `pan_<public id>_<secret>`: the id is hex (see accounts.services.api_key_create); the secret is
# URL-safe base64 and may itself contain "_" and "-". Checked before any query, so junk such as
# NUL bytes never reaches the database.
_API_KEY = re.compile(rf"^{API_KEY_PREFIX}_([0-9a-f]{{1,16}})_([A-Za-z0-9_-]{{1,256}})$")
_ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
# A subject maps to `users.auth_subject` (255) and may become part of a placeholder e-mail (254).
_MAX_SUBJECT_LENGTH = 200


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


def _api_key_load(public_id: str) -> ApiKey | None:
    return ApiKey.objects.select_related("user").filter(public_id=public_id).first()


# Unknown ids are cached too (as None): a flood of made-up ids costs one query per id and bound.
_api_keys: ProcessCache[str, ApiKey | None] = ProcessCache(
    load=_api_key_load, seconds_setting="API_KEY_CACHE_SECONDS"
)


def _authenticate_api_key(token: str) -> tuple[User, ApiKey]:
    match = _API_KEY.match(token)
    if match is None:
        raise exceptions.AuthenticationFailed(_INVALID)
    public_id, secret = match.groups()
    cached = _api_keys.get(public_id)
    # Compare in constant time, and hash even when the key is unknown so timing says nothing.
    expected = cached.secret_hash if cached is not None else "0" * 64
    if not hmac.compare_digest(hash_secret(secret), expected) or cached is None:
        raise exceptions.AuthenticationFailed(_INVALID)
    now = timezone.now()
    if not cached.is_usable(now) or not cached.user.is_active:
        raise exceptions.AuthenticationFailed(_INVALID)
    # On the cached row: once written, `last_used_at` tells the next requests nothing is due.
    api_key_touch(api_key=cached, now=now)
    return _for_this_request(cached)


def _for_this_request(cached: ApiKey) -> tuple[User, ApiKey]:
    """Copies of the cached key and its user: a view may change `request.user` or
    `request.auth`, never what the next request with this key authenticates against."""
    user = copy.copy(cached.user)
    api_key = copy.copy(cached)
    api_key.user = user
    return user, api_key


# --- Supabase JWTs ---------------------------------------------------------------------------


def jwt_configured() -> bool:
    return bool(settings.SUPABASE_JWT_SECRETS or settings.SUPABASE_JWKS_URL)


class JwksCache:
    """The signing keys published at one JWKS URL, cached for `lifespan` seconds.

    An unknown `kid` (the provider rotated its keys) refetches the set, but at most once per
    `cooldown` seconds, so tokens with made-up key ids cannot make us hammer the provider. When
    a fetch fails the last good keys stay in use until a later fetch succeeds."""

    def __init__(
        self, url: str, *, lifespan: float = 600, cooldown: float = 30, timeout: float = 5
    ):
        self.url = url
        self.lifespan = lifespan
        self.cooldown = cooldown
        self.timeout = timeout
        self._keys: list[jwt.PyJWK] = []
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def key_for(self, *, kid: object, algorithm: str) -> jwt.PyJWK | None:
        """The published key with this `kid` usable for `algorithm`, or None."""
        with self._lock:
            now = time.monotonic()
            if self._fetched_at is None or now - self._fetched_at >= self.lifespan:
                self._refresh(now)
            key = self._match(kid, algorithm)
            if key is None and now - (self._fetched_at or 0) >= self.cooldown:
                self._refresh(now)
                key = self._match(kid, algorithm)
            return key

    def _match(self, kid: object, algorithm: str) -> jwt.PyJWK | None:
        for key in self._keys:
            if (
                key.key_id == kid
                and key.algorithm_name == algorithm
                and key.public_key_use in (None, "sig")
            ):
                return key
        return None

    def _refresh(self, now: float) -> None:
        # Counted as an attempt even when it fails: a provider outage must not turn every
        # request into another slow fetch.
        self._fetched_at = now
        if urlparse(self.url).scheme not in ("http", "https"):
            # urllib would also open file:// and friends; a misconfiguration must not read files.
            logger.error("SUPABASE_JWKS_URL must be an http(s) URL, not %r", self.url)
            return
        try:
            # The scheme was checked above, so S310's concern (file:// URLs) does not apply.
            request = urllib.request.Request(self.url, headers={"Accept": "application/json"})  # noqa: S310
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                document = json.loads(response.read(1_000_000))
            self._keys = list(jwt.PyJWKSet.from_dict(document).keys)
        except Exception:  # network, JSON or key-format failure: keep the last good keys
            logger.warning("JWKS fetch from %s failed", self.url, exc_info=True)


_jwks_lock = threading.Lock()
_jwks_caches: dict[str, JwksCache] = {}


def _jwks(url: str) -> JwksCache:
    """One cache per JWKS URL per process."""
    with _jwks_lock:
        cache = _jwks_caches.get(url)
        if cache is None:
            cache = _jwks_caches[url] = JwksCache(url)
        return cache


def _verification_keys(header: dict[str, Any]) -> list[Any]:
    algorithm = header.get("alg")
    if algorithm == "HS256":
        # Several secrets may be active while the project's secret is being rotated.
        return list(settings.SUPABASE_JWT_SECRETS)
    if algorithm in _ASYMMETRIC_ALGORITHMS and settings.SUPABASE_JWKS_URL:
        key = _jwks(settings.SUPABASE_JWKS_URL).key_for(kid=header.get("kid"), algorithm=algorithm)
        return [key.key] if key is not None else []
    return []  # "none", other algorithms, or a kind of key that is not configured


def decode_supabase_jwt(token: str) -> dict[str, Any]:
    """Verify a Supabase JWT (HS256 with any configured secret, or RS256/ES256 from the JWKS)
    and its claims: `aud`, `role=authenticated`, the issuer when configured, an unexpired `exp`,
    and a printable `sub`."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise exceptions.AuthenticationFailed(_INVALID) from exc
    required = ["exp", "sub", "aud"]
    if settings.SUPABASE_ISSUER:
        required.append("iss")
    for key in _verification_keys(header):
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[header["alg"]],
                audience=settings.SUPABASE_JWT_AUDIENCE,
                issuer=settings.SUPABASE_ISSUER or None,
                # `iat` is informative only: a token minted a second "in the future" by a
                # slightly fast clock must not fail. Expiry is strict (no leeway).
                options={"require": required, "verify_iat": False},
                leeway=0,
            )
        except jwt.InvalidSignatureError:
            continue  # try the next secret of a rotation
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            # Signature fine but claims wrong (expired, audience, issuer…), or a malformed token.
            raise exceptions.AuthenticationFailed(_INVALID) from exc
        break
    else:
        raise exceptions.AuthenticationFailed(_INVALID)
    subject = claims.get("sub")
    if (
        claims.get("role") != "authenticated"
        or not isinstance(subject, str)
        or not 0 < len(subject) <= _MAX_SUBJECT_LENGTH
        # NUL, control characters and lone surrogates cannot be stored (PostgreSQL text, UTF-8).
        or not subject.isprintable()
    ):
        raise exceptions.AuthenticationFailed(_INVALID)
    return claims


def _verified_email(claims: dict[str, Any]) -> str | None:
    """The token's `email`, only when the token itself says it is verified (a top-level
    `email_verified: true`, e.g. added by a Supabase custom access token hook). `user_metadata`
    is editable by the user, so its `email_verified` proves nothing. Without the proof the user
    gets a placeholder address: a token cannot claim an address that is not its holder's."""
    if claims.get("email_verified") is not True:
        return None
    email = claims.get("email")
    return email if isinstance(email, str) else None


def _authenticate_jwt(token: str) -> tuple[User, dict[str, Any]]:
    claims = decode_supabase_jwt(token)
    user = user_get_or_create_for_subject(subject=claims["sub"], email=_verified_email(claims))
    if not user.is_active:
        raise exceptions.AuthenticationFailed(_INVALID)
    return user, claims


def api_key_id_of(auth: Any) -> UUID | None:
    """The API key a request authenticated with (`request.auth`), None for a user's JWT."""
    return auth.id if isinstance(auth, ApiKey) else None
