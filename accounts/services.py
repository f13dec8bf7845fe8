"""Writes for accounts: users and API keys."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import ApiKey, User

API_KEY_PREFIX = "pan"


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
    return User.objects.create_user(email=email, display_name=display_name), True


def api_key_create(
    *,
    user: User,
    name: str,
    expires_at: datetime | None = None,
    predecessor: ApiKey | None = None,
) -> IssuedApiKey:
    """Issue a new key `pan_<public_id>_<secret>` for `user`; only the secret's hash is kept."""
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
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


@transaction.atomic
def api_key_rotate(*, api_key: ApiKey, grace: timedelta) -> IssuedApiKey:
    """Issue a successor of `api_key`; the old key keeps working for `grace`, then stops."""
    locked = ApiKey.objects.select_for_update(no_key=True).get(pk=api_key.pk)
    if not locked.is_usable():
        raise ValueError("Only a usable key can be rotated.")
    if hasattr(locked, "successor"):
        raise ValueError("This key was already rotated; rotate its successor instead.")
    end_of_grace = timezone.now() + grace
    if locked.expires_at is None or locked.expires_at > end_of_grace:
        locked.expires_at = end_of_grace
        locked.save(update_fields=["expires_at"])
    return api_key_create(
        user=locked.user,
        name=locked.name,
        expires_at=None,
        predecessor=locked,
    )


def api_key_touch(*, api_key: ApiKey, now: datetime) -> None:
    """Record use, at most once a minute per key, with a conditional UPDATE (no read-modify)."""
    threshold = now - timedelta(seconds=60)
    if api_key.last_used_at is not None and api_key.last_used_at > threshold:
        return
    ApiKey.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=threshold), pk=api_key.pk
    ).update(last_used_at=now)
    api_key.last_used_at = now


def user_get_or_create_for_subject(*, subject: str, email: str | None) -> User:
    """The user a JWT `sub` maps to, created on first sight (safe under concurrent first use)."""
    user = User.objects.filter(auth_subject=subject).first()
    if user is not None:
        return user
    address = (email or f"{subject}@users.supabase.invalid").lower()
    try:
        with transaction.atomic():
            if User.objects.filter(email__iexact=address).exists():
                # The e-mail belongs to another identity: do not merge accounts silently.
                address = f"{subject}@users.supabase.invalid"
            return User.objects.create_user(email=address, auth_subject=subject)
    except IntegrityError:
        return User.objects.get(auth_subject=subject)


