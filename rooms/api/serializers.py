"""Request and response bodies for rooms and agents. They check JSON types, lengths and static
ranges; the domain rules (catalog models, handle uniqueness, model output limits) live in
`rooms.services`."""

from __future__ import annotations

from django.core.validators import RegexValidator
from rest_framework import serializers

from pantheon.api.serializers import (
    ModelIdField,
    StrictBooleanField,
    StrictCharField,
    StrictDecimalNumberField,
    StrictInputSerializer,
    StrictIntegerField,
    StrictListField,
)
from rooms.models import Agent, Room, TurnMode
from rooms.services import AGENT_POSITION_MAX

NAME_MAX = 200
DESCRIPTION_MAX = 10_000
INSTRUCTIONS_MAX = 100_000
AGENT_NAME_MAX = 100
# Handles are accepted in any case and stored lower-case.
_HANDLE_INPUT = RegexValidator(
    r"^[A-Za-z][A-Za-z0-9_-]{0,31}$",
    "1-32 characters: a letter, then letters, digits, '_' or '-'.",
)


# --- rooms -------------------------------------------------------------------------------------


class RoomSerializer(serializers.ModelSerializer):
    """A room as the API shows it."""

    manager_model = ModelIdField(
        source="manager_model_id",
        allow_null=True,
        read_only=True,
        help_text="The model that routes orchestrator turns; null for the default one.",
    )

    class Meta:
        model = Room
        fields = (
            "id",
            "name",
            "description",
            "default_mode",
            "manager_model",
            "manager_instructions",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields


class RoomCreateSerializer(StrictInputSerializer):
    name = StrictCharField(max_length=NAME_MAX)
    description = StrictCharField(max_length=DESCRIPTION_MAX, allow_blank=True, required=False)
    default_mode = serializers.ChoiceField(choices=TurnMode.choices, required=False)
    manager_model = ModelIdField(
        allow_null=True,
        required=False,
        help_text="An active model of the catalog (`GET /api/v1/models`) that routes "
        "orchestrator turns; null or absent for the default one.",
    )
    manager_instructions = StrictCharField(
        max_length=INSTRUCTIONS_MAX, allow_blank=True, required=False
    )


class RoomUpdateSerializer(RoomCreateSerializer):
    name = StrictCharField(max_length=NAME_MAX, required=False)


# --- agents ------------------------------------------------------------------------------------


class AgentSerializer(serializers.ModelSerializer):
    """An agent as the API shows it."""

    room_id = serializers.UUIDField(read_only=True)
    model = ModelIdField(source="model_id", read_only=True)
    temperature = serializers.FloatField(read_only=True)
    tools = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="The tools it may call."
    )

    class Meta:
        model = Agent
        fields = (
            "id",
            "room_id",
            "name",
            "handle",
            "system_prompt",
            "model",
            "temperature",
            "max_output_tokens",
            "tools",
            "position",
            "is_active",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields


class AgentCreateSerializer(StrictInputSerializer):
    name = StrictCharField(max_length=AGENT_NAME_MAX)
    handle = StrictCharField(max_length=32, validators=[_HANDLE_INPUT])
    system_prompt = StrictCharField(max_length=INSTRUCTIONS_MAX, allow_blank=True)
    model = ModelIdField(
        help_text="An active model of the catalog; `GET /api/v1/models` lists them."
    )
    temperature = StrictDecimalNumberField(
        min_value=0, max_value=2, decimal_places=2, required=False
    )
    max_output_tokens = StrictIntegerField(min_value=1, allow_null=True, required=False)
    position = StrictIntegerField(
        min_value=0,
        max_value=AGENT_POSITION_MAX,
        required=False,
        help_text="Order in the room (ties keep creation order); without it the agent goes last.",
    )
    is_active = StrictBooleanField(required=False)
    tools = StrictListField(
        child=StrictCharField(max_length=128),
        required=False,
        max_length=20,
        help_text="Names of tools from `GET /api/v1/tools` the agent may call while it replies.",
    )


class AgentUpdateSerializer(AgentCreateSerializer):
    name = StrictCharField(max_length=AGENT_NAME_MAX, required=False)
    handle = StrictCharField(max_length=32, validators=[_HANDLE_INPUT], required=False)
    system_prompt = StrictCharField(max_length=INSTRUCTIONS_MAX, allow_blank=True, required=False)
    model = ModelIdField(
        required=False,
        help_text="An active model of the catalog; `GET /api/v1/models` lists them.",
    )
