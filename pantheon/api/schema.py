"""OpenAPI generation. Every operation documents the error responses it can really give, in the
contract's error shape, so a schema-driven client (or fuzzer) is never surprised."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import force_instance
from rest_framework import serializers

from pantheon.api.serializers import MODEL_ID_MAX, ModelIdField, StrictInputSerializer

MODEL_ID_EXAMPLE = "openai/gpt-4o-mini"


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField(child=serializers.JSONField())


class ErrorSerializer(serializers.Serializer):
    """`{"error": {"code", "message", "details"}}` — the body of every error response."""

    error = ErrorDetailSerializer()


class BearerAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes `accounts.authentication.BearerAuthentication` as an HTTP bearer scheme
    (without it drf-spectacular cannot name the scheme and emits no security requirement)."""

    target_class = "accounts.authentication.BearerAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A Pantheon API key `pan_<id>_<secret>` or a Supabase access token.",
        }


class ModelIdFieldSchema(OpenApiSerializerFieldExtension):
    """`ModelIdField` as a plain string with an example, in requests and responses alike. Not an
    enum of today's catalog: staff add and retire models while generated clients live on."""

    target_class = ModelIdField

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        return {
            "type": "string",
            "maxLength": MODEL_ID_MAX,
            "example": MODEL_ID_EXAMPLE,
            "description": "A model id of the catalog; `GET /api/v1/models` lists the models "
            "you can use.",
        }


_DESCRIPTIONS = {
    "400": "Validation error (malformed JSON, invalid or missing fields).",
    "401": "Missing or invalid bearer token.",
    "402": "Not enough credits.",
    "403": "Permission denied.",
    "404": "Not found (or not yours).",
    "406": "Not acceptable: the API answers JSON.",
    "409": "Conflict.",
    "413": "The request body is too large.",
    "415": "Unsupported media type.",
    "422": "Unprocessable request.",
    "429": "Throttled.",
    "500": "Unexpected server error.",
    "502": "The LLM provider failed.",
    "503": "A dependency is unavailable.",
}

_HEADERS = {
    "401": {
        "WWW-Authenticate": {
            "schema": {"type": "string"},
            "description": "Always `Bearer`.",
        }
    },
    "429": {
        "Retry-After": {
            "schema": {"type": "integer"},
            "description": "Seconds to wait before retrying.",
        }
    },
}

_BODY_METHODS = ("POST", "PUT", "PATCH")


class PantheonAutoSchema(AutoSchema):
    """Adds the standard error responses to every operation; views may declare more
    (`extend_schema(responses={409: ErrorSerializer, ...})`). A strict request body states
    `additionalProperties: false`: a field it does not define is refused."""

    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(force_instance(serializer), StrictInputSerializer):
            schema["additionalProperties"] = False
        return schema

    def _error_codes(self) -> list[str]:
        """The error statuses DRF itself can answer for this operation, decided from the
        view's real configuration (not from its name or path conventions)."""
        codes: list[str] = []
        # Any view with an authenticator rejects a bad bearer token with 401 — whatever its
        # permissions; views without one (health, schema, docs) never answer 401.
        if self.view.get_authenticators():
            codes.append("401")
        if self.view.get_throttles():
            codes.append("429")
        if self.method in _BODY_METHODS and self.view.get_parsers():
            codes += ["400", "413", "415"]
        if "{" in self.path:
            codes.append("404")
        if self.method == "GET" and (self._is_list_view() or self.get_override_parameters()):
            codes.append("400")  # filters, pagination and query parameters are validated
        return codes

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        for code in self._error_codes():
            if code not in responses:
                responses[code] = self._get_response_for_code(ErrorSerializer, code)
                responses[code]["description"] = _DESCRIPTIONS[code]
        for code, body in responses.items():
            if code in _DESCRIPTIONS and body.get("description") == "":
                body["description"] = _DESCRIPTIONS[code]
            if code in _HEADERS:
                body.setdefault("headers", {}).update(_HEADERS[code])
        return responses


# (component, property) pairs that are read-only yet sometimes absent. drf-spectacular lists every
# read-only property as required; the postprocessing hook below takes these out again.
_OPTIONAL_PROPERTIES: set[tuple[str, str]] = set()


def optional_property(component: str, name: str) -> None:
    """Declare that `component.name` is left out of some responses (e.g. a turn's `routing`)."""
    _OPTIONAL_PROPERTIES.add((component, name))


def drop_optional_from_required(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: declared optional properties leave their component's `required`."""
    schemas = result.get("components", {}).get("schemas", {})
    for component, name in _OPTIONAL_PROPERTIES:
        required = schemas.get(component, {}).get("required")
        if required and name in required:
            required.remove(name)
    return result


def lib_doc_excludes() -> list[type]:
    """Classes whose docstrings never become a description in the schema: drf-spectacular's own
    list plus our API base classes (their docstrings speak to developers, not API users)."""
    from drf_spectacular.plumbing import get_lib_doc_excludes

    from pantheon.api.views import PaginatedAPIView

    return [*get_lib_doc_excludes(), PaginatedAPIView, StrictInputSerializer]
