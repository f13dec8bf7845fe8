"""Request and response bodies for rooms and agents. They check JSON types, lengths and static
ranges; the domain rules (catalog models, handle uniqueness, model output limits) live in
`rooms.services`."""

from __future__ import annotations

import logging
from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers

from llm.models import ModelConfig
from pantheon.api.serializers import (
    StrictBooleanField,
    StrictCharField,
    StrictDecimalNumberField,
    StrictInputSerializer,
    StrictIntegerField,
)
from rooms.models import Agent, Room, TurnMode
from rooms.services import AGENT_POSITION_MAX

logger = logging.getLogger(__name__)

NAME_MAX = 200
DESCRIPTION_MAX = 10_000
INSTRUCTIONS_MAX = 100_000
AGENT_NAME_MAX = 100
# Handles are accepted in any case and stored lower-case.
_HANDLE_INPUT = RegexValidator(
    r"^[A-Za-z][A-Za-z0-9_-]{0,31}$",
    "1-32 characters: a letter, then letters, digits, '_' or '-'.",
)


# --- the catalog model id field ----------------------------------------------------------------


class CatalogModelIdField(StrictCharField):
    """The id of a model of the catalog (`openai/gpt-4o-mini`). Whether it is an active model is
    a domain rule checked by the services; the schema lists the active ids as an enum."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 128)
        super().__init__(**kwargs)


def _active_model_ids() -> list[str] | None:
    try:
        return list(ModelConfig.objects.filter(is_active=True).values_list("pk", flat=True))
    except Exception:  # no database while generating the schema offline: no enum then
        logger.debug("model catalog unavailable for the schema", exc_info=True)
        return None


class CatalogModelIdFieldSchema(OpenApiSerializerFieldExtension):
    """The schema of `CatalogModelIdField`: the catalog's active model ids, read when the schema
    is generated, so a schema-driven client only sends ids the API accepts."""

    target_class = CatalogModelIdField

    def get_name(self) -> str:
        return "CatalogModelId"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        ids = _active_model_ids()
        if not ids:
            return {"type": "string", "minLength": 1, "maxLength": 128}
        return {"type": "string", "enum": ids}


# --- rooms -------------------------------------------------------------------------------------


class RoomSerializer(serializers.ModelSerializer):
    """A room as the API shows it."""

    manager_model = serializers.CharField(
        source="manager_model_id", allow_null=True, read_only=True
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
    manager_model = CatalogModelIdField(allow_null=True, required=False)
    manager_instructions = StrictCharField(
        max_length=INSTRUCTIONS_MAX, allow_blank=True, required=False
    )


class RoomUpdateSerializer(RoomCreateSerializer):
    name = StrictCharField(max_length=NAME_MAX, required=False)


# --- agents ------------------------------------------------------------------------------------


class AgentSerializer(serializers.ModelSerializer):
    """An agent as the API shows it."""

    room_id = serializers.UUIDField(read_only=True)
    model = serializers.CharField(source="model_id", read_only=True)
    temperature = serializers.FloatField(read_only=True)

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
    model = CatalogModelIdField()
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


class AgentUpdateSerializer(AgentCreateSerializer):
    name = StrictCharField(max_length=AGENT_NAME_MAX, required=False)
    handle = StrictCharField(max_length=32, validators=[_HANDLE_INPUT], required=False)
    system_prompt = StrictCharField(max_length=INSTRUCTIONS_MAX, allow_blank=True, required=False)
    model = CatalogModelIdField(required=False)
