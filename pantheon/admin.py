"""Admin plumbing shared by every app's `admin.py` (architecture: shared plumbing lives in
`pantheon/`, so no app imports another app's admin to reuse it).

Not an installed app: admin autodiscovery never imports this module, it only provides classes.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.options import IncorrectLookupParameters
from django.http import HttpRequest


class SafeLookupsMixin:
    """PostgreSQL refuses NUL bytes in text: a filter or search value carrying one is an
    invalid lookup (the admin's usual redirect to `?e=1`), never a database error. Put it before
    `admin.ModelAdmin` in the bases of every changelist's admin."""

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        if any("\x00" in value for _, values in request.GET.lists() for value in values):
            raise IncorrectLookupParameters("a query parameter contains a NUL byte")
        return super().get_changelist_instance(request)  # type: ignore[misc]
