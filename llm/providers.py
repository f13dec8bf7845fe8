"""Which gateway serves a model: `gateway_for_model`.

A model's provider is its `ModelConfig.provider`; none means the default provider from the
environment — OpenRouter (`OPENROUTER_BASE_URL`) when `OPENROUTER_API_KEY` is set, else the
offline model. OpenAI clients (each holding an HTTP connection pool) are cached per process by
(base URL, API key), so no client is built per call; timeouts and the retry budget are read from
settings at every call, so changing them needs no cache flush.

A stored provider's config — its API key decrypted — is cached per process by provider id and
reloaded at least every `CATALOG_CACHE_SECONDS`, like the model catalog: a call costs neither a
query nor a decryption, and a provider disabled (or re-keyed) in the admin stops serving within
that bound. The decrypted key stays in this process's memory; `ProviderConfig` keeps it out of
its repr, so it is never logged.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import httpx
import openai
from django.conf import settings

from llm.crypto import SecretUnreadable
from llm.gateway import Gateway, GatewayError, ProviderConfig
from llm.models import ModelConfig, Provider, ProviderKind
from llm.offline_gateway import OFFLINE_PROVIDER, OfflineGateway
from llm.openai_gateway import GatewayPolicy, OpenAICompatibleGateway
from llm.openai_wire import tag_request
from llm.selectors import model_get
from pantheon.process_cache import ProcessCache

DEFAULT_PROVIDER_NAME = "openrouter"
# Some compatible servers (Ollama, LM Studio) need no key, but the SDK refuses an empty one.
_NO_KEY = "not-needed"
_OFFLINE_GATEWAY = OfflineGateway()

_clients: dict[tuple[str, str], openai.OpenAI] = {}
_clients_lock = threading.Lock()


def default_provider() -> ProviderConfig:
    """The provider for models without one: OpenRouter with a key, else the offline model."""
    if not settings.OPENROUTER_API_KEY:
        return OFFLINE_PROVIDER
    return ProviderConfig(
        name=DEFAULT_PROVIDER_NAME,
        kind=ProviderKind.OPENAI_COMPATIBLE.value,
        base_url=settings.OPENROUTER_BASE_URL,
        api_key=settings.OPENROUTER_API_KEY,
    )


def provider_config(provider: Provider) -> ProviderConfig:
    """The plain config of a stored provider (API key decrypted). Raises GatewayError
    (`provider_error`) when the provider is disabled or its key cannot be decrypted."""
    if not provider.is_active:
        raise GatewayError("provider_error", f"Provider {provider.name!r} is disabled.")
    try:
        api_key = provider.api_key
    except SecretUnreadable as exc:
        raise GatewayError(
            "provider_error",
            f"The API key of provider {provider.name!r} cannot be decrypted with "
            "PANTHEON_ENCRYPTION_KEYS.",
        ) from exc
    return ProviderConfig(
        name=provider.name, kind=provider.kind, base_url=provider.base_url, api_key=api_key
    )


@dataclass(frozen=True)
class _Usable:
    """A stored provider as a call sees it: its config, or why it cannot be used."""

    config: ProviderConfig | None
    refusal: str = ""


def _usable_load(provider_id: int) -> _Usable:
    provider = Provider.objects.filter(pk=provider_id).first()
    if provider is None:
        return _Usable(None, f"Provider #{provider_id} does not exist.")
    try:
        return _Usable(provider_config(provider))
    except GatewayError as exc:
        return _Usable(None, exc.message)


_usable_providers: ProcessCache[int, _Usable] = ProcessCache(
    load=_usable_load, seconds_setting="CATALOG_CACHE_SECONDS", max_entries=1_000
)


def provider_config_by_id(provider_id: int) -> ProviderConfig:
    """`provider_config` of the stored provider `provider_id`, from the process's cache (at
    most `CATALOG_CACHE_SECONDS` old). Raises GatewayError (`provider_error`) when it is
    disabled, gone, or its key cannot be decrypted."""
    usable = _usable_providers.get(provider_id)
    if usable.config is None:
        raise GatewayError("provider_error", usable.refusal)
    return usable.config


def gateway_policy() -> GatewayPolicy:
    """Timeouts and retry budget from settings."""
    return GatewayPolicy(
        connect_timeout=settings.LLM_CONNECT_TIMEOUT_SECONDS,
        read_timeout=settings.LLM_READ_TIMEOUT_SECONDS,
        max_retries=settings.LLM_MAX_RETRIES,
        retry_max_wait=settings.LLM_RETRY_MAX_WAIT_SECONDS,
    )


def openai_client(*, base_url: str, api_key: str) -> openai.OpenAI:
    """The process-wide client for this endpoint and key (built once)."""
    key = (base_url, api_key)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                timeout = httpx.Timeout(
                    settings.LLM_READ_TIMEOUT_SECONDS, connect=settings.LLM_CONNECT_TIMEOUT_SECONDS
                )
                client = openai.OpenAI(
                    base_url=base_url,
                    api_key=api_key or _NO_KEY,
                    # Retries are the gateway's own (bounded, Retry-After aware): never stacked.
                    max_retries=0,
                    timeout=timeout,
                    default_headers={"X-Title": "Pantheon"},
                    # The SDK's own httpx client, with the hook that lets a cancel find a
                    # request still waiting for its answer (llm.openai_wire).
                    http_client=openai.DefaultHttpxClient(
                        timeout=timeout, event_hooks={"request": [tag_request]}
                    ),
                )
                _clients[key] = client
    return client


def clear_client_cache() -> None:
    """Forget (and close) every cached client — for tests that repoint the default provider."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


def gateway_for_provider(config: ProviderConfig) -> Gateway:
    """The gateway for a provider config."""
    if config.kind == ProviderKind.OFFLINE:
        return _OFFLINE_GATEWAY if config == OFFLINE_PROVIDER else OfflineGateway(config)
    client = openai_client(base_url=config.base_url, api_key=config.api_key)
    return OpenAICompatibleGateway(config, client, gateway_policy())


def gateway_for_model(model: ModelConfig | str) -> Gateway:
    """The gateway that serves `model` (a ModelConfig, or a model id looked up in the catalog;
    an id not in the catalog goes to the default provider). No query and no decryption once
    the process has the model's provider (see the module's docstring).

    Raises GatewayError(`provider_error`) when the model's provider is disabled or its stored
    key cannot be decrypted, so callers handle it like any failed call.
    """
    if isinstance(model, str):
        model = model_get(model) or model
    if isinstance(model, str) or model.provider_id is None:
        return gateway_for_provider(default_provider())
    return gateway_for_provider(provider_config_by_id(model.provider_id))
