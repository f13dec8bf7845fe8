"""The API's JSON parser: DRF's, made safe for any body a client can send."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import parsers, status
from rest_framework.exceptions import APIException, ParseError

# DRF imports parser classes while `rest_framework.views` is still loading: this module must not
# import anything that imports the views module (such as pantheon.api.exceptions).


class RequestTooLarge(APIException):
    """The request body is larger than `DATA_UPLOAD_MAX_MEMORY_SIZE`."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser reads the stream directly, so Django's `DATA_UPLOAD_MAX_MEMORY_SIZE`
    (only enforced by `request.body`) never applies: check it here (413). Deeply nested JSON
    makes `json` raise RecursionError, which is not a ValueError: report it as malformed (400)
    instead of letting it become a 500."""

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: dict | None = None
    ) -> Any:
        request = (parser_context or {}).get("request")
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if request is not None and limit is not None:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                raise RequestTooLarge()
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply.") from exc
