"""Admitting a turn: every pre-flight check, then the short transaction that opens it.

Checks run before anything is written, in the contract's order: (400 and 404 are the view's)
an Idempotency-Key replay, 422 (speakers; the first call's budget — whose rejected audit row is
the one thing written), 409 (a turn is running in the session), 402 (credits for the first
call). Only a request that passes them all allocates a turn number. No provider is called here,
so a streaming view can answer every rejection as JSON before its stream starts.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from accounts.models import User
from llm.models import ModelConfig
from llm.selectors import model_get
from pantheon import sql
from pantheon.errors import ApplicationError
from pantheon.sql import mark_saved
from rooms.models import Agent, TurnMode
from sessions import selectors
from sessions import sql as sessions_sql
from sessions.models import Message, MessageRole, Session, Turn, TurnIdempotencyKey, TurnStatus
from sessions.services.summaries import summary_request, summary_row
from sessions.services.turns import tools
from sessions.services.turns.calls import audit_write
from sessions.services.turns.closing import turn_fail_stale
from sessions.services.turns.idempotency import idempotency_check, idempotency_key_in_use
from sessions.services.turns.prompts import budget_rejection, prepare_call, prepare_routing_call
from sessions.services.turns.speakers import resolve_speakers
from sessions.services.turns.state import (
    AdmittedTurn,
    OpenTurn,
    Preflight,
    PreparedCall,
    PromptContext,
    Replay,
)
from usage.models import CreditAccount, Reservation
from usage.selectors import user_has_limits
from usage.services import (
    ReservationRefused,
    account_for_update,
    credits_reserve,
    refusal_record,
    reservation_amount,
    reservation_draft,
)

logger = logging.getLogger(__name__)


def turn_in_progress() -> ApplicationError:
    return ApplicationError(
        "A turn is already running in this session.",
        code="turn_in_progress",
        retry_after=2,
    )


def turn_admit(
    *,
    user: User,
    session: Session,
    user_input: str,
    mode: str | None,
    agent_ids: list[UUID] | None = None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    api_key_id: UUID | None = None,
) -> AdmittedTurn | Replay:
    """The pre-flight and the admission of a turn on an owned, alive session. Returns the open
    turn, or a Replay of a finished request with the same Idempotency-Key; raises
    ApplicationError for a rejection."""
    mode = mode or session.room.default_mode
    if idempotency_key:
        replay = idempotency_check(user=user, key=idempotency_key, fingerprint=fingerprint)
        if replay is not None:
            return replay
    preflight = turn_preflight(
        session=session, user_input=user_input, mode=mode, agent_ids=agent_ids
    )
    first = preflight.first
    if first.cascade.rejected:
        audit_write(session=session, turn=None, prepared=first)
        raise budget_rejection(first)
    try:
        opened, reservation = _turn_open(
            user=user,
            session=session,
            mode=mode,
            speakers=preflight.speakers,
            first=first,
            user_input=user_input,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            api_key_id=api_key_id,
        )
    except ReservationRefused as refused:  # its transaction rolled back: noted on its own
        refusal_record(user_id=user.pk, refusal=refused, purpose=first.purpose)
        raise
    return AdmittedTurn(
        open=opened,
        mode=mode,
        agents=preflight.agents,
        speakers=preflight.speakers,
        context=replace(preflight.context, turn_index=opened.turn.turn_index),
        first=first,
        first_reservation=reservation,
    )


def turn_preflight(
    *, session: Session, user_input: str, mode: str, agent_ids: list[UUID] | None
) -> Preflight:
    """Read-only: the room's active agents, the speakers (422 when none is addressed or one is
    unknown), what every call of the turn shares, and the first call prepared and budgeted —
    the orchestrator's routing call, else the first speaker's reply. A fixed number of queries
    however long the session is."""
    agents = tuple(selectors.active_agents_for_room(room_id=session.room_id))
    speakers = resolve_speakers(
        agents=agents, mode=mode, user_input=user_input, agent_ids=agent_ids
    )
    context = _prompt_context(session, user_input)
    if mode == TurnMode.ORCHESTRATOR:
        model = model_get(session.room.manager_model_id or settings.ORCHESTRATOR_DEFAULT_MODEL)
        if model is None:  # both come from the catalog; one deleted since is a config error
            raise ModelConfig.DoesNotExist(settings.ORCHESTRATOR_DEFAULT_MODEL)
        first = prepare_routing_call(room=session.room, model=model, agents=agents, context=context)
    else:
        agent = speakers[0]
        offered = tools.offered(agent, tools.tool_context(session, session.room.owner_id))
        first = prepare_call(agent=agent, context=context, earlier=[], tools=offered)
    return Preflight(agents=agents, speakers=speakers, context=context, first=first)


def _prompt_context(session: Session, user_input: str) -> PromptContext:
    """The summaries and the uncovered history, read once for every call of the turn."""
    summaries = selectors.summary_state_for_session(session_id=session.id)
    history = selectors.history_for_prompt(
        session_id=session.id, after_turn_index=summaries.boundary
    )
    return PromptContext(
        turn_index=session.turn_counter + 1,
        user_input=user_input,
        history=tuple(history),
        summaries=summaries,
    )


def _turn_open(
    *,
    user: User,
    session: Session,
    mode: str,
    speakers: tuple[Agent, ...],
    first: PreparedCall,
    user_input: str,
    idempotency_key: str | None,
    fingerprint: str,
    api_key_id: UUID | None,
) -> tuple[OpenTurn, Reservation]:
    """Admit the turn: lock the session, refuse a running turn (409), reserve the first call's
    credits and check its spending limits (402), allocate the index, write turn + user message
    (+ a pending summary row the first call asked for, + the Idempotency-Key).

    On PostgreSQL one statement when nothing stands in the way and the user has no spending
    limit; with limits, that statement inside a transaction that took the session's and the
    account's locks first (the limits are only sound under the account's). The ORM transaction
    otherwise, and for the exact refusal."""
    amount = reservation_amount(
        model_id=first.model.id,
        estimated_input_tokens=first.cascade.estimated_final,
        output_reserve=first.cascade.output_reserve,
    )
    args = {
        "user": user,
        "session": session,
        "mode": mode,
        "speaker_ids": [str(a.id) for a in speakers],
        "first": first,
        "user_input": user_input,
        "idempotency_key": idempotency_key,
        "fingerprint": fingerprint,
        "amount": amount,
        "api_key_id": api_key_id,
    }
    if sql.available():
        opened = _open_at_once(**args)
        if opened is None and user_has_limits(user.pk):
            with transaction.atomic():
                # The session's lock, then the account's: the order every path takes them in.
                locking = Session.objects.select_for_update(no_key=True).filter(pk=session.pk)
                list(locking.values("pk"))
                account_for_update(user)
                opened = _open_at_once(**args, account_locked=True)
        if opened is not None:
            return opened
    return _open_with_orm(**args)


def _open_at_once(
    *,
    user: User,
    session: Session,
    mode: str,
    speaker_ids: list[str],
    first: PreparedCall,
    user_input: str,
    idempotency_key: str | None,
    fingerprint: str,
    amount: int,
    api_key_id: UUID | None,
    account_locked: bool = False,
) -> tuple[OpenTurn, Reservation] | None:
    """The opening in one statement (`sessions.sql.turn_open`); None when it wrote nothing.
    `account_locked`: the caller's transaction holds the account's lock, so the statement checks
    the spending limits (else it writes nothing when the user has any)."""
    now = timezone.now()
    turn = Turn(
        session=session,
        turn_index=0,
        mode=mode,
        speaker_ids=speaker_ids,
        user_input=user_input,
        created_at=now,
        progress_at=now,
    )
    user_message = Message(
        session=session,
        turn=turn,
        sequence=0,
        role=MessageRole.USER,
        mode=mode,
        content=user_input,
        created_at=now,
    )
    reservation = reservation_draft(
        amount_micro=amount,
        purpose=first.purpose,
        model_id=first.model.id,
        session_id=session.id,
        turn_id=turn.id,
        room_id=session.room_id,
        api_key_id=api_key_id,
        now=now,
    )
    key = (
        TurnIdempotencyKey(user=user, key=idempotency_key, request_hash=fingerprint, turn=turn)
        if idempotency_key
        else None
    )
    summary = (
        summary_row(session=session, turn=turn, cover_to=first.summary_cover_to)
        if first.summary_cover_to is not None
        else None
    )
    try:
        opened = sessions_sql.turn_open(
            turn=turn,
            user_message=user_message,
            reservation=reservation,
            user_id=user.pk,
            idempotency_key=key,
            summary=summary,
            now=now,
            account_locked=account_locked,
        )
    except IntegrityError as exc:
        raise _lost_race(session, exc) from exc
    if opened is None:
        return None
    session.turn_counter = opened.turn_index
    # The account, as far as the turn needs it (its user): no query to read it back.
    account = CreditAccount(id=opened.account_id, user_id=user.pk)
    mark_saved(account)
    reservation.account = account
    open_turn = OpenTurn(
        session=session,
        turn=turn,
        user=user,
        user_message=user_message,
        idempotency_key=idempotency_key,
        summary_requested=opened.summary_id,
        api_key_id=api_key_id,
    )
    return open_turn, reservation


def _lost_race(session: Session, exc: IntegrityError) -> ApplicationError:
    """Another request won the race for this session's running slot or for this key."""
    logger.info("turn admission lost a race on session %s: %s", session.pk, exc)
    if "idempotency_user_key" in str(exc):
        return idempotency_key_in_use()
    return turn_in_progress()


def _open_with_orm(
    *,
    user: User,
    session: Session,
    mode: str,
    speaker_ids: list[str],
    first: PreparedCall,
    user_input: str,
    idempotency_key: str | None,
    fingerprint: str,
    amount: int,
    api_key_id: UUID | None,
) -> tuple[OpenTurn, Reservation]:
    """The opening as one ORM transaction, with the exact refusals: 409 for a running turn (a
    stale one is failed first), 402 for credits (expired reservations closed first)."""
    now = timezone.now()
    try:
        with transaction.atomic():
            locked = lock_session_refusing_a_running_turn(session, now)
            if (
                idempotency_key
                and TurnIdempotencyKey.objects.filter(user=user, key=idempotency_key).exists()
            ):
                raise idempotency_key_in_use()
            locked.turn_counter += 1
            locked.save(update_fields=["turn_counter", "updated_at"])
            turn = Turn.objects.create(
                session=locked,
                turn_index=locked.turn_counter,
                mode=mode,
                speaker_ids=speaker_ids,
                user_input=user_input,
                created_at=now,
                progress_at=now,
            )
            reservation = credits_reserve(
                user=user,
                model_id=first.model.id,
                estimated_input_tokens=first.cascade.estimated_final,
                output_reserve=first.cascade.output_reserve,
                purpose=first.purpose,
                session_id=locked.id,
                turn_id=turn.id,
                room_id=locked.room_id,
                api_key_id=api_key_id,
                amount_micro=amount,
            )
            opened = _open_rows(locked, turn, user, first, idempotency_key, fingerprint, now)
            opened = replace(opened, api_key_id=api_key_id)
    except IntegrityError as exc:
        raise _lost_race(session, exc) from exc
    session.turn_counter = locked.turn_counter
    return opened, reservation


def lock_session_refusing_a_running_turn(session: Session, now: datetime) -> Session:
    """Lock the session row; 409 when a turn is running in it (a stale one is failed first).

    Whether a turn is running is read with the lock: one round trip. The subquery sees the
    snapshot from before the lock wait, so a turn opened meanwhile is caught by the
    one-running-turn constraint, and a stale one is read again, locked, before it is failed."""
    running_turns = Turn.objects.filter(session=OuterRef("pk"), status=TurnStatus.RUNNING)
    locked = (
        Session.objects.select_for_update(no_key=True)
        .annotate(running_since=Subquery(running_turns.values("progress_at")[:1]))
        .get(pk=session.pk)
    )
    if locked.running_since is None:
        return locked
    stale_before = now - timedelta(seconds=settings.TURN_STALE_AFTER_SECONDS)
    if locked.running_since > stale_before:
        raise turn_in_progress()
    running = (
        Turn.objects.select_for_update(no_key=True)
        .filter(session=locked, status=TurnStatus.RUNNING)
        .first()
    )
    if running is not None:
        if running.progress_at > stale_before:
            raise turn_in_progress()
        turn_fail_stale(running, now=now)
    return locked


def _open_rows(
    session: Session,
    turn: Turn,
    user: User,
    first: PreparedCall,
    idempotency_key: str | None,
    fingerprint: str,
    now: datetime,
) -> OpenTurn:
    """The rows written with the turn, in its opening transaction."""
    user_message = Message.objects.create(
        session=session,
        turn=turn,
        sequence=0,
        role=MessageRole.USER,
        mode=turn.mode,
        content=turn.user_input,
        created_at=now,
    )
    requested = (
        summary_request(session=session, turn=turn, cover_to=first.summary_cover_to)
        if first.summary_cover_to is not None
        else None
    )
    if idempotency_key:
        TurnIdempotencyKey.objects.create(
            user=user, key=idempotency_key, request_hash=fingerprint, turn=turn
        )
    return OpenTurn(
        session=session,
        turn=turn,
        user=user,
        user_message=user_message,
        idempotency_key=idempotency_key,
        summary_requested=requested.id if requested is not None else None,
    )
