"""Secrets at rest: Fernet under PANTHEON_ENCRYPTION_KEYS (newest first)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from llm.crypto import SecretUnreadable, decrypt_secret, encrypt_secret, is_current


@pytest.fixture
def keys(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.PANTHEON_ENCRYPTION_KEYS = [old]
    return settings, old, new


def test_round_trip_and_no_plaintext_in_the_token(keys) -> None:
    token = encrypt_secret("sk-live-abc123")
    assert "sk-live-abc123" not in token
    assert token != encrypt_secret("sk-live-abc123")  # fresh IV every time
    assert decrypt_secret(token) == "sk-live-abc123"


def test_older_keys_still_decrypt_and_newest_encrypts(keys) -> None:
    settings, old, new = keys
    token = encrypt_secret("secret")
    settings.PANTHEON_ENCRYPTION_KEYS = [new, old]
    assert decrypt_secret(token) == "secret"
    assert not is_current(token)
    assert is_current(encrypt_secret("secret"))


def test_comma_separated_string_setting_is_accepted(keys) -> None:
    settings, old, new = keys
    token = encrypt_secret("secret")
    settings.PANTHEON_ENCRYPTION_KEYS = f"{new}, {old}"
    assert decrypt_secret(token) == "secret"


def test_unknown_key_or_garbage_is_unreadable(keys) -> None:
    settings, _, new = keys
    token = encrypt_secret("secret")
    settings.PANTHEON_ENCRYPTION_KEYS = [new]
    with pytest.raises(SecretUnreadable):
        decrypt_secret(token)
    with pytest.raises(SecretUnreadable):
        decrypt_secret("not a token")
