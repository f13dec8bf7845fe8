"""REST endpoints of turn control: stopping a running turn, and retrying or regenerating the
replies of a session's latest turn."""

from __future__ import annotations

from functools import partial
from typing import Any
from uuid import UUID

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import api_key_id_of
from pantheon.api.exceptions import error_body
from pantheon.api.schema import ErrorSerializer
from pantheon.api.serializers import StrictInputSerializer
from pantheon.api.throttling import TurnCreateThrottle, UserThrottle
from pantheon.errors import ApplicationError
from sessions import selectors
from sessions.api.serializers import TurnCancelSerializer, TurnRetrySerializer, TurnSerializer
from sessions.api.streaming import EVENT_STREAM, STREAM_DESCRIPTION, STREAM_SCHEMA
from sessions.api.views.turns import (
    ACCEPT_PARAMETER,
    IDEMPOTENCY_PARAMETER,
    StreamablePost,
    idempotency_key_of,
    render_replay,
    replayed_parameter,
    stream_or_wait,
)
from sessions.models import Turn
from sessions.services.turns import (
    Replay,
    request_fingerprint,
    turn_cancel_request,
    turn_retry_admit,
    turn_retry_execute,
)


def _caller(request: Request) -> str:
    """Who asked, as staff read it on the turn: the API key's prefix, or the user."""
    prefix = getattr(request.auth, "prefix", None)
    return f"api key {prefix}" if prefix else f"user {request.user.email}"


def _turn_of(request: Request, session_id: UUID, turn_index: int) -> Turn:
    session = selectors.session_get_for_user(user=request.user, session_id=session_id)
    turn = Turn.objects.filter(session=session, turn_index=turn_index).first()
    if turn is None:
        raise ApplicationError("Not found.", code="not_found")
    return turn


class TurnCancelView(APIView):
    """Stop a running turn."""

    @extend_schema(
        operation_id="turns_cancel",
        tags=["sessions"],
        summary="Cancel a running turn",
        description="Stops the turn wherever it runs: within about a second the provider call "
        "in flight is closed (also one that has not answered yet), what it produced is kept as "
        "an `interrupted` reply and what it consumed is billed; no later agent speaks and the "
        "turn ends `interrupted`. The client waiting for the turn gets it as usual (the 201, or "
        "the stream's `turn.completed`). A retry that is running is cancelled the same way. "
        "409 `turn_not_running` when the turn has ended (`details.status` says how).",
        request=None,
        responses={
            202: OpenApiResponse(TurnCancelSerializer, description="The turn is stopping."),
            400: ErrorSerializer,
            404: ErrorSerializer,
            409: ErrorSerializer,
        },
    )
    def post(self, request: Request, session_id: UUID, turn_index: int) -> Response:
        # No body, or an empty object: anything else is a 400 like every strict input.
        StrictInputSerializer(data=request.data or {}).is_valid(raise_exception=True)
        turn = _turn_of(request, session_id, turn_index)
        if not turn_cancel_request(turn=turn, by=_caller(request)):
            turn.refresh_from_db(fields=["status"])
            return Response(
                error_body(
                    "turn_not_running",
                    f"Turn {turn.turn_index} is not running: it is {turn.status}.",
                    {"turn_id": str(turn.id), "status": turn.status},
                ),
                status=409,
            )
        return Response({"turn_id": str(turn.id), "status": "cancelling"}, status=202)


class TurnRetryView(StreamablePost, APIView):
    """Retry or regenerate replies of the latest turn."""

    throttle_classes = [UserThrottle, TurnCreateThrottle]

    @extend_schema(
        operation_id="turns_retry",
        tags=["sessions"],
        summary="Retry or regenerate replies of the latest turn",
        description="Generates replies of the session's latest turn again. Without "
        "`agent_ids`: every reply that is `error` or `interrupted`, and every speaker a cancel "
        "or a disconnect kept from replying; with `agent_ids`: those agents' replies, whatever "
        "their status (an agent that did not speak in the turn is 422 `unknown_agent`). "
        "Replies are generated in the speakers' order, each on the turn's earlier replies as "
        "they stand then, with the agents' current settings; a replaced reply is kept as "
        "`superseded` (hidden from the turn and from every later prompt). Each call is "
        "budgeted, reserved (402 first), audited and metered like a turn's; the turn is "
        "`running` meanwhile (a new turn is 409, a cancel stops it) and its status, "
        "`assistant_output` and `usage` are recomputed. 200 with the turn; 502 "
        "`llm_unavailable` when the turn has a single speaker whose retry failed. 422 "
        "`turn_not_latest` for an earlier turn, 409 `turn_in_progress` while a turn runs.",
        request=TurnRetrySerializer,
        parameters=[ACCEPT_PARAMETER, IDEMPOTENCY_PARAMETER, replayed_parameter(200, 502)],
        responses={
            200: OpenApiResponse(TurnSerializer, description="The turn, after the retry."),
            (200, EVENT_STREAM): OpenApiResponse(
                response=STREAM_SCHEMA, description=STREAM_DESCRIPTION
            ),
            402: ErrorSerializer,
            404: ErrorSerializer,
            406: ErrorSerializer,
            409: ErrorSerializer,
            422: ErrorSerializer,
            502: ErrorSerializer,
        },
    )
    def post(self, request: Request, session_id: UUID, turn_index: int) -> Any:
        body = TurnRetrySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = idempotency_key_of(request)
        session = selectors.session_get_for_user(user=request.user, session_id=session_id)
        data = body.validated_data
        fingerprint = ""
        if key:
            request_body = {"retry": turn_index, **dict(data)}
            fingerprint = request_fingerprint(session_id=session.id, body=request_body)
        retry = turn_retry_admit(
            user=request.user,
            session=session,
            turn_index=turn_index,
            agent_ids=data.get("agent_ids"),
            idempotency_key=key,
            fingerprint=fingerprint,
            api_key_id=api_key_id_of(request.auth),
        )
        if isinstance(retry, Replay):
            return render_replay(retry, status=200)
        return stream_or_wait(
            request, retry.turn, partial(turn_retry_execute, retry=retry), status=200
        )
