"""Pagination for every list: `{"next", "previous", "results"}` plus `count` where it is cheap.

DRF silently ignores a malformed `limit` or `offset` (and a huge offset reaches the database as
an out-of-range number). Here they are validated: a bad value is a 400 `validation_error` naming
the parameter, and the schema states the accepted ranges, so what the schema calls invalid is
always rejected."""

from __future__ import annotations

import re
from typing import Any

from django.utils.dateparse import parse_datetime
from rest_framework import pagination
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request

_DIGITS = re.compile(r"[0-9]{1,12}")
MAX_OFFSET = 2**31 - 1


def _query_int(request: Request, name: str, *, minimum: int, maximum: int) -> int | None:
    """The integer query parameter `name` in [minimum, maximum], None when absent."""
    if name not in request.query_params:
        return None
    raw = request.query_params[name]
    if _DIGITS.fullmatch(raw) is None or not minimum <= int(raw) <= maximum:
        raise ValidationError({name: [f"Must be an integer from {minimum} to {maximum}."]})
    return int(raw)


def _integer_parameter(
    name: str, description: str, minimum: int, maximum: int, default: int | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if default is not None:
        schema["default"] = default
    return {
        "name": name,
        "required": False,
        "in": "query",
        "description": description,
        "schema": schema,
    }


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    default_limit = 50
    max_limit = 200

    def get_limit(self, request: Request) -> int | None:
        limit = _query_int(request, self.limit_query_param, minimum=1, maximum=self.max_limit)
        return self.default_limit if limit is None else limit

    def get_offset(self, request: Request) -> int:
        offset = _query_int(request, self.offset_query_param, minimum=0, maximum=MAX_OFFSET)
        return offset or 0

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            _integer_parameter(
                self.limit_query_param,
                "Number of results to return per page.",
                1,
                self.max_limit,
                self.default_limit,
            ),
            _integer_parameter(
                self.offset_query_param,
                "The initial index from which to return the results.",
                0,
                MAX_OFFSET,
                0,
            ),
        ]


class MessageCursorPagination(pagination.CursorPagination):
    """Messages grow without bound: a cursor keeps every page one indexed range scan."""

    page_size = 50
    max_page_size = 200
    page_size_query_param = "limit"
    ordering = ("created_at", "id")

    def decode_cursor(self, request: Request) -> pagination.Cursor | None:
        """DRF answers a malformed cursor with 404, as if the session were missing: it is a bad
        query parameter, 400 naming `cursor`. The position inside must be a `created_at`."""
        if request.query_params.get(self.cursor_query_param) == "":
            raise self._invalid_cursor()  # an empty parameter is never ignored
        try:
            cursor = super().decode_cursor(request)
        except NotFound as exc:
            raise self._invalid_cursor() from exc
        if cursor is not None and cursor.position is not None:
            try:
                parsed = parse_datetime(cursor.position)
            except ValueError:  # well-formed but impossible, such as month 13
                parsed = None
            if parsed is None:
                raise self._invalid_cursor()
        return cursor

    def _invalid_cursor(self) -> ValidationError:
        return ValidationError({self.cursor_query_param: [str(self.invalid_cursor_message)]})

    def get_page_size(self, request: Request) -> int:
        size = _query_int(
            request, self.page_size_query_param, minimum=1, maximum=self.max_page_size
        )
        return self.page_size if size is None else size

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.cursor_query_param:
                parameter["schema"] = {"type": "string", "minLength": 1}
                parameter["description"] = (
                    "An opaque token: the `cursor` of a `next` or `previous` link. "
                    "Any other value is a 400 naming `cursor`."
                )
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": self.max_page_size,
                    "default": self.page_size,
                }
        return parameters
