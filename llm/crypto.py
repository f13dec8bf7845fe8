"""Secrets at rest: Fernet tokens under `settings.PANTHEON_ENCRYPTION_KEYS`.

The setting lists Fernet keys newest first (a list, or one comma-separated string). Encryption
always uses the newest key; decryption tries each key, so a key can be added in front, the stored
secrets re-encrypted (`manage.py rotate_secrets`), and only then the old key removed.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with any configured key (or is not a Fernet token)."""


def _configured_keys() -> tuple[str, ...]:
    raw = settings.PANTHEON_ENCRYPTION_KEYS
    keys = raw.split(",") if isinstance(raw, str) else list(raw)
    cleaned = tuple(key.strip() for key in keys if key and key.strip())
    if not cleaned:
        raise RuntimeError("PANTHEON_ENCRYPTION_KEYS is empty: no key to encrypt secrets with")
    return cleaned


@lru_cache(maxsize=8)
def _fernets(keys: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    # Keyed by the key tuple, so a settings change (tests, a reload) builds new ciphers.
    fernets = [Fernet(key.encode()) for key in keys]
    return MultiFernet(fernets), fernets[0]


def encrypt_secret(plaintext: str) -> str:
    """A Fernet token (text) of `plaintext` under the newest key."""
    multi, _ = _fernets(_configured_keys())
    return multi.encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str) -> str:
    """The plaintext of `token`, trying every configured key."""
    multi, _ = _fernets(_configured_keys())
    try:
        return multi.decrypt(token.encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise SecretUnreadable("no configured key decrypts this secret") from exc


def is_current(token: str) -> bool:
    """Whether `token` is already encrypted under the newest key (rotation would not change it)."""
    _, newest = _fernets(_configured_keys())
    try:
        newest.decrypt(token.encode())
    except (InvalidToken, ValueError):
        return False
    return True


def reencrypt_secret(token: str) -> str:
    """`token` re-encrypted under the newest key."""
    multi, _ = _fernets(_configured_keys())
    try:
        return multi.rotate(token.encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise SecretUnreadable("no configured key decrypts this secret") from exc
