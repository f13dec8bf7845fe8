"""Request and response bodies of the sessions API: sessions, turns, messages, summaries."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from pantheon.api.schema import optional_property
from pantheon.api.serializers import (
    ModelIdField,
    StrictCharField,
    StrictInputSerializer,
    StrictListField,
)
from pantheon.credits import format_credits
from rooms.models import TurnMode
from sessions.models import Message, MessageRole, Session, SessionSummary, Turn

TITLE_MAX = 200


class SessionSerializer(serializers.ModelSerializer):
    """A session as the API shows it; `turn_count` is the number of turns started so far."""

    room_id = serializers.UUIDField(read_only=True)
    turn_count = serializers.IntegerField(source="turn_counter", read_only=True)

    class Meta:
        model = Session
        fields = ("id", "room_id", "title", "turn_count", "created_at", "updated_at")
        read_only_fields = fields


class SessionCreateSerializer(StrictInputSerializer):
    title = StrictCharField(max_length=TITLE_MAX, allow_blank=True, required=False)


class SessionUpdateSerializer(SessionCreateSerializer):
    pass


class TurnCreateSerializer(StrictInputSerializer):
    """What to say (`input`), and optionally how the turn runs (`mode`) and, in manual mode,
    who answers (`agent_ids`)."""

    mode = serializers.ChoiceField(
        choices=TurnMode.choices,
        required=False,
        help_text="How the speakers are chosen; the room's `default_mode` when absent.",
    )
    agent_ids = StrictListField(
        child=serializers.UUIDField(),
        required=False,
        allow_empty=False,
        min_length=1,
        max_length=50,
        help_text="Manual mode only: the agents that answer, in this order (instead of the "
        "@mentions of `input`).",
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        # `TURN_INPUT_MAX_CHARS` is a setting, so the field is built per request; its length is
        # checked before the input is looked at any further.
        input_field = StrictCharField(
            max_length=settings.TURN_INPUT_MAX_CHARS,
            trim_whitespace=False,
            help_text="Your message to the room; `@handle` addresses an agent.",
        )
        return {"input": input_field, **super().get_fields()}


class TurnRetrySerializer(StrictInputSerializer):
    """Which replies to generate again (every failed or interrupted one when absent)."""

    agent_ids = StrictListField(
        child=serializers.UUIDField(),
        required=False,
        allow_empty=False,
        min_length=1,
        max_length=50,
        help_text="Agents of the turn whose replies are generated again, whatever their status. "
        "Absent: every reply that is `error` or `interrupted`, and every speaker a cancel or a "
        "disconnect kept from replying.",
    )


class TurnCancelSerializer(serializers.Serializer):
    turn_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["cancelling"])


class AgentRefSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    handle = serializers.CharField()
    name = serializers.CharField()


class MessageErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class ToolCallSerializer(serializers.Serializer):
    """One tool call the model made during this reply, as Pantheon ran it."""

    id = serializers.CharField(help_text="The model's id of the call.")
    name = serializers.CharField()
    arguments = serializers.JSONField(
        help_text="The arguments the model sent: an object, or the text it sent when that was "
        "not a JSON object."
    )
    status = serializers.ChoiceField(
        choices=["ok", "error"], help_text="`error`: it failed, timed out or was refused."
    )
    result = serializers.CharField(
        help_text="What the tool returned (truncated to TOOL_RESULT_MAX_CHARS), or why it failed."
    )
    latency_ms = serializers.IntegerField()


def tool_arguments(text: str) -> Any:
    """The arguments as the API shows them: the object the model sent, else its text."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def tool_status(status: str) -> str:
    """`ok` or `error` (a timeout is an error; the result says so)."""
    return "ok" if status == "ok" else "error"


def _tool_call_body(call: Any) -> dict[str, Any]:
    return {
        "id": call.call_id,
        "name": call.name,
        "arguments": tool_arguments(call.arguments),
        "status": tool_status(call.status),
        "result": call.result if call.status == "ok" else call.error,
        "latency_ms": call.latency_ms,
    }


class MessageSerializer(serializers.ModelSerializer):
    agent = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    turn_index = serializers.SerializerMethodField()
    tool_calls = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = (
            "id",
            "role",
            "agent",
            "content",
            "status",
            "error",
            "tool_calls",
            "turn_index",
            "created_at",
        )
        read_only_fields = fields

    @extend_schema_field(ToolCallSerializer(many=True))
    def get_tool_calls(self, obj: Message) -> list[dict[str, Any]]:
        return [_tool_call_body(call) for call in obj.tool_calls.all()]

    @extend_schema_field(AgentRefSerializer(allow_null=True))
    def get_agent(self, obj: Message) -> dict[str, Any] | None:
        if obj.role != MessageRole.ASSISTANT or obj.agent is None:
            return None
        return {"id": obj.agent.id, "handle": obj.agent.handle, "name": obj.agent.name}

    @extend_schema_field(MessageErrorSerializer(allow_null=True))
    def get_error(self, obj: Message) -> dict[str, str] | None:
        if not obj.error_code:
            return None
        return {"code": obj.error_code, "message": obj.error_message or obj.error_code}

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_turn_index(self, obj: Message) -> int | None:
        return getattr(obj, "turn_index_value", None) or (obj.turn.turn_index if obj.turn else None)


class TurnMessageSerializer(MessageSerializer):
    class Meta(MessageSerializer.Meta):
        fields = ("id", "role", "agent", "content", "status", "error", "tool_calls", "created_at")
        read_only_fields = fields


class RoutingSerializer(serializers.Serializer):
    selected = serializers.ListField(child=serializers.CharField())
    reason = serializers.CharField(allow_blank=True)
    fallback_used = serializers.BooleanField()
    fallback_reason = serializers.CharField(allow_null=True)


class ContextEntrySerializer(serializers.Serializer):
    agent = serializers.CharField(allow_null=True)
    purpose = serializers.CharField()
    actions = serializers.ListField(child=serializers.CharField())
    estimated_tokens = serializers.IntegerField()
    input_budget = serializers.IntegerField()


class TurnUsageSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    oe_tokens = serializers.CharField()
    credits_burned = serializers.CharField()


def _routing_body(turn: Turn) -> dict[str, Any] | None:
    if turn.mode != TurnMode.ORCHESTRATOR:
        return None
    return {
        "selected": turn.routing_selected or [],
        "reason": turn.routing_reason,
        "fallback_used": turn.fallback_used,
        "fallback_reason": turn.fallback_reason or None,
    }


def _context_body(turn: Turn) -> list[dict[str, Any]]:
    return [
        {
            "agent": audit.agent.handle if audit.agent else None,
            "purpose": audit.purpose,
            "actions": audit.actions,
            "estimated_tokens": audit.estimated_tokens_final,
            "input_budget": audit.input_budget,
        }
        for audit in turn.context_audits.all()
    ]


def _usage_body(turn: Turn) -> dict[str, Any]:
    totals = getattr(turn, "usage_totals", None) or {}
    oe: Decimal | None = totals.get("oe_tokens")
    return {
        "input_tokens": totals.get("input_tokens") or 0,
        "output_tokens": totals.get("output_tokens") or 0,
        "oe_tokens": str(oe) if oe is not None else "0",
        "credits_burned": format_credits(totals.get("credits_burned") or 0),
    }


class TurnSerializer(serializers.ModelSerializer):
    """A turn with its messages, routing (orchestrator turns only), context actions and usage:
    the answer of running a turn, and what reading it returns."""

    session_id = serializers.UUIDField()
    mode = serializers.ChoiceField(choices=TurnMode.choices, read_only=True)
    messages = serializers.SerializerMethodField()
    routing = serializers.SerializerMethodField()
    context = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()

    class Meta:
        model = Turn
        fields = (
            "id",
            "session_id",
            "turn_index",
            "mode",
            "status",
            "user_input",
            "assistant_output",
            "messages",
            "routing",
            "context",
            "usage",
            "created_at",
            "completed_at",
        )
        read_only_fields = fields

    @extend_schema_field(TurnMessageSerializer(many=True))
    def get_messages(self, obj: Turn) -> list[dict[str, Any]]:
        return TurnMessageSerializer(obj.messages.all(), many=True).data

    @extend_schema_field(RoutingSerializer)
    def get_routing(self, obj: Turn) -> dict[str, Any] | None:
        return _routing_body(obj)

    @extend_schema_field(ContextEntrySerializer(many=True))
    def get_context(self, obj: Turn) -> list[dict[str, Any]]:
        return _context_body(obj)

    @extend_schema_field(TurnUsageSerializer)
    def get_usage(self, obj: Turn) -> dict[str, Any]:
        return _usage_body(obj)

    def to_representation(self, instance: Turn) -> dict[str, Any]:
        data = super().to_representation(instance)
        if data.get("routing") is None:
            data.pop("routing", None)
        return data


# --- the turn body without the serializer machinery ------------------------------------------
#
# `TurnSerializer` describes the turn body in the schema; a turn is rendered by `turn_body`,
# plain code building the same dict (a test holds them equal), because instantiating nested
# model serializers per message is most of a turn's rendering cost.

_DATETIME = serializers.DateTimeField()


def _when(value: Any) -> str | None:
    return _DATETIME.to_representation(value) if value is not None else None


def _message_body(message: Message) -> dict[str, Any]:
    agent = message.agent if message.role == MessageRole.ASSISTANT and message.agent_id else None
    return {
        "id": str(message.id),
        "role": message.role,
        "agent": (
            {"id": str(agent.id), "handle": agent.handle, "name": agent.name} if agent else None
        ),
        "content": message.content,
        "status": message.status,
        "error": (
            {"code": message.error_code, "message": message.error_message or message.error_code}
            if message.error_code
            else None
        ),
        "tool_calls": [_tool_call_body(call) for call in message.tool_calls.all()],
        "created_at": _when(message.created_at),
    }


def turn_body(turn: Turn) -> dict[str, Any]:
    """What `TurnSerializer(turn).data` renders, for a turn with its details attached
    (`selectors.turns_with_details`, or what the pipeline wrote)."""
    body: dict[str, Any] = {
        "id": str(turn.id),
        "session_id": str(turn.session_id),
        "turn_index": turn.turn_index,
        "mode": turn.mode,
        "status": turn.status,
        "user_input": turn.user_input,
        "assistant_output": turn.assistant_output,
        "messages": [_message_body(m) for m in turn.messages.all()],
    }
    routing = _routing_body(turn)
    if routing is not None:
        body["routing"] = routing
    body["context"] = _context_body(turn)
    body["usage"] = _usage_body(turn)
    body["created_at"] = _when(turn.created_at)
    body["completed_at"] = _when(turn.completed_at)
    return body


class SummaryItemSerializer(serializers.Serializer):
    text = serializers.CharField()
    turns = serializers.ListField(child=serializers.IntegerField())


class SessionSummarySerializer(serializers.ModelSerializer):
    """The latest summary of a session: `status` says whether it is ready; the items name the
    turns they come from."""

    session_id = serializers.UUIDField()
    model = ModelIdField(read_only=True, allow_blank=True, help_text="The model that wrote it.")
    key_facts = SummaryItemSerializer(many=True)
    decisions = SummaryItemSerializer(many=True)
    open_questions = SummaryItemSerializer(many=True)
    action_items = SummaryItemSerializer(many=True)

    class Meta:
        model = SessionSummary
        fields = (
            "id",
            "session_id",
            "status",
            "last_turn_covered",
            "summary_text",
            "key_facts",
            "decisions",
            "open_questions",
            "action_items",
            "model",
            "error_code",
            "created_at",
            "updated_at",
            "completed_at",
        )
        read_only_fields = fields


optional_property("Turn", "routing")
