"""Provider secrets: encrypted at rest, and `rotate_secrets` re-encrypts under the newest key."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection

from llm.models import Provider
from llm.services import provider_create, provider_secrets_rotate

pytestmark = pytest.mark.django_db


def stored_token(provider: Provider) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key_encrypted FROM llm_providers WHERE id = %s", [provider.pk])
        return cursor.fetchone()[0]


def rotate(*args: str) -> str:
    out = StringIO()
    call_command("rotate_secrets", *args, stdout=out)
    return out.getvalue().strip()


def test_the_plaintext_is_never_stored(settings) -> None:
    settings.PANTHEON_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    provider = provider_create(name="p", base_url="https://x.example/v1", api_key="sk-plain-42")
    token = stored_token(provider)
    assert token and "sk-plain-42" not in token
    assert Provider.objects.get(pk=provider.pk).api_key == "sk-plain-42"
    assert "sk-plain-42" not in repr(provider) and "sk-plain-42" not in str(provider)


def test_rotate_then_drop_the_old_key(settings) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.PANTHEON_ENCRYPTION_KEYS = [old]
    a = provider_create(name="a", base_url="https://a.example/v1", api_key="key-a")
    b = provider_create(name="b", base_url="https://b.example/v1", api_key="key-b")
    provider_create(name="keyless", base_url="https://k.example/v1")  # nothing to rotate

    settings.PANTHEON_ENCRYPTION_KEYS = [new, old]
    c = provider_create(name="c", base_url="https://c.example/v1", api_key="key-c")
    before = {p.pk: stored_token(p) for p in (a, b, c)}

    assert rotate() == "rotated 2 of 3 stored secrets"
    assert stored_token(a) != before[a.pk] and stored_token(b) != before[b.pk]
    assert stored_token(c) == before[c.pk]  # already under the newest key: untouched

    settings.PANTHEON_ENCRYPTION_KEYS = [new]  # the old key is gone
    assert [p.api_key for p in Provider.objects.filter(pk__in=[a.pk, b.pk, c.pk])] == [
        "key-a",
        "key-b",
        "key-c",
    ]
    assert rotate() == "rotated 0 of 3 stored secrets"  # idempotent


def test_dry_run_reports_and_writes_nothing(settings) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.PANTHEON_ENCRYPTION_KEYS = [old]
    a = provider_create(name="a", base_url="https://a.example/v1", api_key="key-a")
    token = stored_token(a)
    settings.PANTHEON_ENCRYPTION_KEYS = [new, old]

    assert rotate("--dry-run") == "would rotate 1 of 1 stored secrets"
    assert stored_token(a) == token
    assert provider_secrets_rotate().changed == 1


def test_a_secret_no_key_can_read_fails_loudly_and_others_still_rotate(settings) -> None:
    lost, old, new = (Fernet.generate_key().decode() for _ in range(3))
    settings.PANTHEON_ENCRYPTION_KEYS = [lost]
    orphan = provider_create(name="orphan", base_url="https://o.example/v1", api_key="key-o")
    settings.PANTHEON_ENCRYPTION_KEYS = [old]
    ok = provider_create(name="ok", base_url="https://k.example/v1", api_key="key-k")
    orphan_token = stored_token(orphan)

    settings.PANTHEON_ENCRYPTION_KEYS = [new, old]
    with pytest.raises(CommandError, match="orphan"):
        rotate()
    settings.PANTHEON_ENCRYPTION_KEYS = [new]
    assert Provider.objects.get(pk=ok.pk).api_key == "key-k"
    assert stored_token(orphan) == orphan_token


def test_http_tool_secrets_rotate_too(settings) -> None:
    from llm.models import HttpTool

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.PANTHEON_ENCRYPTION_KEYS = [old]
    settings.TOOL_HTTP_ALLOWED_HOSTS = ["tools.example.com"]
    tool = HttpTool(
        name="lookup",
        description="Look it up.",
        parameters={"type": "object", "properties": {}},
        url="https://tools.example.com/lookup",
        secret_header_name="X-Key",
    )
    tool.secret_header_value = "tool-secret"
    tool.save()
    before = tool.secret_header_value_encrypted
    settings.PANTHEON_ENCRYPTION_KEYS = [new, old]

    assert provider_secrets_rotate().changed == 1
    tool.refresh_from_db()
    assert tool.secret_header_value_encrypted != before
    settings.PANTHEON_ENCRYPTION_KEYS = [new]  # the old key can go now
    assert tool.secret_header_value == "tool-secret"
