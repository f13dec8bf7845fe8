"""Sessions (conversations in a room). Turns, messages, summaries and audits come with the turn
pipeline."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class SessionQuerySet(models.QuerySet["Session"]):
    def alive(self) -> SessionQuerySet:
        return self.filter(deleted_at__isnull=True, room__deleted_at__isnull=True)


class Session(models.Model):
    """A conversation inside a room. `turn_counter` allocates turn numbers under a row lock
    (F36). Soft-deleted."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    room = models.ForeignKey("rooms.Room", on_delete=models.CASCADE, related_name="sessions")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_sessions"
    )
    title = models.CharField(max_length=200, blank=True, default="")
    turn_counter = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = SessionQuerySet.as_manager()

    class Meta:
        db_table = "sessions"
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["room", "-created_at"], name="sessions_room_created")]

    def __str__(self) -> str:
        return self.title or str(self.id)
