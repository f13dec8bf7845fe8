"""Rooms and their agents."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

HANDLE_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
# Named so the service can recognise a concurrent duplicate handle in the IntegrityError.
HANDLE_UNIQUE_CONSTRAINT = "agents_room_handle_unique"


class TurnMode(models.TextChoices):
    MANUAL = "manual", "Manual (@mentions)"
    ROUND_TABLE = "round_table", "Round table"
    ORCHESTRATOR = "orchestrator", "Orchestrator"


class RoomQuerySet(models.QuerySet["Room"]):
    def alive(self) -> RoomQuerySet:
        return self.filter(deleted_at__isnull=True)


class Room(models.Model):
    """A user's room of agents. Soft-deleted: `deleted_at` hides it everywhere."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rooms"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    default_mode = models.CharField(
        max_length=16, choices=TurnMode.choices, default=TurnMode.ROUND_TABLE
    )
    manager_model = models.ForeignKey(
        "llm.ModelConfig",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_column="manager_model",
    )
    manager_instructions = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = RoomQuerySet.as_manager()

    class Meta:
        db_table = "rooms"
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["owner", "-created_at"], name="rooms_owner_created")]

    def __str__(self) -> str:
        return self.name


class AgentQuerySet(models.QuerySet["Agent"]):
    def alive(self) -> AgentQuerySet:
        """Agents that were not deleted (a deleted agent keeps its row for the messages that
        reference it, but is hidden everywhere)."""
        return self.filter(deleted_at__isnull=True)

    def active(self) -> AgentQuerySet:
        """Agents that may speak: not deleted and switched on."""
        return self.alive().filter(is_active=True)


class Agent(models.Model):
    """An LLM persona in a room. `handle` is how users @mention it (stored lower-case, unique
    among the room's agents that are not deleted). Soft-deleted: `deleted_at` hides it everywhere
    while its past messages keep pointing at it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=100)
    handle = models.CharField(max_length=32, validators=[RegexValidator(HANDLE_PATTERN)])
    system_prompt = models.TextField(blank=True, default="")
    model = models.ForeignKey(
        "llm.ModelConfig", on_delete=models.PROTECT, related_name="+", db_column="model"
    )
    temperature = models.DecimalField(
        max_digits=3,
        decimal_places=2,
        default=0.7,
        validators=[MinValueValidator(0), MaxValueValidator(2)],
    )
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    # Names of the tools the agent may call (`GET tools`), in the order they are offered.
    tools = models.JSONField(default=list, blank=True)
    position = models.PositiveIntegerField(default=0)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = AgentQuerySet.as_manager()

    class Meta:
        db_table = "agents"
        ordering = ("position", "created_at")
        constraints = [
            # A deleted agent frees its handle for a new agent of the same room.
            models.UniqueConstraint(
                fields=["room", "handle"],
                condition=models.Q(deleted_at__isnull=True),
                name=HANDLE_UNIQUE_CONSTRAINT,
            ),
            models.CheckConstraint(
                condition=models.Q(temperature__gte=0) & models.Q(temperature__lte=2),
                name="agents_temperature_range",
            ),
        ]
        indexes = [models.Index(fields=["room", "position"], name="agents_room_position")]

    def __str__(self) -> str:
        return f"@{self.handle}"
