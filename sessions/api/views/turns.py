"""REST endpoints of turns: running a turn (JSON or streamed), reading turns, messages and the
session's summary. Each view parses the request, calls the ownership guard and one service or
selector, and renders — mapping the service's result to its HTTP status; a session that is
missing, deleted or not the caller's is the same 404."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any
from uuid import UUID

from django.http import HttpResponseBase
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import api_key_id_of
from pantheon.api.exceptions import error_body
from pantheon.api.pagination import MessageCursorPagination
from pantheon.api.presence import presence_of
from pantheon.api.schema import ErrorSerializer
from pantheon.api.throttling import TurnCreateThrottle, UserThrottle
from pantheon.api.views import PaginatedAPIView
from pantheon.errors import ApplicationError
from sessions import selectors
from sessions.api.serializers import (
    MessageSerializer,
    SessionSummarySerializer,
    TurnCreateSerializer,
    TurnSerializer,
    turn_body,
)
from sessions.api.streaming import (
    EVENT_STREAM,
    STREAM_DESCRIPTION,
    STREAM_SCHEMA,
    AcceptHeaderNegotiation,
    EventStreamRenderer,
    TurnCreateSchema,
    served_over_asgi,
    turn_stream_response,
    wants_event_stream,
)
from sessions.models import Turn
from sessions.services.turns import (
    Replay,
    TurnOutcome,
    request_fingerprint,
    turn_admit,
    turn_execute,
)

IDEMPOTENCY_KEY_MAX = 255


def idempotency_key_of(request: Request) -> str | None:
    """The request's `Idempotency-Key` header (400 when empty or too long), or None."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key.strip() or len(key) > IDEMPOTENCY_KEY_MAX:
        raise serializers.ValidationError(
            {"Idempotency-Key": [f"Must be 1 to {IDEMPOTENCY_KEY_MAX} characters."]}
        )
    return key


# Why a request failed as a whole (the turn is stored `failed`): its 502 error code and message.
_FAILURES = {
    "llm_unavailable": "The LLM provider failed; the turn was stored as failed.",
    "internal_error": (
        "The turn broke off on an internal error and was stored as failed; "
        "the session accepts new turns."
    ),
}


def render_turn(turn: Turn, *, error: str | None, status: int = 201) -> Response:
    """The turn body (201 for a new turn, 200 for a retry), or the 502 error (`llm_unavailable`,
    `internal_error`) carrying the turn's id when the request failed as a whole."""
    if error is None:
        return Response(turn_body(turn), status=status)
    code = error if error in _FAILURES else "llm_unavailable"
    details = {"turn_id": str(turn.id), "turn_index": turn.turn_index}
    return Response(error_body(code, _FAILURES[code], details), status=502)


# Marks the answer of a request that repeated an earlier one's Idempotency-Key: the stored
# answer, nothing run again.
REPLAYED_HEADER = "Idempotent-Replayed"


def render_replay(replay: Replay, *, status: int = 201) -> Response:
    """The stored answer of an Idempotency-Key's first request, again, marked as a replay."""
    turn = selectors.turn_get_by_id(turn_id=replay.turn_id)
    failed = replay.status_code == 502
    error = (turn.error_code or "llm_unavailable") if failed else None
    response = render_turn(turn, error=error, status=status)
    response[REPLAYED_HEADER] = "true"
    return response


_TURN_CREATE_DESCRIPTION = (
    "Sends `input` to the session's agents and answers when they have replied: 201 with the "
    "turn (every message, and `routing` for orchestrator turns).\n\n"
    "Who answers depends on `mode` (the room's `default_mode` when absent): `manual` — the "
    "agents named in `agent_ids`, else the agents `@mentioned` in `input`, in order of first "
    "mention; `round_table` — every active agent, in position order; `orchestrator` — the "
    "agents the room's manager model picks. In every mode an `@handle` must name an active agent "
    "of the room (422 `unknown_agent` otherwise); e-mail addresses and `@handles` inside inline "
    "code or code blocks are not mentions.\n\n"
    "Checks run in the order 400, 404, 422, 409, 402, all before anything is written: 400 "
    "`validation_error`; 404 (session missing, deleted or not yours); 422 "
    "`context_budget_exceeded` / `unknown_agent` / `no_agent_selected` / "
    "`idempotency_key_reused` / `model_not_priced`; 409 `turn_in_progress` / "
    "`idempotency_key_in_use`; 402 `insufficient_credits` / `spending_limit_reached`. 502 "
    "`llm_unavailable` when a single-agent turn's provider failed: the turn is stored `failed` "
    "and `details.turn_id` names it.\n\n"
    "With `Accept: text/event-stream` the same request answers 200 with Server-Sent Events while "
    "the turn runs (see the 200 response). With an `Idempotency-Key`, repeating the request "
    "returns the stored answer (201 or 502) with `Idempotent-Replayed: true`, without running or "
    "billing anything again."
)


class StreamablePost:
    """A POST that answers JSON, or Server-Sent Events with `Accept: text/event-stream` (the
    turn's own endpoint, and a retry's). Whatever is not the stream — a rejection, a replay —
    is ordinary JSON; other methods are JSON only (406 otherwise)."""

    content_negotiation_class = AcceptHeaderNegotiation
    schema = TurnCreateSchema()

    def get_renderers(self) -> list[BaseRenderer]:
        renderers = super().get_renderers()  # type: ignore[misc]
        if getattr(getattr(self, "request", None), "method", None) == "POST":
            renderers.append(EventStreamRenderer())
        return renderers

    def finalize_response(
        self, request: Request, response: HttpResponseBase, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        if isinstance(response, Response) and wants_event_stream(request):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


ACCEPT_PARAMETER = OpenApiParameter(
    "Accept",
    str,
    OpenApiParameter.HEADER,
    required=False,
    enum=[JSONRenderer.media_type, EVENT_STREAM],
    description="`text/event-stream` to receive the turn as Server-Sent Events while it runs "
    "(200); `application/json` (the default) to wait for the answer.",
)
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    # Not blank: at least one character that is not white space.
    {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX, "pattern": r"\S"},
    OpenApiParameter.HEADER,
    required=False,
    description="At most 255 characters, yours to choose (a UUID will do). Repeating a request "
    "with the same key and body returns the stored answer; the same key with another body is "
    "422 `idempotency_key_reused`, and while the first request runs, 409 "
    "`idempotency_key_in_use`.",
)


def replayed_parameter(*statuses: int) -> OpenApiParameter:
    return OpenApiParameter(
        REPLAYED_HEADER,
        str,
        OpenApiParameter.HEADER,
        enum=["true"],
        response=list(statuses),
        description="`true` when this is the stored answer of an earlier request with the same "
        "Idempotency-Key (nothing was run or billed again); absent otherwise.",
    )


def stream_or_wait(
    request: Request, turn: Turn, execute: Callable[..., TurnOutcome], *, status: int
) -> HttpResponseBase:
    """Run an admitted turn (or retry) — streamed when the client asked for events, else to its
    end and rendered with `status` (or the 502 of a request that failed as a whole)."""
    if wants_event_stream(request):
        return turn_stream_response(
            turn,
            lambda observer: execute(observer=observer),
            incremental=served_over_asgi(request),
            presence=presence_of(request),
        )
    outcome = execute()
    return render_turn(outcome.turn, error=outcome.error, status=status)


class TurnListCreateView(StreamablePost, PaginatedAPIView):
    """Run a turn in a session, or list its turns (oldest first) with their messages."""

    throttle_classes = [UserThrottle, TurnCreateThrottle]

    @extend_schema(
        operation_id="turns_create",
        tags=["sessions"],
        summary="Run a turn",
        description=_TURN_CREATE_DESCRIPTION,
        request=TurnCreateSerializer,
        parameters=[ACCEPT_PARAMETER, IDEMPOTENCY_PARAMETER, replayed_parameter(201, 502)],
        responses={
            201: OpenApiResponse(TurnSerializer, description="The turn, run to its end."),
            (200, EVENT_STREAM): OpenApiResponse(
                response=STREAM_SCHEMA, description=STREAM_DESCRIPTION
            ),
            402: ErrorSerializer,
            406: OpenApiResponse(
                ErrorSerializer,
                description="`Accept` names neither JSON nor `text/event-stream`.",
            ),
            409: ErrorSerializer,
            422: ErrorSerializer,
            502: OpenApiResponse(
                ErrorSerializer,
                description="The LLM provider failed (`llm_unavailable`) or the turn broke off "
                "(`internal_error`): the turn is stored `failed`; `details` carry its "
                "`turn_id` and `turn_index`.",
            ),
        },
    )
    def post(self, request: Request, session_id: UUID) -> HttpResponseBase:
        body = TurnCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = idempotency_key_of(request)
        session = selectors.session_get_for_user(user=request.user, session_id=session_id)
        data = body.validated_data
        admitted = turn_admit(
            user=request.user,
            session=session,
            user_input=data["input"],
            mode=data.get("mode"),
            agent_ids=data.get("agent_ids"),
            idempotency_key=key,
            fingerprint=request_fingerprint(session_id=session.id, body=dict(data)) if key else "",
            api_key_id=api_key_id_of(request.auth),
        )
        if isinstance(admitted, Replay):
            return render_replay(admitted)
        return stream_or_wait(
            request, admitted.turn, partial(turn_execute, admitted=admitted), status=201
        )

    @extend_schema(
        operation_id="turns_list",
        tags=["sessions"],
        summary="List a session's turns",
        description="The session's turns, oldest first, each with its messages, routing "
        "(orchestrator turns), context actions and usage — the same body as running a turn "
        "answers. `limit`/`offset` paginated.",
        responses={200: TurnSerializer(many=True)},
    )
    def get(self, request: Request, session_id: UUID) -> Response:
        session = selectors.session_get_for_user(user=request.user, session_id=session_id)
        page = self.paginate(selectors.turns_for_session(session_id=session.id))
        turns = selectors.turns_with_details(
            selectors.turns_for_session(session_id=session.id).filter(id__in=[t.id for t in page])
        )
        return self.page_response([turn_body(t) for t in turns])


class TurnDetailView(APIView):
    """One turn of a session, by its index."""

    @extend_schema(
        operation_id="turns_retrieve",
        tags=["sessions"],
        summary="Get a turn",
        description="One turn of the session by its `turn_index` (1 for the first), with its "
        "messages, routing, context actions and usage.",
        responses={200: TurnSerializer},
    )
    def get(self, request: Request, session_id: UUID, turn_index: int) -> Response:
        session = selectors.session_get_for_user(user=request.user, session_id=session_id)
        turn = selectors.turn_get(session_id=session.id, turn_index=turn_index)
        if turn is None:
            raise ApplicationError("Not found.", code="not_found")
        return Response(turn_body(turn))


class MessageListView(PaginatedAPIView):
    """The messages of a session, oldest first, cursor-paginated."""

    pagination_class = MessageCursorPagination

    # `cursor` and `limit` (with its bounds) come from the paginator.
    @extend_schema(
        operation_id="messages_list",
        tags=["sessions"],
        summary="List a session's messages",
        description="Every message of the session, oldest first — your inputs and the agents' "
        "replies, each with its `turn_index`. Cursor-paginated: follow `next` and `previous` "
        "(a `cursor` is only ever taken from them).",
        parameters=[
            OpenApiParameter(
                "include_superseded",
                bool,
                OpenApiParameter.QUERY,
                required=False,
                description="`true` to list also the replies a retry replaced (status "
                "`superseded`); hidden by default.",
            )
        ],
        responses={200: MessageSerializer(many=True)},
    )
    def get(self, request: Request, session_id: UUID) -> Response:
        session = selectors.session_get_for_user(user=request.user, session_id=session_id)
        include = request.query_params.get("include_superseded", "false")
        if include not in ("true", "false"):
            raise serializers.ValidationError({"include_superseded": ["Must be true or false."]})
        messages = selectors.messages_for_session(
            session_id=session.id, include_superseded=include == "true"
        )
        return self.paginated(messages, MessageSerializer)


class SessionSummaryView(APIView):
    """The latest summary of a session, whatever its status."""

    @extend_schema(
        operation_id="sessions_summary",
        tags=["sessions"],
        summary="Get a session's latest summary",
        description="The latest summary of the session, whatever its `status` (`pending` or "
        "`running` while it is being written, `ready`, `failed`): key facts, decisions, open "
        "questions and action items, each naming the turns it comes from. 404 when the session "
        "has no summary yet.",
        responses={200: SessionSummarySerializer},
    )
    def get(self, request: Request, session_id: UUID) -> Response:
        session = selectors.session_get_for_user(user=request.user, session_id=session_id)
        summary = selectors.summary_latest(session_id=session.id)
        if summary is None:
            raise ApplicationError("This session has no summary yet.", code="not_found")
        return Response(SessionSummarySerializer(summary).data)
