"""Provider validation: where a provider's key may be sent (`provider_url_error`, run by
`Provider.clean` for the admin and `provider_create` alike)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from llm.models import Provider, provider_url_error
from llm.services import provider_create


@pytest.mark.parametrize(
    "url",
    [
        "",  # the offline model has none
        "https://openrouter.ai/api/v1",
        "HTTPS://Example.com/v1",
        "http://127.0.0.1:9/v1",
        "http://127.8.9.10/v1",
        "http://localhost:11434/v1",
        "http://LOCALHOST/v1",
        "http://[::1]:8000/v1",
    ],
)
def test_https_and_loopback_http_are_allowed(url: str) -> None:
    assert provider_url_error(url, allow_http=False) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://vllm.example/v1",
        "http://10.0.0.5:8000/v1",
        "http://localhost.evil.example/v1",
        "http://localhost@evil.example/v1",  # userinfo, the host is evil.example
        "http://[::2]/v1",
        "ftp://files.example/v1",
    ],
)
def test_anything_else_is_refused(url: str) -> None:
    assert provider_url_error(url, allow_http=False)


def test_the_operator_may_allow_plain_http_but_nothing_else() -> None:
    assert provider_url_error("http://gpu-box.lan:8000/v1", allow_http=True) is None
    assert provider_url_error("ftp://files.example/v1", allow_http=True)


@pytest.mark.django_db
def test_provider_create_refuses_plain_http_to_another_host(settings: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        provider_create(name="lan", base_url="http://gpu-box.lan:8000/v1", api_key="sk-1")
    assert "base_url" in refused.value.message_dict
    assert not Provider.objects.filter(name="lan").exists()

    settings.PANTHEON_ALLOW_HTTP_PROVIDERS = True
    assert provider_create(name="lan", base_url="http://gpu-box.lan:8000/v1").pk is not None
