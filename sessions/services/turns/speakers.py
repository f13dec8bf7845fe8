"""Who answers a turn, decided before anything is written (422 otherwise): the addressed agents
in manual mode (`agent_ids`, else @mentions in order of first mention), every active agent in
round table. The orchestrator's speakers are chosen later by its routing call (orchestrator.py);
here it only needs an active agent to exist.

In every mode an @mention must name an active agent of the room (422 `unknown_agent`): a typo
or a retired agent is said at once rather than left for the room to answer without it. Mentions
are what `routing.parse_mentions` finds (no e-mail addresses, nothing inside code)."""

from __future__ import annotations

from uuid import UUID

from pantheon.errors import ApplicationError
from rooms.models import Agent, TurnMode
from sessions import routing


def unknown_agent(unknown: list[str], agents: tuple[Agent, ...]) -> ApplicationError:
    return ApplicationError(
        "Unknown or inactive agent: " + ", ".join(unknown) + ".",
        code="unknown_agent",
        details={"unknown": unknown, "available": [a.handle for a in agents]},
    )


def _no_agent_selected(agents: tuple[Agent, ...]) -> ApplicationError:
    return ApplicationError(
        "No agent was addressed: mention one with @handle or pass agent_ids.",
        code="no_agent_selected",
        details={"available": [a.handle for a in agents]},
    )


def resolve_speakers(
    *, agents: tuple[Agent, ...], mode: str, user_input: str, agent_ids: list[UUID] | None
) -> tuple[Agent, ...]:
    """The speakers of a manual or round-table turn (none yet for the orchestrator)."""
    if not agents:
        raise _no_agent_selected(agents)
    mentioned = _mentioned(agents, user_input=user_input)
    if mode == TurnMode.ROUND_TABLE:
        return agents
    if mode != TurnMode.MANUAL:
        return ()
    if agent_ids:
        return _by_id(agents, agent_ids)
    if not mentioned:
        raise _no_agent_selected(agents)
    return mentioned


def _by_id(agents: tuple[Agent, ...], agent_ids: list[UUID]) -> tuple[Agent, ...]:
    by_id = {a.id: a for a in agents}
    unknown = [str(i) for i in agent_ids if i not in by_id]
    if unknown:
        raise unknown_agent(unknown, agents)
    return tuple({i: by_id[i] for i in agent_ids}.values())


def _mentioned(agents: tuple[Agent, ...], *, user_input: str) -> tuple[Agent, ...]:
    """The agents `user_input` @mentions, in order of first mention; 422 `unknown_agent` when
    one is not an active agent of the room."""
    handles = routing.parse_mentions(user_input)
    by_handle = {a.handle: a for a in agents}
    unknown = [f"@{h}" for h in handles if h not in by_handle]
    if unknown:
        raise unknown_agent(unknown, agents)
    return tuple(by_handle[h] for h in handles)
