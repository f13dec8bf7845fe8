"""Writes of the llm app: providers and their encrypted secrets."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction

from llm.crypto import SecretUnreadable, is_current, reencrypt_secret
from llm.models import HttpTool, Provider, ProviderKind


def provider_create(
    *,
    name: str,
    kind: str = ProviderKind.OPENAI_COMPATIBLE,
    base_url: str = "",
    api_key: str = "",
    is_active: bool = True,
) -> Provider:
    """Create a provider; `api_key` is encrypted before it is stored."""
    provider = Provider(name=name, kind=kind, base_url=base_url, is_active=is_active)
    provider.api_key = api_key
    provider.full_clean()
    provider.save()
    return provider


@dataclass(frozen=True)
class SecretRotation:
    """What a rotation did: `changed` of `total` stored secrets were re-encrypted; `unreadable`
    names providers whose secret no configured key decrypts (left untouched)."""

    changed: int
    total: int
    unreadable: list[str] = field(default_factory=list)


@transaction.atomic
def provider_secrets_rotate(*, dry_run: bool = False) -> SecretRotation:
    """Re-encrypt every stored secret — provider API keys and HTTP tools' secret headers — under
    the newest PANTHEON_ENCRYPTION_KEYS key.

    Idempotent: a secret already under the newest key is left as it is, so a second run changes
    nothing. With `dry_run`, counts what would change and writes nothing.
    """
    changed = 0
    total = 0
    unreadable: list[str] = []
    stores = [
        (Provider.objects.exclude(api_key_encrypted=""), "api_key_encrypted", "provider"),
        (
            HttpTool.objects.exclude(secret_header_value_encrypted=""),
            "secret_header_value_encrypted",
            "HTTP tool",
        ),
    ]
    for rows, column, kind in stores:
        for row in rows.select_for_update(no_key=True).order_by("pk"):
            total += 1
            token = getattr(row, column)
            if is_current(token):
                continue
            try:
                token = reencrypt_secret(token)
            except SecretUnreadable:
                unreadable.append(f"{kind} {row.name}")
                continue
            changed += 1
            if not dry_run:
                setattr(row, column, token)
                row.save(update_fields=[column, "updated_at"])
    return SecretRotation(changed=changed, total=total, unreadable=unreadable)
