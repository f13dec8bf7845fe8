"""Which gateway serves a model: the default provider, stored providers, the client cache."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from llm.gateway import ChatMessage, GatewayError, GatewayRequest
from llm.models import ModelConfig
from llm.offline_gateway import OfflineGateway
from llm.openai_gateway import OpenAICompatibleGateway
from llm.providers import clear_client_cache, gateway_for_model
from llm.services import provider_create
from testing.stub_llm import LlmStub

pytestmark = pytest.mark.django_db

MODEL = "openai/gpt-4o-mini"


@pytest.fixture(autouse=True)
def _fresh_clients():
    clear_client_cache()
    yield
    clear_client_cache()


def test_without_a_key_the_default_provider_is_offline(settings) -> None:
    settings.OPENROUTER_API_KEY = ""
    gateway = gateway_for_model(MODEL)
    assert isinstance(gateway, OfflineGateway)
    assert gateway.provider.kind == "offline"


def test_with_a_key_the_default_provider_is_openrouter(settings) -> None:
    settings.OPENROUTER_API_KEY = "sk-or-test"
    settings.OPENROUTER_BASE_URL = "https://openrouter.example/api/v1"
    gateway = gateway_for_model(ModelConfig.objects.get(pk=MODEL))
    assert isinstance(gateway, OpenAICompatibleGateway)
    assert gateway.provider.name == "openrouter"
    assert str(gateway.client.base_url) == "https://openrouter.example/api/v1/"
    assert gateway.client.api_key == "sk-or-test"
    assert gateway.client.max_retries == 0  # the gateway's retries only, never stacked


def test_clients_are_cached_per_endpoint_and_key(settings) -> None:
    settings.OPENROUTER_API_KEY = "sk-one"
    first = gateway_for_model(MODEL)
    second = gateway_for_model("anthropic/claude-sonnet-4")
    assert first.client is second.client
    settings.OPENROUTER_API_KEY = "sk-two"
    assert gateway_for_model(MODEL).client is not first.client


def test_settings_drive_timeouts_and_retries(settings) -> None:
    settings.OPENROUTER_API_KEY = "sk"
    settings.LLM_CONNECT_TIMEOUT_SECONDS = 1.5
    settings.LLM_READ_TIMEOUT_SECONDS = 7.0
    settings.LLM_MAX_RETRIES = 4
    settings.LLM_RETRY_MAX_WAIT_SECONDS = 3.0
    policy = gateway_for_model(MODEL).policy
    assert (policy.connect_timeout, policy.read_timeout) == (1.5, 7.0)
    assert (policy.max_retries, policy.retry_max_wait) == (4, 3.0)


def test_unknown_model_id_goes_to_the_default_provider(settings) -> None:
    settings.OPENROUTER_API_KEY = ""
    assert isinstance(gateway_for_model("nobody/unknown-model"), OfflineGateway)


def test_a_models_own_provider_is_used_with_its_decrypted_key(llm_stub: LlmStub, settings) -> None:
    settings.OPENROUTER_API_KEY = ""  # the default would be offline: the provider must win
    provider = provider_create(name="local-vllm", base_url=llm_stub.url, api_key="sk-local-123")
    ModelConfig.objects.filter(pk=MODEL).update(provider=provider)

    gateway = gateway_for_model(MODEL)
    assert isinstance(gateway, OpenAICompatibleGateway)
    assert gateway.provider.name == "local-vllm"
    request = GatewayRequest(model=MODEL, messages=(ChatMessage(role="user", content="hi"),))
    assert gateway.complete(request).text == "stub reply to: hi"
    assert llm_stub.requests[0].headers["authorization"] == "Bearer sk-local-123"


def test_an_offline_provider_serves_offline() -> None:
    provider = provider_create(name="offline-demo", kind="offline")
    ModelConfig.objects.filter(pk=MODEL).update(provider=provider)
    gateway = gateway_for_model(MODEL)
    assert isinstance(gateway, OfflineGateway)
    assert gateway.provider.name == "offline-demo"


def test_a_disabled_provider_is_a_provider_error() -> None:
    provider = provider_create(name="off", base_url="https://x.example/v1", is_active=False)
    ModelConfig.objects.filter(pk=MODEL).update(provider=provider)
    with pytest.raises(GatewayError) as caught:
        gateway_for_model(MODEL)
    assert caught.value.kind == "provider_error"


def test_an_undecryptable_key_is_a_provider_error(settings) -> None:
    provider = provider_create(name="p", base_url="https://x.example/v1", api_key="sk-secret")
    ModelConfig.objects.filter(pk=MODEL).update(provider=provider)
    settings.PANTHEON_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(GatewayError) as caught:
        gateway_for_model(MODEL)
    assert caught.value.kind == "provider_error"
    assert "sk-secret" not in caught.value.message
