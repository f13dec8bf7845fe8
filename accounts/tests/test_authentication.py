"""Bearer authentication through the API: API keys and Supabase JWTs (HS256 and JWKS)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from rest_framework.test import APIClient

from accounts.models import ApiKey, User
from accounts.services import api_key_revoke
from testing import factories
from testing.clock import ProcessClock

pytestmark = pytest.mark.django_db

ME = "/api/v1/auth/me"
ISSUER = "https://project-ref.supabase.co/auth/v1"
SECRET_OLD = secrets.token_urlsafe(48)
SECRET_NEW = secrets.token_urlsafe(48)


def assert_401(response: Any) -> None:
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == "Bearer"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == "not_authenticated"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def get_me(token: str | None = None, *, header: str | None = None) -> Any:
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    elif token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get(ME)


# --- API keys --------------------------------------------------------------------------------


def test_api_key_authenticates_its_owner() -> None:
    user, key = factories.make_api_key()
    response = get_me(key)
    assert response.status_code == 200
    assert response.json()["id"] == str(user.id)
    assert response.json()["email"] == user.email


def test_missing_token_is_401_not_403() -> None:
    assert_401(get_me())


@pytest.mark.parametrize(
    "header",
    [
        "Token abc",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer a b",
        "bearer",
        "Bearer pan_",
        "Bearer pan_abc",
        "Bearer pan_0123456789ab_",
        "Bearer pan_NOT-HEX!_secret",
        "Bearer pan_0123456789abcdef0123_secret",
        "Bearer not-a-key-nor-a-jwt",
        "Bearer a.b.c",
        "Bearer caf\u00e9",
        "Bearer pan_0123456789ab_sec\u00e9ret",
    ],
)
def test_malformed_authorization_header_is_401(header: str) -> None:
    assert_401(get_me(header=header))


def test_unknown_key_is_401() -> None:
    factories.make_api_key()
    assert_401(get_me(f"pan_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"))


def test_right_id_wrong_secret_is_401() -> None:
    _, key = factories.make_api_key()
    prefix = "_".join(key.split("_", 2)[:2])  # pan_<id>; the secret may itself contain "_"
    assert_401(get_me(f"{prefix}_{secrets.token_urlsafe(32)}"))
    assert_401(get_me(key[:-1] + ("A" if key[-1] != "A" else "B")))


def test_revoked_key_is_401() -> None:
    user, key = factories.make_api_key()
    api_key_revoke(api_key=ApiKey.objects.get(user=user))
    assert_401(get_me(key))


def test_expired_key_is_401_and_unexpired_key_works(process_clock: ProcessClock) -> None:
    _, key = factories.make_api_key(expires_at=timezone.now() + timedelta(seconds=2))
    assert get_me(key).status_code == 200
    # Sooner than API_KEY_CACHE_SECONDS: the expiry itself is checked on every request.
    process_clock.advance(2)
    assert_401(get_me(key))


def _revoke(user: User) -> None:
    api_key_revoke(api_key=ApiKey.objects.get(user=user))


def _deactivate(user: User) -> None:
    User.objects.filter(pk=user.pk).update(is_active=False)


@pytest.mark.parametrize("withdraw", [_revoke, _deactivate], ids=["revoked", "user-deactivated"])
@pytest.mark.parametrize("seconds", [5, 0], ids=["cached", "no-cache"])
def test_a_withdrawn_key_is_refused_within_api_key_cache_seconds(
    settings: Any, process_clock: ProcessClock, withdraw: Any, seconds: int
) -> None:
    settings.API_KEY_CACHE_SECONDS = seconds
    user, key = factories.make_api_key()
    assert get_me(key).status_code == 200
    withdraw(user)
    if seconds:  # the documented bound: this process accepts the key until it reloads it
        process_clock.advance(seconds - 0.1)
        assert get_me(key).status_code == 200
        process_clock.advance(0.1)
    assert_401(get_me(key))


def test_a_cached_key_still_checks_the_secret_and_costs_no_query() -> None:
    _, key = factories.make_api_key()
    assert get_me(key).status_code == 200  # loads the key, writes last_used_at
    with CaptureQueriesContext(connection) as queries:
        assert get_me(key).status_code == 200
    assert [q["sql"] for q in queries.captured_queries if "api_keys" in q["sql"]] == []
    assert_401(get_me(key[:-1] + ("A" if key[-1] != "A" else "B")))


def test_requests_never_share_the_cached_user() -> None:
    _, key = factories.make_api_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    first = client.get(ME).wsgi_request.user
    second = client.get(ME).wsgi_request.user
    assert first == second and first is not second


def test_key_of_inactive_user_is_401() -> None:
    user, key = factories.make_api_key()
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert_401(get_me(key))


def test_last_used_at_is_written_at_most_once_a_minute(process_clock: ProcessClock) -> None:
    user, key = factories.make_api_key()
    api_key = ApiKey.objects.get(user=user)
    assert api_key.last_used_at is None

    assert get_me(key).status_code == 200
    api_key.refresh_from_db()
    first = api_key.last_used_at
    assert first is not None

    for seconds in (1, 30):  # the cached row, then the row read again: nothing is due
        process_clock.advance(seconds)
        with CaptureQueriesContext(connection) as queries:
            assert get_me(key).status_code == 200
        assert not [q for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    api_key.refresh_from_db()
    assert api_key.last_used_at == first

    process_clock.advance(30)
    assert get_me(key).status_code == 200
    api_key.refresh_from_db()
    assert api_key.last_used_at == first + timedelta(seconds=61)


# --- Supabase JWTs, HS256 ----------------------------------------------------------------------


@pytest.fixture
def supabase_hs256(settings: Any) -> None:
    settings.SUPABASE_JWT_SECRETS = [SECRET_NEW, SECRET_OLD]
    settings.SUPABASE_JWKS_URL = ""
    settings.SUPABASE_ISSUER = ISSUER


def make_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(uuid.uuid4()),
        "aud": "authenticated",
        "role": "authenticated",
        "iss": ISSUER,
        "iat": now,
        "exp": now + 300,
        "email": f"{uuid.uuid4().hex[:8]}@example.com",
        "email_verified": True,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def hs256(claims: dict[str, Any], secret: str = SECRET_NEW) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.mark.usefixtures("supabase_hs256")
@pytest.mark.parametrize("secret", [SECRET_NEW, SECRET_OLD])
def test_hs256_jwt_signed_with_any_configured_secret_is_accepted(secret: str) -> None:
    claims = make_claims()
    response = get_me(hs256(claims, secret))
    assert response.status_code == 200, response.content
    user = User.objects.get(auth_subject=claims["sub"])
    assert response.json()["id"] == str(user.id)
    assert response.json()["email"] == claims["email"]


@pytest.mark.usefixtures("supabase_hs256")
@pytest.mark.parametrize(
    "claims",
    [
        pytest.param(make_claims(exp=int(time.time()) - 5), id="expired"),
        pytest.param(make_claims(aud="anon"), id="wrong-audience"),
        pytest.param(make_claims(aud=None), id="no-audience"),
        pytest.param(make_claims(role="anon"), id="role-anon"),
        pytest.param(make_claims(role="service_role"), id="role-service"),
        pytest.param(make_claims(role=None), id="no-role"),
        pytest.param(make_claims(iss="https://other.supabase.co/auth/v1"), id="wrong-issuer"),
        pytest.param(make_claims(iss=None), id="no-issuer"),
        pytest.param(make_claims(sub=None), id="no-sub"),
        pytest.param(make_claims(sub=""), id="empty-sub"),
        pytest.param(make_claims(sub="x" * 300), id="huge-sub"),
        pytest.param(make_claims(sub="a\x00b"), id="nul-in-sub"),
        pytest.param(make_claims(sub="a\nb"), id="newline-in-sub"),
        pytest.param(make_claims(sub="a\ud800b"), id="lone-surrogate-in-sub"),
        pytest.param(make_claims(sub=42), id="number-sub"),
        pytest.param(make_claims(exp=None), id="no-exp"),
    ],
)
def test_hs256_jwt_with_bad_claims_is_401(claims: dict[str, Any]) -> None:
    users_before = User.objects.count()
    assert_401(get_me(hs256(claims)))
    assert User.objects.count() == users_before


@pytest.mark.usefixtures("supabase_hs256")
def test_clock_skew_on_iat_is_tolerated() -> None:
    assert get_me(hs256(make_claims(iat=int(time.time()) + 30))).status_code == 200


@pytest.mark.usefixtures("supabase_hs256")
def test_hs256_jwt_signed_with_another_secret_is_401() -> None:
    assert_401(get_me(hs256(make_claims(), secrets.token_urlsafe(48))))


@pytest.mark.usefixtures("supabase_hs256")
def test_unsigned_jwt_is_401() -> None:
    token = jwt.encode(make_claims(), None, algorithm="none")
    assert_401(get_me(token))


def test_jwt_is_401_when_supabase_is_not_configured(settings: Any) -> None:
    settings.SUPABASE_JWT_SECRETS = []
    settings.SUPABASE_JWKS_URL = ""
    assert_401(get_me(hs256(make_claims())))


def test_issuer_is_not_required_when_not_configured(settings: Any) -> None:
    settings.SUPABASE_JWT_SECRETS = [SECRET_NEW]
    settings.SUPABASE_ISSUER = ""
    assert get_me(hs256(make_claims(iss=None))).status_code == 200


@pytest.mark.usefixtures("supabase_hs256")
def test_first_sight_creates_one_user_and_later_sights_reuse_it() -> None:
    claims = make_claims()
    assert get_me(hs256(claims)).status_code == 200
    assert User.objects.filter(auth_subject=claims["sub"]).count() == 1
    users = User.objects.count()
    # A later token for the same subject (even with another e-mail claim) is the same user.
    response = get_me(hs256(make_claims(sub=claims["sub"], email="changed@example.com")))
    assert response.status_code == 200
    assert User.objects.count() == users
    assert response.json()["email"] == claims["email"]


@pytest.mark.usefixtures("supabase_hs256")
def test_jwt_email_of_an_existing_account_is_not_merged_into_it() -> None:
    existing = factories.make_user(email="taken@example.com")
    claims = make_claims(email="TAKEN@example.com")
    response = get_me(hs256(claims))
    assert response.status_code == 200
    assert response.json()["id"] != str(existing.id)
    assert User.objects.get(auth_subject=claims["sub"]).email.endswith(".invalid")


@pytest.mark.usefixtures("supabase_hs256")
@pytest.mark.parametrize("email", [None, 42, "not an e-mail", "x" * 250 + "@example.com"])
def test_jwt_without_a_usable_email_still_gets_a_user(email: Any) -> None:
    claims = make_claims(email=email)
    assert get_me(hs256(claims)).status_code == 200
    assert User.objects.get(auth_subject=claims["sub"]).email.endswith(".invalid")


@pytest.mark.usefixtures("supabase_hs256")
@pytest.mark.parametrize(
    "proof",
    [
        pytest.param({"email_verified": None}, id="no-claim"),
        pytest.param({"email_verified": False}, id="false"),
        pytest.param({"email_verified": "true"}, id="string-true"),
        pytest.param({"email_verified": 1}, id="one"),
        # user_metadata is editable by the user: it proves nothing.
        pytest.param(
            {"email_verified": None, "user_metadata": {"email_verified": True}},
            id="user-metadata-only",
        ),
    ],
)
def test_jwt_email_is_kept_only_when_the_token_marks_it_verified(proof: dict[str, Any]) -> None:
    claims = make_claims(email="future-key-holder@example.com", **proof)
    response = get_me(hs256(claims))
    assert response.status_code == 200, response.content
    assert response.json()["email"].endswith(".invalid")
    # The address stays free for the account an operator later creates for its real holder.
    assert not User.objects.filter(email__iexact="future-key-holder@example.com").exists()


@pytest.mark.usefixtures("supabase_hs256")
def test_jwt_verified_email_that_cannot_be_stored_gets_the_placeholder() -> None:
    claims = make_claims(email="a@\ud800.example.com")
    assert get_me(hs256(claims)).status_code == 200
    assert User.objects.get(auth_subject=claims["sub"]).email.endswith(".invalid")


@pytest.mark.usefixtures("supabase_hs256")
def test_jwt_of_a_deactivated_user_is_401() -> None:
    claims = make_claims()
    assert get_me(hs256(claims)).status_code == 200
    User.objects.filter(auth_subject=claims["sub"]).update(is_active=False)
    assert_401(get_me(hs256(claims)))


# --- Supabase JWTs, JWKS (RS256 / ES256) -------------------------------------------------------


def _jwk(public_key: Any, algorithm: Any, kid: str, alg: str) -> dict[str, Any]:
    jwk_dict = json.loads(algorithm.to_jwk(public_key))
    jwk_dict.update(kid=kid, alg=alg, use="sig")
    return jwk_dict


@pytest.fixture
def jwks(settings: Any) -> Iterator[SimpleNamespace]:
    """A real JWKS endpoint on 127.0.0.1 publishing one RSA and one EC P-256 signing key."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    document = json.dumps(
        {
            "keys": [
                _jwk(rsa_key.public_key(), RSAAlgorithm, "rsa-1", "RS256"),
                _jwk(ec_key.public_key(), ECAlgorithm, "ec-1", "ES256"),
            ]
        }
    ).encode()
    fetches: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetches.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # A fresh port per test is a fresh URL, so no JWKS cache is shared between tests.
    settings.SUPABASE_JWKS_URL = (
        f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json"
    )
    settings.SUPABASE_JWT_SECRETS = []
    settings.SUPABASE_ISSUER = ISSUER
    try:
        yield SimpleNamespace(rsa=rsa_key, ec=ec_key, fetches=fetches)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_rs256_jwt_from_the_jwks_is_accepted_and_keys_are_cached(jwks: SimpleNamespace) -> None:
    claims = make_claims()
    token = jwt.encode(claims, jwks.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
    assert get_me(token).status_code == 200
    assert get_me(token).status_code == 200
    assert User.objects.filter(auth_subject=claims["sub"]).count() == 1
    assert len(jwks.fetches) == 1


def test_es256_jwt_from_the_jwks_is_accepted(jwks: SimpleNamespace) -> None:
    token = jwt.encode(make_claims(), jwks.ec, algorithm="ES256", headers={"kid": "ec-1"})
    assert get_me(token).status_code == 200


def test_rs256_jwt_signed_by_another_key_is_401(jwks: SimpleNamespace) -> None:
    intruder = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    same_kid = jwt.encode(make_claims(), intruder, algorithm="RS256", headers={"kid": "rsa-1"})
    assert_401(get_me(same_kid))
    unknown_kid = jwt.encode(make_claims(), intruder, algorithm="RS256", headers={"kid": "evil"})
    assert_401(get_me(unknown_kid))
    assert_401(get_me(unknown_kid))
    # An unknown kid may refresh the set, but not once per request.
    assert len(jwks.fetches) <= 2


def test_jwks_jwt_with_bad_claims_is_401(jwks: SimpleNamespace) -> None:
    for claims in (make_claims(exp=int(time.time()) - 1), make_claims(role="anon")):
        token = jwt.encode(claims, jwks.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
        assert_401(get_me(token))


def test_algorithm_confusion_is_401(jwks: SimpleNamespace) -> None:
    # The EC key's id with an RSA algorithm, and an HS256 token "signed" with the public key.
    rsa_as_ec = jwt.encode(make_claims(), jwks.rsa, algorithm="RS256", headers={"kid": "ec-1"})
    assert_401(get_me(rsa_as_ec))
    public_pem = jwks.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert_401(get_me(_hs256_with_raw_key(make_claims(), public_pem)))


def _hs256_with_raw_key(claims: dict[str, Any], key: bytes) -> str:
    """An HS256 token whose secret is `key` (PyJWT refuses PEM keys as HMAC secrets)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b".".join(
        [
            b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode()),
            b64(json.dumps(claims).encode()),
        ]
    )
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


def test_unreachable_jwks_is_401_not_500(settings: Any) -> None:
    settings.SUPABASE_JWT_SECRETS = []
    settings.SUPABASE_ISSUER = ISSUER
    settings.SUPABASE_JWKS_URL = "http://127.0.0.1:1/jwks.json"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_401(get_me(jwt.encode(make_claims(), key, algorithm="RS256", headers={"kid": "k"})))
