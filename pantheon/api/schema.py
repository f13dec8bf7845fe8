"""OpenAPI generation. Every operation documents the error responses it can really give, in the
contract's error shape, so a schema-driven client (or fuzzer) is never surprised."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField(child=serializers.JSONField())


class ErrorSerializer(serializers.Serializer):
    """`{"error": {"code", "message", "details"}}` — the body of every error response."""

    error = ErrorDetailSerializer()


_DESCRIPTIONS = {
    "400": "Validation error (malformed JSON, invalid or missing fields).",
    "401": "Missing or invalid bearer token.",
    "402": "Not enough credits.",
    "403": "Permission denied.",
    "404": "Not found (or not yours).",
    "405": "Method not allowed.",
    "409": "Conflict.",
    "415": "Unsupported media type.",
    "422": "Unprocessable request.",
    "429": "Throttled.",
    "502": "The LLM provider failed.",
    "503": "A dependency is unavailable.",
}


class PantheonAutoSchema(AutoSchema):
    """Adds the standard error responses to every operation; views may declare more
    (`extend_schema(responses={409: ErrorSerializer, ...})`)."""

    def _error_codes(self) -> list[str]:
        codes = ["405", "429"]
        if self.view.get_authenticators() if hasattr(self.view, "get_authenticators") else False:
            codes.append("401")
        if self.method in ("POST", "PUT", "PATCH"):
            codes += ["400", "415"]
        if "{" in self.path:
            codes.append("404")
        if self.method == "GET" and self._is_list_view():
            codes.append("400")
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
        return responses
