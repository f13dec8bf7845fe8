"""What the sessions tests build again and again: a user with credits and a one-agent room
(`single_agent`), a three-agent room for the modes (`Room`), turns in a row, and the ledger
check every money-touching test ends with."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from django.core.management import call_command
from rest_framework.test import APIClient

from testing import factories
from testing.stub_llm import LlmStub, StubReply
from usage.services import credits_grant

MINI = "openai/gpt-4o-mini"
FAILING = "openai/gpt-4o"  # Bo's model: scripted replies and failures are keyed to it
MANAGER = "anthropic/claude-3.5-haiku"
SUMMARY_MODEL = "openai/gpt-4o-mini"
AGENT_MODEL = "openai/gpt-4o"  # another model, so scripted summary answers are keyed apart

# Cites turn 1 only, so it is valid for any covered range.
GOOD_SUMMARY = {
    "summary_text": "The user opened with warm-up questions about the launch plan.",
    "key_facts": [{"text": "The launch is planned for spring.", "turns": [1]}],
    "decisions": [{"text": "Start with the EU market.", "turns": [1]}],
    "open_questions": [{"text": "Which price tier first?", "turns": [1]}],
    "action_items": [{"text": "Draft the press release.", "turns": [1]}],
}


def ledger_ok() -> None:
    """`manage.py verify_ledger` finds nothing wrong (it raises naming any problem)."""
    out = io.StringIO()
    call_command("verify_ledger", stdout=out)
    assert out.getvalue().strip().splitlines()[-1] == "ledger ok"


@dataclass
class Setup:
    client: APIClient
    user: Any
    room: Any
    agent: Any
    session: Any

    @property
    def url(self) -> str:
        return f"/api/v1/sessions/{self.session.id}/turns"

    def post(self, text: str, **extra: Any) -> Any:
        headers = extra.pop("headers", {})
        return self.client.post(self.url, {"input": text, **extra}, format="json", headers=headers)


def single_agent(model_id: str = MINI, **agent_fields: Any) -> Setup:
    """A user with plenty of credits, a room with @ada alone, a session, an API client."""
    user, key = factories.make_api_key()
    credits_grant(
        user=user, amount_micro=10_000_000_000, note="tests", idempotency_key=f"t-{user.id}"
    )
    room = factories.make_room(owner=user)
    agent = factories.make_agent(
        room,
        name="Ada",
        handle="ada",
        system_prompt="You are Ada.",
        model_id=model_id,
        **agent_fields,
    )
    session = factories.make_session(room)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return Setup(client=client, user=user, room=room, agent=agent, session=session)


class Room:
    """A user with credits and a room of @ada (mini), @bo (gpt-4o) and @cy (mini), a session."""

    def __init__(self, mode: str = "round_table", credits_micro: int = 10_000_000_000) -> None:
        self.user, self.key = factories.make_api_key()
        key = self.key
        credits_grant(
            user=self.user, amount_micro=credits_micro, idempotency_key=f"modes-{self.user.id}"
        )
        self.room = factories.make_room(
            owner=self.user,
            default_mode=mode,
            manager_model_id=MANAGER,
            manager_instructions="Prefer the builder for how-to questions.",
        )
        self.ada = factories.make_agent(
            self.room, name="Ada", handle="ada", system_prompt="You are Ada.", model_id=MINI
        )
        self.bo = factories.make_agent(
            self.room, name="Bo", handle="bo", system_prompt="You are Bo.", model_id=FAILING
        )
        self.cy = factories.make_agent(
            self.room, name="Cy", handle="cy", system_prompt="You are Cy.", model_id=MINI
        )
        self.session = factories.make_session(self.room)
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    def post(self, text: str, **body: Any) -> Any:
        return self.client.post(
            f"/api/v1/sessions/{self.session.id}/turns", {"input": text, **body}, format="json"
        )


def roles_and_contents(request: Any) -> list[tuple[str, str]]:
    """A stub request's prompt as (role, content) pairs."""
    return [(m["role"], m["content"]) for m in request.body["messages"]]


def run_turns(s: Setup, count: int) -> list[dict[str, Any]]:
    bodies = []
    for i in range(1, count + 1):
        response = s.post(f"question {i} about the launch")
        assert response.status_code == 201, response.content
        bodies.append(response.json())
    return bodies


def summary_requests(stub: LlmStub) -> list[Any]:
    return [r for r in stub.requests if r.model == SUMMARY_MODEL]


def script_routing(
    stub: LlmStub, answer: dict[str, Any] | None = None, times: int = 1, **reply: Any
) -> None:
    """The orchestrator's next routing answer(s), as the manager model will send them."""
    stub.enqueue(StubReply(json=answer, **reply), model=MANAGER, times=times)
