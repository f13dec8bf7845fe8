"""Reads for accounts."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from accounts.models import ApiKey, User


def api_key_list_for_user(*, user: User) -> QuerySet[ApiKey]:
    """The user's own keys, newest first (revoked and expired ones included)."""
    return ApiKey.objects.filter(user=user).order_by("-created_at", "-id")


def api_key_get_for_user(*, user: User, api_key_id: uuid.UUID) -> ApiKey | None:
    """One of the user's own keys; `None` when it does not exist or belongs to someone else."""
    return ApiKey.objects.filter(user=user, pk=api_key_id).first()


def api_key_get_by_prefix(*, prefix: str) -> ApiKey | None:
    """The key shown as `prefix` (e.g. `pan_1a2b3c4d5e6f`), looked up by its unique public id."""
    scheme, _, public_id = prefix.partition("_")
    if not public_id or prefix != f"{scheme}_{public_id}":
        return None
    return ApiKey.objects.select_related("user").filter(public_id=public_id, prefix=prefix).first()
