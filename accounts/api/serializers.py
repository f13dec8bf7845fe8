"""Request and response bodies of the accounts API."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import ApiKey
from pantheon.api.serializers import (
    CreditsSerializer,
    SpendingWarningSerializer,
    StrictCharField,
    StrictInputSerializer,
)


class MeSerializer(serializers.Serializer):
    """The authenticated caller, with their credits."""

    id = serializers.UUIDField()
    email = serializers.EmailField()
    display_name = serializers.CharField()
    credits = CreditsSerializer(required=False)
    spending_warnings = SpendingWarningSerializer(many=True, required=False)


class ApiKeySerializer(serializers.ModelSerializer):
    """An API key as its owner sees it: never the secret nor its hash."""

    class Meta:
        model = ApiKey
        fields = ("id", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at")
        read_only_fields = fields


class ApiKeyCreatedSerializer(ApiKeySerializer):
    """A new key, with the full token in `key` — shown this once, never again."""

    key = serializers.SerializerMethodField()

    class Meta(ApiKeySerializer.Meta):
        fields = (*ApiKeySerializer.Meta.fields, "key")
        read_only_fields = fields

    @extend_schema_field(
        serializers.CharField(help_text="The bearer token `pan_<id>_<secret>`; store it now.")
    )
    def get_key(self, obj: ApiKey) -> str:
        return self.context["key"]


class ApiKeyCreateSerializer(StrictInputSerializer):
    """A name for the new key, and optionally when it stops working."""

    name = StrictCharField(max_length=100)
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Must be in the future; omit for no expiry."
    )
