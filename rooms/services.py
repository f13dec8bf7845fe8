"""Writes for rooms and agents. Callers pass rooms and agents obtained through the ownership
guard in `rooms.selectors`; these functions enforce the domain rules (catalog models, handle
format and uniqueness, ranges) and raise `ApplicationError` 400 `validation_error` naming the
offending field."""

from __future__ import annotations

import enum
import re
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from accounts.models import User
from llm.models import ModelConfig
from llm.tools.registry import unknown_tools
from pantheon.errors import ApplicationError
from rooms.models import HANDLE_PATTERN, HANDLE_UNIQUE_CONSTRAINT, Agent, Room, TurnMode

TEMPERATURE_MIN = Decimal("0")
TEMPERATURE_MAX = Decimal("2")
# Far more places than a room has agents, and far from the `integer` column's limit, so "after
# the last agent" can always be computed.
AGENT_POSITION_MAX = 100_000
_HANDLE_RE = re.compile(HANDLE_PATTERN)


class _Unset(enum.Enum):
    UNSET = "unset"


# "Not given" in a partial update, distinct from an explicit None (which clears a field).
UNSET = _Unset.UNSET


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError("Invalid input.", code="validation_error", details={field: [message]})


def _active_model(model_id: str, *, field: str) -> ModelConfig:
    model = ModelConfig.objects.filter(pk=model_id, is_active=True).first()
    if model is None:
        # Staff retire and add models at any time: point the client at the current list.
        message = (
            f"'{model_id}' is not an active model of the catalog; "
            "GET /api/v1/models lists the models you can use."
        )
        raise ApplicationError(message, code="validation_error", details={field: [message]})
    return model


def _check_mode(mode: str) -> None:
    if mode not in TurnMode.values:
        raise _invalid("default_mode", f"Must be one of: {', '.join(TurnMode.values)}.")


def _normalized_handle(handle: str) -> str:
    handle = handle.lower()
    if not _HANDLE_RE.match(handle):
        raise _invalid(
            "handle",
            "1-32 characters: a letter, then letters, digits, '_' or '-' (case-insensitive).",
        )
    return handle


def _check_temperature(temperature: Decimal) -> None:
    if not TEMPERATURE_MIN <= temperature <= TEMPERATURE_MAX:
        raise _invalid("temperature", "Must be between 0 and 2.")


def _check_position(position: int) -> None:
    if not 0 <= position <= AGENT_POSITION_MAX:
        raise _invalid("position", f"Must be between 0 and {AGENT_POSITION_MAX}.")


AGENT_TOOLS_MAX = 20


def _checked_tools(tools: list[str]) -> list[str]:
    """An agent's tools: names of `GET tools`, each once, in the given order."""
    if len(tools) > AGENT_TOOLS_MAX:
        raise _invalid("tools", f"At most {AGENT_TOOLS_MAX} tools.")
    unknown = unknown_tools(tools)
    if unknown:
        raise _invalid(
            "tools",
            f"Unknown tool(s): {', '.join(unknown)}. GET /api/v1/tools lists the tools an agent "
            "may be given.",
        )
    return list(dict.fromkeys(tools))


def _position_after(last: int | None) -> int:
    """The place after the room's last agent. At the cap it is the last agent's own place:
    agents on the same place are ordered by creation, so the new one still comes last, and the
    result never exceeds the cap or a place already stored (never the column's limit)."""
    if last is None:
        return 0
    return min(last + 1, max(last, AGENT_POSITION_MAX))


def _check_max_output_tokens(value: int | None, model: ModelConfig) -> None:
    if value is not None and not 1 <= value <= model.max_output_tokens:
        raise _invalid(
            "max_output_tokens",
            f"Must be between 1 and {model.max_output_tokens} (the limit of {model.pk}).",
        )


def _is_duplicate_handle(exc: IntegrityError) -> bool:
    diag = getattr(exc.__cause__, "diag", None)
    if diag is not None:
        return getattr(diag, "constraint_name", None) == HANDLE_UNIQUE_CONSTRAINT
    # SQLite (first run only) does not name the constraint.
    return "agents.room_id, agents.handle" in str(exc)


def _duplicate_handle(handle: str) -> ApplicationError:
    return _invalid("handle", f"An agent with the handle '{handle}' already exists in this room.")


# --- rooms -------------------------------------------------------------------------------------


def room_create(
    *,
    owner: User,
    name: str,
    description: str = "",
    default_mode: str = TurnMode.ROUND_TABLE,
    manager_model: str | None = None,
    manager_instructions: str = "",
) -> Room:
    """Create a room owned by `owner`. `manager_model`, when given, must be an active catalog
    model id."""
    _check_mode(default_mode)
    model = _active_model(manager_model, field="manager_model") if manager_model else None
    return Room.objects.create(
        owner=owner,
        name=name,
        description=description,
        default_mode=default_mode,
        manager_model=model,
        manager_instructions=manager_instructions,
    )


def room_update(
    *,
    room: Room,
    name: str | _Unset = UNSET,
    description: str | _Unset = UNSET,
    default_mode: str | _Unset = UNSET,
    manager_model: str | None | _Unset = UNSET,
    manager_instructions: str | _Unset = UNSET,
) -> Room:
    """Change the given fields of `room` (a partial update); `manager_model=None` clears it."""
    changes: dict[str, Any] = {}
    if name is not UNSET:
        changes["name"] = name
    if description is not UNSET:
        changes["description"] = description
    if default_mode is not UNSET:
        _check_mode(default_mode)
        changes["default_mode"] = default_mode
    if manager_model is not UNSET:
        changes["manager_model"] = (
            _active_model(manager_model, field="manager_model") if manager_model else None
        )
    if manager_instructions is not UNSET:
        changes["manager_instructions"] = manager_instructions
    if changes:
        for field, value in changes.items():
            setattr(room, field, value)
        room.save(update_fields=[*changes, "updated_at"])
    return room


def room_delete(*, room: Room) -> None:
    """Soft-delete `room`: it, its agents and its sessions disappear from the API at once (the
    guard requires a room that is not deleted); the rows stay for usage and audit history."""
    room.deleted_at = timezone.now()
    room.save(update_fields=["deleted_at", "updated_at"])


# --- agents ------------------------------------------------------------------------------------


def agent_create(
    *,
    room: Room,
    name: str,
    handle: str,
    model: str,
    system_prompt: str = "",
    temperature: Decimal = Decimal("0.70"),
    max_output_tokens: int | None = None,
    position: int | None = None,
    is_active: bool = True,
    tools: list[str] | None = None,
) -> Agent:
    """Add an agent to `room`. The handle is stored lower-case and must be free among the
    room's agents; `model` must be an active catalog id; `position` is 0..`AGENT_POSITION_MAX`,
    and without it the agent goes last.
    A duplicate handle — also one created concurrently — is a 400 naming `handle`."""
    handle = _normalized_handle(handle)
    config = _active_model(model, field="model")
    _check_temperature(temperature)
    _check_max_output_tokens(max_output_tokens, config)
    if position is not None:
        _check_position(position)
    tools = _checked_tools(tools or [])
    try:
        with transaction.atomic():
            if position is None:
                # Lock the room so concurrent creations each get their own last place.
                Room.objects.select_for_update(no_key=True).filter(pk=room.pk).first()
                last = Agent.objects.alive().filter(room=room).aggregate(last=Max("position"))
                position = _position_after(last["last"])
            return Agent.objects.create(
                room=room,
                name=name,
                handle=handle,
                system_prompt=system_prompt,
                model=config,
                temperature=temperature,
                max_output_tokens=max_output_tokens,
                position=position,
                is_active=is_active,
                tools=tools,
            )
    except IntegrityError as exc:
        if _is_duplicate_handle(exc):
            raise _duplicate_handle(handle) from exc
        raise


def agent_update(
    *,
    agent: Agent,
    name: str | _Unset = UNSET,
    handle: str | _Unset = UNSET,
    system_prompt: str | _Unset = UNSET,
    model: str | _Unset = UNSET,
    temperature: Decimal | _Unset = UNSET,
    max_output_tokens: int | None | _Unset = UNSET,
    position: int | _Unset = UNSET,
    is_active: bool | _Unset = UNSET,
    tools: list[str] | _Unset = UNSET,
) -> Agent:
    """Change the given fields of `agent` under the same rules as `agent_create`. Changing the
    model re-checks the agent's `max_output_tokens` against the new model's limit."""
    changes: dict[str, Any] = {}
    if name is not UNSET:
        changes["name"] = name
    if handle is not UNSET:
        changes["handle"] = _normalized_handle(handle)
    if system_prompt is not UNSET:
        changes["system_prompt"] = system_prompt
    if model is not UNSET:
        changes["model"] = _active_model(model, field="model")
    if temperature is not UNSET:
        _check_temperature(temperature)
        changes["temperature"] = temperature
    if max_output_tokens is not UNSET:
        changes["max_output_tokens"] = max_output_tokens
    if "model" in changes or "max_output_tokens" in changes:
        _check_max_output_tokens(
            changes.get("max_output_tokens", agent.max_output_tokens),
            changes.get("model") or agent.model,
        )
    if position is not UNSET:
        _check_position(position)
        changes["position"] = position
    if is_active is not UNSET:
        changes["is_active"] = is_active
    if tools is not UNSET:
        changes["tools"] = _checked_tools(tools)
    if not changes:
        return agent
    for field, value in changes.items():
        setattr(agent, field, value)
    try:
        with transaction.atomic():
            agent.save(update_fields=[*changes, "updated_at"])
    except IntegrityError as exc:
        if _is_duplicate_handle(exc):
            raise _duplicate_handle(changes["handle"]) from exc
        raise
    return agent


def agent_delete(*, agent: Agent) -> None:
    """Soft-delete `agent`: hidden everywhere (and never selected to speak again), its handle
    free for a new agent; the row stays because past messages and usage events reference it."""
    agent.deleted_at = timezone.now()
    agent.is_active = False
    agent.save(update_fields=["deleted_at", "is_active", "updated_at"])
