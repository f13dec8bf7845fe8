"""Admin for providers and the model catalog.

A provider's API key can be set (a password field that never renders a value) but is never
displayed — not even masked: the page only says whether a key is set.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from llm.models import ModelConfig, Provider, ProviderKind


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
        help_text="Stored encrypted. Leave empty to keep the current key.",
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
        return cleaned

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
class ProviderAdmin(admin.ModelAdmin):
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

    @admin.display(boolean=True, description="API key set")
    def key_set(self, obj: Provider) -> bool:
        return obj.has_api_key


@admin.register(ModelConfig)
class ModelConfigAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "display_name",
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
