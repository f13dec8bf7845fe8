"""The per-process model catalog and provider configs (`llm.selectors.model_get`,
`llm.providers`): staff edits in the admin take effect within CATALOG_CACHE_SECONDS, and a
call needs neither a query nor a decryption once the process has its provider."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.test import Client

from accounts.models import User
from llm.gateway import GatewayError
from llm.models import ModelConfig, Provider
from llm.openai_gateway import OpenAICompatibleGateway
from llm.providers import gateway_for_model
from llm.selectors import model_get
from llm.services import provider_create
from testing.clock import ProcessClock

pytestmark = pytest.mark.django_db

MODEL = "openai/gpt-4o-mini"
BOUND = 30  # CATALOG_CACHE_SECONDS' default


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(email="staff@example.com", password="x"))
    return client


@pytest.fixture
def provider() -> Provider:
    """MODEL served by its own provider."""
    provider = provider_create(name="vllm", base_url="https://vllm.example/v1", api_key="sk-1")
    ModelConfig.objects.filter(pk=MODEL).update(provider=provider)
    return provider


def disable_in_admin(staff: Client, provider: Provider) -> None:
    response = staff.post(
        f"/admin/llm/provider/{provider.pk}/change/",
        {"name": provider.name, "kind": provider.kind, "base_url": provider.base_url},
    )  # `is_active` left unticked
    assert response.status_code == 302, response.content.decode()[:2000]
    assert not Provider.objects.get(pk=provider.pk).is_active


def test_a_provider_disabled_in_the_admin_stops_serving_within_the_bound(
    staff: Client, provider: Provider, process_clock: ProcessClock
) -> None:
    assert gateway_for_model(MODEL).provider.name == "vllm"
    disable_in_admin(staff, provider)

    process_clock.advance(BOUND - 0.1)  # not before this process reloads it
    assert gateway_for_model(MODEL).provider.name == "vllm"
    process_clock.advance(0.1)
    with pytest.raises(GatewayError) as caught:
        gateway_for_model(MODEL)
    assert caught.value.kind == "provider_error" and "disabled" in caught.value.message


def test_without_the_cache_a_disabled_provider_is_refused_at_once(
    settings: Any, staff: Client, provider: Provider
) -> None:
    settings.CATALOG_CACHE_SECONDS = 0
    assert gateway_for_model(MODEL).provider.name == "vllm"
    disable_in_admin(staff, provider)
    with pytest.raises(GatewayError):
        gateway_for_model(MODEL)


def test_a_new_model_is_seen_after_the_refresh(
    staff: Client, provider: Provider, process_clock: ProcessClock
) -> None:
    assert model_get("new/model-1") is None
    response = staff.post(
        "/admin/llm/modelconfig/add/",
        {
            "id": "new/model-1",
            "display_name": "New",
            "context_window": "32000",
            "max_output_tokens": "4000",
            "supports_structured_output": "on",
            "is_active": "on",
            "provider": str(provider.pk),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert model_get("new/model-1") is None
    process_clock.advance(BOUND)
    model = model_get("new/model-1")
    assert model is not None and model.context_window == 32_000
    assert gateway_for_model("new/model-1").provider.name == "vllm"


def test_a_cached_provider_costs_no_query_and_no_decryption(
    settings: Any, provider: Provider, django_assert_num_queries: Any
) -> None:
    model = ModelConfig.objects.get(pk=MODEL)
    gateway_for_model(MODEL)  # loads the catalog and the provider, decrypts its key once
    # A key no configured Fernet key decrypts: only a fresh decryption would notice.
    settings.PANTHEON_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with django_assert_num_queries(0):
        gateway = gateway_for_model(model)
        assert gateway_for_model(MODEL).provider == gateway.provider
    assert isinstance(gateway, OpenAICompatibleGateway)
    assert gateway.client.api_key == "sk-1"


def test_the_change_forms_say_when_a_save_takes_effect(
    staff: Client, provider: Provider, settings: Any
) -> None:
    for url in (
        f"/admin/llm/provider/{provider.pk}/change/",
        "/admin/llm/provider/add/",
        f"/admin/llm/modelconfig/{MODEL}/change/",
    ):
        html = staff.get(url).content.decode()
        assert "take effect within 30 seconds" in html, url
        assert html.index("catalog-freshness") < html.index('name="_save"')
    settings.CATALOG_CACHE_SECONDS = 0
    html = staff.get(f"/admin/llm/provider/{provider.pk}/change/").content.decode()
    assert "take effect at once" in html
