"""Writes for accounts: users and API keys."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import ApiKey, User
from pantheon.errors import ApplicationError

API_KEY_PREFIX = "pan"
# Placeholder domain for identities whose token carries no usable e-mail (RFC 2606: never routable).
_SUBJECT_EMAIL_DOMAIN = "users.supabase.invalid"


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a key's secret part. The secret has 256 bits of entropy, so a fast hash
    is safe and keeps authentication cheap on every request."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedApiKey:
    """A freshly issued key: `key` is the full token, shown to its owner this once."""

    api_key: ApiKey
    key: str


def user_get_or_create(*, email: str, display_name: str = "") -> tuple[User, bool]:
    """The user with this e-mail (case-insensitive), created when missing."""
    email = User.objects.normalize_email(email).lower()
    user = User.objects.filter(email__iexact=email).first()
    if user is not None:
        return user, False
    try:
        with transaction.atomic():
            return User.objects.create_user(email=email, display_name=display_name), True
    except IntegrityError:
        # Created concurrently by someone else: that row is the answer.
        return User.objects.get(email__iexact=email), False


def api_key_create(
    *,
    user: User,
    name: str,
    expires_at: datetime | None = None,
    predecessor: ApiKey | None = None,
) -> IssuedApiKey:
    """Issue a new key `pan_<public_id>_<secret>` for `user`; only the secret's hash is kept.

    A key that would be born expired is refused (400 `validation_error` on `expires_at`)."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ApplicationError(
            "Invalid input.",
            code="validation_error",
            details={"expires_at": ["Must be in the future."]},
        )
    public_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = f"{API_KEY_PREFIX}_{public_id}_{secret}"
    api_key = ApiKey.objects.create(
        user=user,
        name=name,
        public_id=public_id,
        prefix=f"{API_KEY_PREFIX}_{public_id}",
        secret_hash=hash_secret(secret),
        expires_at=expires_at,
        predecessor=predecessor,
    )
    return IssuedApiKey(api_key=api_key, key=key)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke a key now. Revoking twice keeps the first revocation time."""
    now = timezone.now()
    # Conditional UPDATE: two concurrent revocations cannot overwrite the first time.
    updated = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
    if updated:
        api_key.revoked_at = now
    elif api_key.revoked_at is None:
        api_key.refresh_from_db(fields=["revoked_at"])
    return api_key


def api_keys_revoke_for_users(*, users: Iterable[User]) -> int:
    """Revoke every not-yet-revoked key of these users now; returns how many were revoked."""
    return ApiKey.objects.filter(user__in=list(users), revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )


@transaction.atomic
def api_key_rotate(*, api_key: ApiKey, grace: timedelta) -> IssuedApiKey:
    """Issue a successor of `api_key`; the old key keeps working for `grace`, then stops.

    Only a usable key that was not rotated before can be rotated (409 `conflict` otherwise)."""
    if grace < timedelta(0):
        raise ApplicationError(
            "The grace period cannot be negative.",
            code="validation_error",
            details={"grace": ["Must be zero or more."]},
        )
    locked = ApiKey.objects.select_for_update(no_key=True).get(pk=api_key.pk)
    if not locked.is_usable():
        raise ApplicationError(
            "Only a usable key can be rotated: this one is revoked or expired.",
            code="conflict",
        )
    if ApiKey.objects.filter(predecessor=locked).exists():
        raise ApplicationError(
            "This key was already rotated; rotate its successor instead.",
            code="conflict",
        )
    end_of_grace = timezone.now() + grace
    if locked.expires_at is None or locked.expires_at > end_of_grace:
        locked.expires_at = end_of_grace
        locked.save(update_fields=["expires_at"])
    return api_key_create(user=locked.user, name=locked.name, predecessor=locked)


def api_key_touch(*, api_key: ApiKey, now: datetime) -> None:
    """Record use, at most once a minute per key, with a conditional UPDATE (no read-modify)."""
    threshold = now - timedelta(seconds=settings.API_KEY_LAST_USED_RESOLUTION_SECONDS)
    if api_key.last_used_at is not None and api_key.last_used_at > threshold:
        return
    ApiKey.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=threshold), pk=api_key.pk
    ).update(last_used_at=now)
    api_key.last_used_at = now


def _usable_email(email: object) -> str | None:
    # Printable only: a lone surrogate passes `validate_email` but cannot be stored as UTF-8.
    if not isinstance(email, str) or len(email) > 254 or not email.isprintable():
        return None
    try:
        validate_email(email)
    except ValidationError:
        return None
    return email.lower()


def user_get_or_create_for_subject(*, subject: str, email: object = None) -> User:
    """The user a JWT `sub` maps to, created on first sight (safe under concurrent first use).

    `email` is an address the token proves verified (the caller passes None otherwise); it is
    used when valid and not already someone else's, so an external identity is never merged
    into an existing account silently. Otherwise the user gets a placeholder address."""
    user = User.objects.filter(auth_subject=subject).first()
    if user is not None:
        return user
    placeholder = f"{subject}@{_SUBJECT_EMAIL_DOMAIN}".lower()
    address = _usable_email(email) or placeholder
    if address != placeholder and User.objects.filter(email__iexact=address).exists():
        address = placeholder
    for candidate in dict.fromkeys((address, placeholder)):
        try:
            with transaction.atomic():
                return User.objects.create_user(email=candidate, auth_subject=subject)
        except IntegrityError:
            # Either the subject was created concurrently (use it) or the e-mail was just taken
            # by another identity (fall back to the placeholder address).
            user = User.objects.filter(auth_subject=subject).first()
            if user is not None:
                return user
    return User.objects.get(auth_subject=subject)
