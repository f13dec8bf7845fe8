"""Pagination for every list: `{"next", "previous", "results"}` plus `count` where it is cheap."""

from __future__ import annotations

from rest_framework import pagination


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    default_limit = 50
    max_limit = 200


class MessageCursorPagination(pagination.CursorPagination):
    """Messages grow without bound: a cursor keeps every page one indexed range scan."""

    page_size = 50
    max_page_size = 200
    page_size_query_param = "limit"
    ordering = ("created_at", "id")
