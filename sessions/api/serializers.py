"""Request and response bodies for sessions (the turn endpoints have their own)."""

from __future__ import annotations

from rest_framework import serializers

from pantheon.api.serializers import StrictCharField, StrictInputSerializer
from sessions.models import Session

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
