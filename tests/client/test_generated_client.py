"""A client generated from `/api/schema/` by `openapi-python-client` drives the API end to end.

The production server (gunicorn + uvicorn, `testing.server`) serves this test's database with
the stub provider behind it; the client is generated from the schema that server serves — any
warning of the generator fails the test — and imported from a temporary directory. Then every
step goes through the generated code only, no hand-written HTTP: the model catalog, a room and
its agents, a session, a turn in each mode, a refused mention, an idempotent replay, a streamed
turn (`Accept: text/event-stream`, the body parsed as events), the turns, the messages, usage.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from testing import factories
from testing.server import HOST, gunicorn_server, server_env
from usage.services import credits_grant

pytestmark = [
    pytest.mark.postgres,
    # The server process reads what this test writes: rows must be committed.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

PACKAGE = "pantheon_generated_client"
MINI = "openai/gpt-4o-mini"
GENERATOR_TIMEOUT_S = 120


@pytest.fixture
def base_url(llm_stub: Any) -> Iterator[str]:
    """The production server on this test database, the stub provider as its default one."""
    env = server_env(OPENROUTER_BASE_URL=llm_stub.url, OPENROUTER_API_KEY="sk-test")
    with gunicorn_server(env, log_name="generated-client-gunicorn", workers=1) as running:
        yield f"http://{HOST}:{running.port}"


def generate_client(schema_url: str, into: Path) -> str:
    """Run `openapi-python-client generate` on the served schema; return its output. Fails on
    a non-zero exit and on any warning."""
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [
            str(bin_dir / "openapi-python-client"),
            "generate",
            "--url",
            schema_url,
            "--meta",
            "none",
            "--output-path",
            str(into / PACKAGE),
            "--fail-on-warning",
        ],
        cwd=into,
        # The generator formats its output with ruff (a post hook): the venv's, found on PATH.
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=GENERATOR_TIMEOUT_S,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output
    return output


@pytest.fixture
def generated(base_url: str, tmp_path: Path) -> Iterator[ModuleType]:
    """The generated package, imported from the temporary directory (and forgotten after)."""
    generate_client(f"{base_url}/api/schema/", tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


class Api:
    """The generated client's operations and models, by name."""

    def __init__(self, package: ModuleType, base_url: str, key: str) -> None:
        self.models = importlib.import_module(f"{PACKAGE}.models")
        self.client = package.AuthenticatedClient(
            base_url=base_url, token=key, raise_on_unexpected_status=True, timeout=30.0
        )

    def op(self, tag: str, operation: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.api.{tag}.{operation}")

    def run_turn(self, session_id: Any, text: str, mode: str, **kwargs: Any) -> Any:
        body = self.models.TurnCreateRequest(input_=text, mode=self.models.TurnModeEnum(mode))
        return self.op("sessions", "turns_create").sync_detailed(
            client=self.client, session_id=session_id, body=body, **kwargs
        )


def parse_events(text: str) -> list[tuple[str, Any]]:
    """(event, data) of each Server-Sent Event of a stream read whole; comments skipped."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if not line.startswith(":"))
        if fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def speakers(turn: Any) -> list[str]:
    return [m.agent.handle for m in turn.messages if m.agent]


def test_a_generated_client_drives_the_whole_api(generated: ModuleType, base_url: str) -> None:
    user, key = factories.make_api_key()
    credits_grant(user=user, amount_micro=1_000_000_000, note="client", idempotency_key="client")
    api = Api(generated, base_url, key)
    models = api.models

    catalog = api.op("models", "models_list").sync(client=api.client, limit=100)
    assert MINI in [model.id for model in catalog.results]

    room = api.op("rooms", "rooms_create").sync(
        client=api.client,
        body=models.RoomCreateRequest(
            name="Generated", default_mode=models.TurnModeEnum.MANUAL, manager_model=MINI
        ),
    )
    assert (room.default_mode, room.manager_model) == (models.TurnModeEnum.MANUAL, MINI)
    for handle in ("ada", "bo"):
        body = models.AgentCreateRequest(
            name=handle.title(), handle=handle, system_prompt=f"You are {handle}.", model=MINI
        )
        api.op("agents", "agents_create").sync(client=api.client, room_id=room.id, body=body)
    agents = api.op("agents", "agents_list").sync(client=api.client, room_id=room.id)
    assert [(a.handle, a.model) for a in agents.results] == [("ada", MINI), ("bo", MINI)]
    session = api.op("sessions", "sessions_create").sync(
        client=api.client, room_id=room.id, body=models.SessionCreateRequest(title="Generated")
    )

    # A turn in each mode, parsed into the generated Turn model.
    manual = api.run_turn(session.id, "@bo what do you think?", "manual")
    assert manual.status_code == 201 and speakers(manual.parsed) == ["bo"]
    round_table = api.run_turn(session.id, "Your views, please.", "round_table")
    assert speakers(round_table.parsed) == ["ada", "bo"]
    assert round_table.parsed.mode == models.TurnModeEnum.ROUND_TABLE
    orchestrated = api.run_turn(session.id, "Who should take this one?", "orchestrator").parsed
    assert orchestrated.routing.selected and speakers(orchestrated) == orchestrated.routing.selected

    # A refusal is the generated Error model.
    refused = api.run_turn(session.id, "@nobody hello", "round_table")
    assert refused.status_code == 422 and refused.parsed.error.code == "unknown_agent"
    assert "@nobody" in refused.parsed.error.message

    # An idempotent replay: the same turn again, marked as such.
    first = api.run_turn(session.id, "@ada once", "manual", idempotency_key="generated-1")
    replay = api.run_turn(session.id, "@ada once", "manual", idempotency_key="generated-1")
    assert replay.status_code == 201 and replay.parsed.id == first.parsed.id
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers

    # The stream, asked for through the documented Accept header, is a string of events.
    streamed = api.run_turn(
        session.id,
        "@ada @bo stream it",
        "manual",
        accept=models.TurnsCreateAccept("text/event-stream"),
    )
    assert streamed.status_code == 200 and isinstance(streamed.parsed, str)
    assert streamed.headers["Content-Type"].startswith("text/event-stream")
    events = parse_events(streamed.parsed)
    names = [name for name, _ in events]
    assert names[0] == "turn.started" and names[-1] == "turn.completed"
    assert names.count("agent.completed") == 2 and "agent.delta" in names
    completed = models.Turn.from_dict(events[-1][1])
    assert completed.status == models.TurnStatusEnum.COMPLETED
    assert speakers(completed) == ["ada", "bo"]

    turns = api.op("sessions", "turns_list").sync(client=api.client, session_id=session.id)
    assert [t.turn_index for t in turns.results] == [1, 2, 3, 4, 5]
    assert turns.results[-1].id == completed.id
    messages = api.op("sessions", "messages_list").sync(client=api.client, session_id=session.id)
    assert messages.results[0].content == "@bo what do you think?"

    usage = api.op("usage", "usage_summary").sync(client=api.client)
    assert float(usage.credits_.available) < 1_000  # `credits` is a Python builtin
    # One call per reply, plus the orchestrator's routing call; the replay made none.
    calls = 1 + 2 + (1 + len(orchestrated.routing.selected)) + 1 + 2
    assert [(row.model, row.calls) for row in usage.by_model] == [(MINI, calls)]
    assert float(usage.by_model[0].credits_burned) > 0
    assert sum(day.calls for day in usage.by_day) == calls and len(usage.by_day) == 30
    events_page = api.op("usage", "usage_events_list").sync(client=api.client, limit=100)
    assert {event.model for event in events_page.results} == {MINI}
    ledger = api.op("usage", "usage_ledger_list").sync(client=api.client)
    assert ledger.results[-1].kind == models.LedgerKindEnum.GRANT
