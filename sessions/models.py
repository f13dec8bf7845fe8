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
    """A conversation inside a room. `turn_counter` allocates turn numbers under the session's row
    lock, so concurrent turns never share or skip a number. Soft-deleted."""

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
        if self.title:
            return self.title
        # "Session N of <room>": N is annotated by the querysets that show sessions (the admin's
        # `numbered_sessions`), never counted here, where it would cost a query per session.
        number = getattr(self, "number_in_room", None)
        if number is None:
            return f"Session {self.id}"
        return f"Session {number} of {self.room}"


class TurnStatus(models.TextChoices):
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class Turn(models.Model):
    """One user input and the replies it produced. `turn_index` is 1, 2, 3… per session, allocated
    from `Session.turn_counter` under the session's row lock (never duplicated or skipped, even
    under concurrent requests)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="turns")
    turn_index = models.PositiveIntegerField()
    mode = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=TurnStatus.choices, default=TurnStatus.RUNNING)
    user_input = models.TextField()
    assistant_output = models.TextField(blank=True, default="")
    # Orchestrator routing (null for other modes).
    routing_selected = models.JSONField(null=True, blank=True)
    routing_reason = models.TextField(blank=True, default="")
    fallback_used = models.BooleanField(default=False)
    fallback_reason = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    # The agents chosen to answer, in their order (manual: the addressed; round table: the
    # active agents then; orchestrator: the routed list): what a retry of the turn covers.
    speaker_ids = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    progress_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    # A cancel asked for while it ran: when, and who (`api key pan_…`, a user, staff).
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_by = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        db_table = "turns"
        ordering = ("session", "turn_index")
        constraints = [
            models.UniqueConstraint(fields=["session", "turn_index"], name="turns_session_index"),
            # At most one running turn per session, enforced by the database as well.
            models.UniqueConstraint(
                fields=["session"],
                condition=models.Q(status="running"),
                name="turns_one_running_per_session",
            ),
        ]
        indexes = [
            models.Index(
                fields=["progress_at"],
                condition=models.Q(status="running"),
                name="turns_running_progress",
            )
        ]

    def __str__(self) -> str:
        return f"Turn {self.turn_index}"


class MessageRole(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class MessageStatus(models.TextChoices):
    OK = "ok"
    ERROR = "error"
    INTERRUPTED = "interrupted"
    # Replaced by a retry's new reply: kept for staff, never shown in the turn or prompted.
    SUPERSEDED = "superseded"


class Message(models.Model):
    """One utterance. `sequence` orders the messages of a turn (0 is the user's input)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="messages")
    turn = models.ForeignKey(
        Turn, on_delete=models.SET_NULL, null=True, blank=True, related_name="messages"
    )
    sequence = models.PositiveSmallIntegerField(default=0)
    role = models.CharField(max_length=16, choices=MessageRole.choices)
    agent = models.ForeignKey(
        "rooms.Agent", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    mode = models.CharField(max_length=16, blank=True, default="")
    content = models.TextField(blank=True, default="")
    status = models.CharField(
        max_length=16, choices=MessageStatus.choices, default=MessageStatus.OK
    )
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "messages"
        ordering = ("created_at", "id")
        indexes = [
            models.Index(fields=["session", "created_at", "id"], name="messages_session_cursor"),
            models.Index(fields=["turn", "sequence"], name="messages_turn_sequence"),
        ]

    def __str__(self) -> str:
        return f"{self.get_role_display()} message {self.sequence}"


class SummaryStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"


class SessionSummary(models.Model):
    """A structured summary of a session up to `last_turn_covered`. Only `ready` summaries are
    ever prompt content; at most one is pending (or running) per session."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="summaries")
    last_turn_covered = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16, choices=SummaryStatus.choices, default=SummaryStatus.PENDING
    )
    summary_text = models.TextField(blank=True, default="")
    key_facts = models.JSONField(default=list, blank=True)
    decisions = models.JSONField(default=list, blank=True)
    open_questions = models.JSONField(default=list, blank=True)
    action_items = models.JSONField(default=list, blank=True)
    model = models.CharField(max_length=128, blank=True, default="")
    call_event_id = models.UUIDField(null=True, blank=True)
    requested_by_turn = models.ForeignKey(
        Turn, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    error_code = models.CharField(max_length=64, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "session_summaries"
        ordering = ("session", "-last_turn_covered")
        verbose_name_plural = "session summaries"
        constraints = [
            # Idempotency: one summary per session and covered turn.
            models.UniqueConstraint(
                fields=["session", "last_turn_covered"], name="summaries_session_covered"
            ),
            models.UniqueConstraint(
                fields=["session"],
                condition=models.Q(status__in=["pending", "running"]),
                name="summaries_one_pending_per_session",
            ),
        ]
        indexes = [
            models.Index(
                fields=["session", "status", "-last_turn_covered"], name="summaries_lookup"
            )
        ]

    def __str__(self) -> str:
        return f"Summary to turn {self.last_turn_covered}"


class AuditOutcome(models.TextChoices):
    OK = "ok"
    REJECTED = "rejected"


class TurnContextAudit(models.Model):
    """The context-budget arithmetic of one LLM call (or of a rejected request): what the
    guardrail estimated, what it did, and — after the call — what the provider counted."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="context_audits")
    turn = models.ForeignKey(
        Turn, on_delete=models.SET_NULL, null=True, blank=True, related_name="context_audits"
    )
    agent = models.ForeignKey(
        "rooms.Agent", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    purpose = models.CharField(max_length=16, default="agent_reply")
    model = models.CharField(max_length=128)
    model_limit = models.PositiveIntegerField()
    output_reserve = models.PositiveIntegerField()
    input_budget = models.IntegerField()
    estimated_tokens_initial = models.PositiveIntegerField()
    estimated_tokens_after_summarize = models.PositiveIntegerField()
    estimated_tokens_after_prune = models.PositiveIntegerField()
    estimated_tokens_final = models.PositiveIntegerField()
    actions = models.JSONField(default=list, blank=True)
    turns_pruned = models.JSONField(default=list, blank=True)
    summary_used = models.ForeignKey(
        SessionSummary, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    outcome = models.CharField(max_length=16, choices=AuditOutcome.choices, default=AuditOutcome.OK)
    provider_prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    call_event_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "turn_context_audit"
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=["turn", "created_at"], name="audit_turn_created"),
            models.Index(fields=["outcome", "-created_at"], name="audit_outcome_created"),
        ]

    def __str__(self) -> str:
        return f"Context audit: {self.model} ({self.outcome})"


class IdempotencyStatus(models.TextChoices):
    RUNNING = "running"
    DONE = "done"


class TurnIdempotencyKey(models.Model):
    """`Idempotency-Key` of a turn POST, scoped to the user: the request's fingerprint and, once
    the turn ends, the exact status and body to replay."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    turn = models.ForeignKey(
        Turn, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(
        max_length=16, choices=IdempotencyStatus.choices, default=IdempotencyStatus.RUNNING
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "turn_idempotency_keys"
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_user_key"),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return f"idempotency key {self.key} ({self.status})"


class ToolCallStatus(models.TextChoices):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"


class ToolCall(models.Model):
    """One tool call a model made during an agent's reply, as Pantheon ran it: its arguments,
    how it ended and its result (truncated to `TOOL_RESULT_MAX_CHARS`). `round` is the tool
    round of the reply (1 for the tools the first model call asked for)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="tool_calls")
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="tool_calls", null=True, blank=True
    )
    agent = models.ForeignKey(
        "rooms.Agent", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    round = models.PositiveSmallIntegerField()
    call_id = models.CharField(max_length=255)  # the model's id of the call
    name = models.CharField(max_length=128)
    arguments = models.TextField(blank=True, default="")  # the JSON text the model sent
    status = models.CharField(max_length=8, choices=ToolCallStatus.choices)
    result = models.TextField(blank=True, default="")
    error = models.CharField(max_length=500, blank=True, default="")
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tool_calls"
        ordering = ("created_at", "id")
        indexes = [
            models.Index(fields=["turn", "created_at"], name="tool_calls_turn_created"),
            models.Index(fields=["name", "created_at"], name="tool_calls_name_created"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"
