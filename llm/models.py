"""The model catalog, the providers that serve it, and staff-defined HTTP tools."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from llm.crypto import decrypt_secret, encrypt_secret
from llm.tools.schema import http_tool_url_error, parameters_schema_errors, url_host

_LOOPBACK_NAMES = frozenset({"localhost"})


def _is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1: a host whose traffic never leaves the machine."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def provider_url_error(url: str, *, allow_http: bool) -> str | None:
    """Why `url` may not be a provider's base URL, or None when it may.

    A provider's API key travels with every request to it, so it must go over TLS: https only,
    except to a loopback host (a local vLLM, Ollama or LM Studio, the test suite's stub) or when
    the operator allows plain http everywhere (`PANTHEON_ALLOW_HTTP_PROVIDERS`, e.g. a private
    network)."""
    if not url:
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "https":
        return None
    if scheme == "http" and (allow_http or _is_loopback(parts.hostname or "")):
        return None
    return (
        "Use an https:// URL: plain http is allowed only to a loopback host (localhost, "
        "127.0.0.0/8, ::1) unless PANTHEON_ALLOW_HTTP_PROVIDERS is set."
    )


class ProviderKind(models.TextChoices):
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible API"
    OFFLINE = "offline", "Offline model (no network)"


class Provider(models.Model):
    """An LLM endpoint: any OpenAI-compatible API (OpenRouter, OpenAI, vLLM, Ollama, LM Studio)
    or the built-in offline model. The API key is stored only as a Fernet token
    (`api_key_encrypted`); read and set it through the `api_key` property."""

    name = models.CharField(max_length=64, unique=True)
    kind = models.CharField(
        max_length=32, choices=ProviderKind.choices, default=ProviderKind.OPENAI_COMPATIBLE
    )
    base_url = models.URLField(max_length=500, blank=True, default="")
    # Never plaintext: a Fernet token under PANTHEON_ENCRYPTION_KEYS (see llm.crypto).
    api_key_encrypted = models.TextField(blank=True, default="", editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "llm_providers"
        ordering = ("name",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind="offline") | ~models.Q(base_url=""),
                name="llm_providers_base_url_required",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # Runs in `full_clean`, so the admin's form and `llm.services.provider_create` both
        # refuse a URL the key must not travel to.
        error = provider_url_error(self.base_url, allow_http=settings.PANTHEON_ALLOW_HTTP_PROVIDERS)
        if error:
            raise ValidationError({"base_url": error})

    @property
    def api_key(self) -> str:
        """The decrypted API key ("" when none is set). Raises `SecretUnreadable` when no
        configured key decrypts it."""
        return decrypt_secret(self.api_key_encrypted) if self.api_key_encrypted else ""

    @api_key.setter
    def api_key(self, plaintext: str) -> None:
        self.api_key_encrypted = encrypt_secret(plaintext) if plaintext else ""

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key_encrypted)


class ModelConfig(models.Model):
    """One model a room's agents may use, identified by its OpenRouter-style id
    (`openai/gpt-4o-mini`). The context window drives the context budget. `provider` is where
    calls go; empty means the default provider from the environment (OpenRouter with
    `OPENROUTER_API_KEY`, or the offline model when no key is configured)."""

    id = models.CharField(primary_key=True, max_length=128)
    display_name = models.CharField(max_length=128, blank=True, default="")
    context_window = models.PositiveIntegerField()
    max_output_tokens = models.PositiveIntegerField()
    supports_structured_output = models.BooleanField(default=True)
    is_active = models.BooleanField(default=True)
    provider = models.ForeignKey(
        Provider,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="models",
        help_text="Empty: the default provider from the environment.",
    )

    class Meta:
        db_table = "llm_models"
        ordering = ("id",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(context_window__gt=0), name="llm_models_context_window_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(max_output_tokens__gt=0)
                & models.Q(max_output_tokens__lte=models.F("context_window")),
                name="llm_models_max_output_within_window",
            ),
        ]

    def __str__(self) -> str:
        return self.id


def _empty_parameters() -> dict[str, object]:
    return {"type": "object", "properties": {}}


class HttpMethod(models.TextChoices):
    POST = "POST", "POST (arguments as a JSON body)"
    GET = "GET", "GET (arguments as query parameters)"


class HttpTool(models.Model):
    """A staff-defined agent tool that calls a URL (product.md, "Agent tools"). Its host must be
    in `TOOL_HTTP_ALLOWED_HOSTS`, checked when it is saved and again at every call. The optional
    secret header's value is stored only as a Fernet token (`secret_header_value_encrypted`,
    like a provider's API key); read and set it through `secret_header_value`."""

    name = models.SlugField(
        max_length=64,
        unique=True,
        help_text="What the model calls it and agents list in `tools`: letters, digits, - and _.",
    )
    description = models.TextField(help_text="What the tool does, for the model.")
    parameters = models.JSONField(
        default=_empty_parameters,
        help_text='The arguments\' JSON schema: {"type": "object", "properties": {...}}.',
    )
    url = models.URLField(max_length=500)
    method = models.CharField(max_length=8, choices=HttpMethod.choices, default=HttpMethod.POST)
    secret_header_name = models.CharField(
        max_length=128, blank=True, default="", help_text="e.g. Authorization or X-Api-Key."
    )
    # Never plaintext: a Fernet token under PANTHEON_ENCRYPTION_KEYS (see llm.crypto).
    secret_header_value_encrypted = models.TextField(blank=True, default="", editable=False)
    timeout_seconds = models.PositiveSmallIntegerField(
        default=10, help_text="At most TOOL_TIMEOUT_SECONDS."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "llm_http_tools"
        ordering = ("name",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(timeout_seconds__gt=0), name="llm_http_tools_timeout_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(method__in=["POST", "GET"]), name="llm_http_tools_method_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # Runs in `full_clean` (the admin's form): a host off the allowlist, a schema the
        # arguments cannot be checked against, a timeout over the global one are refused.
        errors: dict[str, str] = {}
        if self.url and (error := http_tool_url_error(self.url)):
            errors["url"] = error
        if schema_errors := parameters_schema_errors(self.parameters):
            errors["parameters"] = " ".join(schema_errors)
        if self.timeout_seconds and self.timeout_seconds > settings.TOOL_TIMEOUT_SECONDS:
            errors["timeout_seconds"] = (
                f"At most TOOL_TIMEOUT_SECONDS ({settings.TOOL_TIMEOUT_SECONDS:g} seconds)."
            )
        if self.secret_header_value_encrypted and not self.secret_header_name:
            errors["secret_header_name"] = "Name the header the secret is sent in."
        if errors:
            raise ValidationError(errors)

    @property
    def host(self) -> str:
        return url_host(self.url)

    @property
    def secret_header_value(self) -> str:
        """The decrypted secret ("" when none is set). Raises `SecretUnreadable` when no
        configured key decrypts it."""
        token = self.secret_header_value_encrypted
        return decrypt_secret(token) if token else ""

    @secret_header_value.setter
    def secret_header_value(self, plaintext: str) -> None:
        self.secret_header_value_encrypted = encrypt_secret(plaintext) if plaintext else ""

    @property
    def has_secret(self) -> bool:
        return bool(self.secret_header_value_encrypted)
