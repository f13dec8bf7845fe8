"""Write the missing call events and burns for turns that have replies but no metered calls
(turns from before every provider call was metered: their replies were stored, but no call
event or credit burn was written).

Walks turns by primary key in batches (never OFFSET), prints progress, changes nothing with
--dry-run, and is idempotent: each event's idempotency key is derived from its message."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from llm import tokenizer
from pantheon.db import pk_batches
from sessions.models import Message, MessageRole, MessageStatus, Turn
from usage.models import LlmCallEvent
from usage.services import CallRecord, call_event_record


class Command(BaseCommand):
    help = "Meter turns whose replies have no llm_call_events (estimated usage)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        size = options["batch_size"]
        scanned = written = 0
        turns = Turn.objects.select_related("session__room")
        for batch in pk_batches(turns, batch_size=size):
            scanned += len(batch)
            metered = set(
                LlmCallEvent.objects.filter(turn_id__in=[t.id for t in batch]).values_list(
                    "turn_id", flat=True
                )
            )
            bare = [t for t in batch if t.id not in metered]
            replies = Message.objects.filter(
                turn__in=bare, role=MessageRole.ASSISTANT, status=MessageStatus.OK
            ).select_related("agent")
            by_turn: dict[Any, list[Message]] = {}
            for message in replies:
                by_turn.setdefault(message.turn_id, []).append(message)
            for turn in bare:
                for message in by_turn.get(turn.id, []):
                    written += 1
                    if not options["dry_run"]:
                        self._meter(turn, message)
            verb = "would write" if options["dry_run"] else "wrote"
            self.stdout.write(f"scanned {scanned} turns, {verb} {written} events")
        verb = "would write" if options["dry_run"] else "wrote"
        self.stdout.write(f"backfill complete: {verb} {written} events")

    def _meter(self, turn: Turn, message: Message) -> None:
        session = turn.session
        call = CallRecord(
            purpose="agent_reply",
            provider="backfill",
            model_id=message.agent.model_id if message.agent else "unknown",
            status="ok",
            started_at=message.created_at,
            created_at=message.created_at,
            latency_ms=0,
            time_to_first_token_ms=None,
            prompt_tokens=tokenizer.count_tokens(turn.user_input),
            completion_tokens=tokenizer.count_tokens(message.content),
            usage_source="estimated",
            generation_id=None,
            idempotency_key=f"backfill:{message.id}",
            room_id=session.room_id,
            session_id=session.id,
            turn_id=turn.id,
            agent_id=message.agent_id,
        )
        with transaction.atomic():
            call_event_record(user=session.room.owner, reservation=None, call=call)
