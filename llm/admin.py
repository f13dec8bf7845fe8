"""Admin for providers, the model catalog and HTTP tools.

A provider's API key can be set (a password field that never renders a value) but is never
displayed — not even masked, whatever the staff user's permissions: the page only says whether a
key is set. A stored key goes only to the address it was entered for: changing the base URL
needs the key again.

An HTTP tool's secret header value is handled like a provider key: write-only, stored
encrypted, kept when the field is left empty, asked for again when the tool's host changes.

Server processes cache providers, the catalog and HTTP tools (`CATALOG_CACHE_SECONDS`): the
change forms say how soon a saved change takes effect.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from llm.models import HttpTool, ModelConfig, Provider, ProviderKind
from llm.tools.schema import url_host
from pantheon.admin import SafeLookupsMixin

# Form-only fields that write the key. A view-only change page renders every listed field
# read-only by looking its name up on the provider, and `Provider.api_key` decrypts: these must
# never be listed there.
_KEY_INPUT_FIELDS = ("api_key", "clear_api_key")


class CatalogFreshnessMixin:
    """A change form whose saves reach the server processes within `CATALOG_CACHE_SECONDS`,
    and says so next to its save button."""

    change_form_template = "admin/llm/catalog_change_form.html"

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> HttpResponse:
        context["catalog_cache_seconds"] = settings.CATALOG_CACHE_SECONDS
        return super().render_change_form(request, context, *args, **kwargs)  # type: ignore[misc]


class ProviderForm(forms.ModelForm):
    base_url = forms.URLField(
        label="Base URL",
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text="e.g. https://openrouter.ai/api/v1 — empty for the offline model.",
    )
    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=(
            "Stored encrypted. Leave empty to keep the current key (not when the base URL "
            "changes: the key is then needed again)."
        ),
    )
    clear_api_key = forms.BooleanField(
        label="Remove the stored API key", required=False, initial=False
    )

    class Meta:
        model = Provider
        fields = ("name", "kind", "base_url", "is_active")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("kind") == ProviderKind.OPENAI_COMPATIBLE and not cleaned.get("base_url"):
            self.add_error("base_url", "An OpenAI-compatible provider needs a base URL.")
        if cleaned.get("api_key") and cleaned.get("clear_api_key"):
            self.add_error("clear_api_key", "Either set a new key or remove it, not both.")
        if self._would_send_stored_key_elsewhere(cleaned):
            self.add_error(
                "api_key",
                "The base URL changed: enter the API key again (or remove it). A stored key is "
                "never sent to another address than the one it was entered for.",
            )
        return cleaned

    def _would_send_stored_key_elsewhere(self, cleaned: dict[str, Any]) -> bool:
        # `self.instance` still holds the stored row here (the form's values are copied onto it
        # after `clean`), so its key is the one that would follow the new URL.
        return (
            self.instance.pk is not None
            and self.instance.has_api_key
            and "base_url" in self.changed_data
            and not cleaned.get("api_key")
            and not cleaned.get("clear_api_key")
        )

    def save(self, commit: bool = True) -> Provider:
        provider: Provider = super().save(commit=False)
        if self.cleaned_data.get("clear_api_key"):
            provider.api_key = ""
        elif self.cleaned_data.get("api_key"):
            provider.api_key = self.cleaned_data["api_key"]  # the setter encrypts
        if commit:
            provider.save()
        return provider


@admin.register(Provider)
class ProviderAdmin(CatalogFreshnessMixin, SafeLookupsMixin, admin.ModelAdmin):
    form = ProviderForm
    list_display = ("name", "kind", "base_url", "key_set", "is_active", "updated_at")
    list_filter = ("kind", "is_active")
    search_fields = ("name", "base_url")
    readonly_fields = ("key_set", "created_at", "updated_at")
    fields = (
        "name",
        "kind",
        "base_url",
        "is_active",
        "key_set",
        "api_key",
        "clear_api_key",
        "created_at",
        "updated_at",
    )

    def get_fields(self, request: HttpRequest, obj: Provider | None = None) -> Any:
        fields = super().get_fields(request, obj)
        if obj is not None and not self.has_change_permission(request, obj):
            return [name for name in fields if name not in _KEY_INPUT_FIELDS]
        return fields

    @admin.display(boolean=True, description="API key set")
    def key_set(self, obj: Provider) -> bool:
        return obj.has_api_key


@admin.register(ModelConfig)
class ModelConfigAdmin(CatalogFreshnessMixin, SafeLookupsMixin, admin.ModelAdmin):
    # What staff scan (the id names the model); the display name is on the model's page.
    list_display = (
        "id",
        "provider",
        "context_window",
        "max_output_tokens",
        "supports_structured_output",
        "is_active",
    )
    list_editable = ("is_active",)
    list_filter = ("is_active", "supports_structured_output", "provider")
    list_select_related = ("provider",)
    search_fields = ("id", "display_name")

    def get_readonly_fields(self, request: HttpRequest, obj: ModelConfig | None = None) -> Any:
        # The id is the primary key other tables refer to: fixed once created.
        return ("id",) if obj is not None else ()


# Form-only fields that write an HTTP tool's secret: never listed on a view-only page (see
# `_KEY_INPUT_FIELDS`).
_SECRET_INPUT_FIELDS = ("secret_header_value", "clear_secret")


class HttpToolForm(forms.ModelForm):
    url = forms.URLField(
        label="URL",
        max_length=500,
        assume_scheme="https",
        help_text="Its host must be listed in TOOL_HTTP_ALLOWED_HOSTS.",
    )
    secret_header_value = forms.CharField(
        label="Secret header value",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=(
            "Sent in the header named above with every call. Stored encrypted, never shown. "
            "Leave empty to keep the current value (not when the host changes: it is then "
            "needed again)."
        ),
    )
    clear_secret = forms.BooleanField(
        label="Remove the stored secret", required=False, initial=False
    )

    class Meta:
        model = HttpTool
        fields = (
            "name",
            "description",
            "parameters",
            "url",
            "method",
            "secret_header_name",
            "timeout_seconds",
            "enabled",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        seconds = settings.CATALOG_CACHE_SECONDS
        self.fields["enabled"].help_text = (
            f"Saved changes reach every server process within {seconds} seconds "
            "(CATALOG_CACHE_SECONDS)."
            if seconds
            else "Saved changes take effect at once (CATALOG_CACHE_SECONDS is 0)."
        )

    def clean_name(self) -> str:
        from llm.tools.registry import static_tool_names

        name: str = self.cleaned_data["name"]
        if name in static_tool_names():
            raise forms.ValidationError(f"{name!r} is the name of a built-in or installed tool.")
        return name

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        secret = cleaned.get("secret_header_value")
        if secret and cleaned.get("clear_secret"):
            self.add_error("clear_secret", "Either set a new secret or remove it, not both.")
        if secret and not cleaned.get("secret_header_name"):
            self.add_error("secret_header_name", "Name the header the secret is sent in.")
        if self._would_send_stored_secret_elsewhere(cleaned):
            self.add_error(
                "secret_header_value",
                "The host changed: enter the secret again (or remove it). A stored secret is "
                "never sent to another host than the one it was entered for.",
            )
        return cleaned

    def _would_send_stored_secret_elsewhere(self, cleaned: dict[str, Any]) -> bool:
        # `self.instance` still holds the stored row here (see ProviderForm).
        return (
            self.instance.pk is not None
            and self.instance.has_secret
            and "url" in cleaned
            and url_host(cleaned["url"]) != url_host(self.instance.url)
            and not cleaned.get("secret_header_value")
            and not cleaned.get("clear_secret")
        )

    def _post_clean(self) -> None:
        # The model's `clean` (host allowlist, schema, timeout) sees the secret state the save
        # will write.
        if self.cleaned_data.get("clear_secret"):
            self.instance.secret_header_value = ""
        elif self.cleaned_data.get("secret_header_value"):
            self.instance.secret_header_value = self.cleaned_data["secret_header_value"]
        super()._post_clean()


@admin.register(HttpTool)
class HttpToolAdmin(SafeLookupsMixin, admin.ModelAdmin):
    form = HttpToolForm
    list_display = ("name", "host", "method", "enabled", "secret_set", "updated_at")
    list_filter = ("enabled", "method")
    search_fields = ("name", "description", "url")
    readonly_fields = ("secret_set", "created_at", "updated_at")
    fields = (
        "name",
        "description",
        "parameters",
        "url",
        "method",
        "timeout_seconds",
        "enabled",
        "secret_header_name",
        "secret_set",
        "secret_header_value",
        "clear_secret",
        "created_at",
        "updated_at",
    )

    def get_fields(self, request: HttpRequest, obj: HttpTool | None = None) -> Any:
        fields = super().get_fields(request, obj)
        if obj is not None and not self.has_change_permission(request, obj):
            return [name for name in fields if name not in _SECRET_INPUT_FIELDS]
        return fields

    @admin.display(description="Host")
    def host(self, obj: HttpTool) -> str:
        return obj.host

    @admin.display(boolean=True, description="Secret set")
    def secret_set(self, obj: HttpTool) -> bool:
        return obj.has_secret
