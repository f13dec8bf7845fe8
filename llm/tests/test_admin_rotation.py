"""Key rotation from the console: a provider whose API key was set in the admin under key A still
works after `rotate_secrets` under [B, A] and the removal of A — a turn through it reaches the
provider with the same Authorization header."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.contrib.admin.utils import quote
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from llm.crypto import SecretUnreadable
from llm.models import ModelConfig, Provider
from testing import factories
from usage.services import credits_grant

pytestmark = pytest.mark.postgres

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
SECRET = "sk-rotated-through-the-console-7"
MODEL = "openai/gpt-4o-mini"


@pytest.fixture
def staff(db) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(factories.make_user(is_staff=True, is_superuser=True))
    return client


def _turn_through(model_id: str) -> tuple[int, dict]:
    user, key = factories.make_api_key()
    credits_grant(user=user, amount_micro=1_000_000_000, idempotency_key=f"rot-{user.pk}")
    room = factories.make_room(owner=user)
    factories.make_agent(room, handle="ada", model_id=model_id)
    session = factories.make_session(room)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.post(f"/api/v1/sessions/{session.pk}/turns", {"input": "ping"}, format="json")
    return response.status_code, response.json()


def test_a_provider_set_in_the_admin_survives_rotation(staff: Client, settings, llm_stub) -> None:  # type: ignore[no-untyped-def]
    settings.PANTHEON_ENCRYPTION_KEYS = [KEY_A]
    created = staff.post(
        "/admin/llm/provider/add/",
        {
            "name": "self-hosted",
            "kind": "openai_compatible",
            "base_url": llm_stub.url,
            "is_active": "on",
            "api_key": SECRET,
        },
    )
    assert created.status_code == 302, created.content.decode()[:2000]
    provider = Provider.objects.get(name="self-hosted")
    model = ModelConfig.objects.get(pk=MODEL)
    bound = staff.post(
        f"/admin/llm/modelconfig/{quote(MODEL)}/change/",
        {
            "display_name": model.display_name,
            "context_window": model.context_window,
            "max_output_tokens": model.max_output_tokens,
            "supports_structured_output": "on",
            "is_active": "on",
            "provider": provider.pk,
        },
    )
    assert bound.status_code == 302, bound.content.decode()[:2000]
    token_under_a = provider.api_key_encrypted

    # Without A, nothing decrypts the stored key: the rotation below is what keeps it alive.
    settings.PANTHEON_ENCRYPTION_KEYS = [KEY_B]
    with pytest.raises(SecretUnreadable):
        Provider.objects.get(pk=provider.pk).api_key

    settings.PANTHEON_ENCRYPTION_KEYS = [KEY_B, KEY_A]
    call_command("rotate_secrets")
    settings.PANTHEON_ENCRYPTION_KEYS = [KEY_B]

    provider.refresh_from_db()
    assert provider.api_key_encrypted != token_under_a
    assert provider.api_key == SECRET
    page = staff.get(f"/admin/llm/provider/{provider.pk}/change/").content.decode()
    assert SECRET not in page and provider.api_key_encrypted not in page

    status, body = _turn_through(MODEL)

    assert status == 201, body
    assert body["status"] == "completed"
    assert len(llm_stub.requests) == 1
    assert llm_stub.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert llm_stub.requests[0].model == MODEL
