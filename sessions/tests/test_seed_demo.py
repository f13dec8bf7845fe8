"""`manage.py seed_demo`: idempotent demo data, and printed credentials that work."""

from __future__ import annotations

import json
import re
import stat
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import ApiKey, User
from accounts.services import api_key_revoke
from llm.models import ModelConfig, Provider
from rooms.models import Agent, Room
from rooms.services import agent_delete
from sessions.models import Message, Session, SessionSummary, ToolCall, Turn, TurnContextAudit
from sessions.services.summaries.schema import LIST_FIELDS, validate_summary
from usage.models import LlmCallEvent
from usage.selectors import credits_for_user
from usage.services import credits_adjust

pytestmark = pytest.mark.django_db

DEMO_EMAIL = "demo@pantheon.local"
ADMIN_EMAIL = "admin@pantheon.local"


def _seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def _printed(label: str, output: str) -> str:
    match = re.search(rf"^\s*{label}:\s+(\S+)\s*$", output, re.MULTILINE)
    assert match, output
    return match.group(1)


def _auth_me(key: str):  # type: ignore[no-untyped-def]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client.get("/api/v1/auth/me")


def _admin_login(password: str) -> bool:
    client = Client()
    response = client.post(
        "/admin/login/?next=/admin/", {"username": ADMIN_EMAIL, "password": password}
    )
    return response.status_code == 302 and "_auth_user_id" in client.session


def test_running_twice_leaves_one_of_everything() -> None:
    _seed()
    _seed()

    demo = User.objects.get(email=DEMO_EMAIL)
    assert demo.display_name
    admin = User.objects.get(email=ADMIN_EMAIL)
    assert admin.is_staff and admin.is_superuser and admin.is_active
    assert User.objects.count() == 2

    assert set(Room.objects.alive().filter(owner=demo).values_list("name", flat=True)) == {
        "Demo room",
        "Demo room: failures",
    }
    room = Room.objects.alive().get(owner=demo, name="Demo room")
    assert room.default_mode == "round_table"
    agents = list(Agent.objects.alive().filter(room=room).order_by("position"))
    assert [agent.handle for agent in agents] == ["ada", "bo", "cy"]
    assert {agent.model_id for agent in agents} == {"openai/gpt-4o-mini"}
    assert len({agent.system_prompt for agent in agents}) == 3
    assert Session.objects.alive().filter(room=room, title="Demo session").count() == 1

    demo_keys = ApiKey.objects.filter(user=demo, name="demo")
    assert demo_keys.count() == 2
    assert sum(key.is_usable() for key in demo_keys) == 1


def test_the_printed_key_authenticates_and_the_previous_one_is_revoked() -> None:
    first_key = _printed("API key", _seed())
    second_key = _printed("API key", _seed())

    assert first_key != second_key
    response = _auth_me(second_key)
    assert response.status_code == 200, response.content
    assert response.json()["email"] == DEMO_EMAIL
    assert _auth_me(first_key).status_code == 401


def test_the_demo_user_has_credits_for_turns_topped_up_on_each_run() -> None:
    output = _seed()
    demo = User.objects.get(email=DEMO_EMAIL)
    assert credits_for_user(demo)["available"] == "100.000000"
    assert "100.000000 credits" in output
    credits_adjust(user=demo, amount_micro=-60_000_000, idempotency_key="test-spend")
    assert credits_for_user(demo)["available"] == "40.000000"

    _seed()
    _seed()

    assert credits_for_user(demo)["available"] == "100.000000"


def test_the_printed_admin_password_logs_in_and_a_rerun_replaces_it() -> None:
    first_output = _seed()
    assert _printed("e-mail", first_output) == ADMIN_EMAIL
    first_password = _printed("password", first_output)
    second_password = _printed("password", _seed())

    assert first_password != second_password
    assert _admin_login(second_password)
    assert not _admin_login(first_password)


def test_a_deleted_demo_agent_is_recreated() -> None:
    _seed()
    agent_delete(agent=Agent.objects.alive().get(handle="bo"))

    _seed()

    handles = Agent.objects.alive().filter(room__name="Demo room").values_list("handle", flat=True)
    assert sorted(handles) == ["ada", "bo", "cy"]


def test_links_ids_and_shell_lines_use_the_base_url() -> None:
    output = _seed("--base-url", "http://example.test:9000/")

    room = Room.objects.get(name="Demo room")
    session = Session.objects.get(title="Demo session")
    key = _printed("API key", output)
    assert _printed("URL", output) == "http://example.test:9000/"
    assert _printed("API docs", output) == "http://example.test:9000/api/docs/"
    # Ids to paste, and shell lines that need nothing copied by hand.
    assert f"Room:       {room.pk} (Demo room, round_table)" in output
    for agent in Agent.objects.alive().filter(room=room):
        assert re.search(rf"@{agent.handle}\s+{agent.pk}$", output, re.MULTILINE), output
    assert _printed("Session", output.replace(" (turns so far: 0)", "")) == str(session.pk)
    assert "  API=http://example.test:9000/api/v1\n" in output
    assert f"  KEY={key}\n" in output
    assert f"  SESSION={session.pk}\n" in output
    assert '  curl -H "Authorization: Bearer $KEY" $API/auth/me\n' in output
    assert "$API/sessions/$SESSION/turns" in output
    assert "Every 8th turn of a session asks for a summary" in output
    assert '  curl -H "Authorization: Bearer $KEY" $API/sessions/$SESSION/summary\n' in output


# --- stable credentials (--credentials-file, as scripts/run.sh passes it) --------------------


def _stored(path: Path) -> dict[str, str]:
    return json.loads(path.read_text())


def test_a_credentials_file_keeps_the_key_and_password_across_runs(tmp_path: Path) -> None:
    path = tmp_path / ".pantheon-demo.json"
    first = _seed("--credentials-file", str(path))
    key, password = _printed("API key", first), _printed("password", first)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _stored(path)["api_key"] == key and _stored(path)["admin_password"] == password

    second = _seed("--credentials-file", str(path))

    assert _printed("API key", second) == key
    assert _printed("password", second) == password
    assert "stay the same across restarts" in second and "delete that file" in second
    assert str(path) in second and "a new key" not in second
    assert _auth_me(key).status_code == 200
    assert _admin_login(password)
    assert ApiKey.objects.filter(name="demo").count() == 1  # nothing issued, nothing revoked
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_revoked_key_in_the_credentials_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / ".pantheon-demo.json"
    first = _seed("--credentials-file", str(path))
    old_key, password = _printed("API key", first), _printed("password", first)
    api_key_revoke(api_key=ApiKey.objects.get(name="demo"))

    second = _seed("--credentials-file", str(path))

    new_key = _printed("API key", second)
    assert new_key != old_key
    assert "a new key" in second
    assert _stored(path)["api_key"] == new_key
    assert _auth_me(new_key).status_code == 200
    assert _auth_me(old_key).status_code == 401
    assert _printed("password", second) == password and _admin_login(password)
    assert sum(k.is_usable() for k in ApiKey.objects.filter(name="demo")) == 1


def test_a_credentials_file_from_another_database_gets_a_new_key(tmp_path: Path) -> None:
    # E.g. db.sqlite3 was deleted: the file's key exists nowhere; its password is set again.
    path = tmp_path / ".pantheon-demo.json"
    path.write_text(json.dumps({"api_key": "pan_0123456789ab_gone", "admin_password": "pw-1x9"}))

    output = _seed("--credentials-file", str(path))

    key = _printed("API key", output)
    assert key != "pan_0123456789ab_gone" and _stored(path)["api_key"] == key
    assert _auth_me(key).status_code == 200
    assert _printed("password", output) == "pw-1x9" and _admin_login("pw-1x9")


def test_an_unusable_demo_model_is_a_clear_error_and_writes_nothing() -> None:
    ModelConfig.objects.filter(pk="openai/gpt-4o-mini").update(is_active=False)

    with pytest.raises(CommandError, match="not an active model"):
        _seed()

    assert not User.objects.exists()
    assert not Room.objects.exists()


# --- the history for the staff console ------------------------------------------------------


def _history_counts() -> tuple[int, ...]:
    return tuple(
        model.objects.count()
        for model in (Session, Turn, Message, TurnContextAudit, SessionSummary, LlmCallEvent)
    )


def test_history_has_every_mode_a_rejection_a_failed_agent_and_a_summary() -> None:
    output = _seed()

    assert "History:    5 demo session(s) played now" in output
    turns = Turn.objects.select_related("session")
    modes = {turn.mode for turn in turns}
    assert modes == {"manual", "round_table", "orchestrator"}
    manual = turns.filter(mode="manual", status="completed")
    assert manual.count() == 3 and all("@" in t.user_input for t in manual)
    # Ada's arithmetic question went through her calculator (the offline model calls it).
    calculated = ToolCall.objects.get(turn__in=manual)
    assert (calculated.name, calculated.status, calculated.result) == (
        "calculator",
        "ok",
        "7006652",
    )
    assert "7006652" in calculated.message.content
    assert {m.agent.handle for m in Message.objects.filter(turn__in=manual, role="assistant")} == {
        "ada",
        "bo",
        "cy",
    }
    routed = turns.filter(mode="orchestrator")
    assert routed.count() == 2
    assert all(t.status == "completed" and t.routing_selected for t in routed)
    assert sorted(t.routing_reason for t in routed) == [  # the offline model tells the truth
        "[offline model] routed by mention: @ada",
        "[offline model] routed by mention: @cy",
    ]
    assert LlmCallEvent.objects.filter(purpose="routing").count() == 2

    rejected = TurnContextAudit.objects.get(outcome="rejected")
    assert rejected.turn is None
    assert rejected.model == "openai/gpt-3.5-turbo"
    assert rejected.estimated_tokens_final > rejected.input_budget
    assert rejected.session.title == "Rejected: input over the context window"
    assert rejected.session.turn_counter == 0  # a rejected request allocates no turn

    partial = Turn.objects.get(status="partial")
    replies = {m.agent.handle: m for m in partial.messages.filter(role="assistant")}
    assert replies["gus"].status == "ok"
    assert replies["vic"].status == "error"
    assert replies["vic"].error_code == "llm_provider_error"
    down = LlmCallEvent.objects.get(turn_id=partial.id, status="error")
    assert down.provider == "demo-local-vllm (down)"

    summary = SessionSummary.objects.get()
    assert summary.status == "ready"
    assert summary.session.title == "Round table: what to build first"
    # An extractive summary of the two user questions (the offline replies are placeholders).
    assert summary.summary_text.startswith(
        "[offline model] Extractive summary of turns 1-2: User: Hello team, what should we build"
    )
    assert summary.open_questions == [
        {"text": "Hello team, what should we build first?", "turns": [1]},
        {"text": "Which risk should we test this week, and how?", "turns": [2]},
    ]
    stored = {"summary_text": summary.summary_text, **{n: getattr(summary, n) for n in LIST_FIELDS}}
    assert validate_summary(stored, first_turn=1, last_turn=summary.last_turn_covered) == stored
    assert LlmCallEvent.objects.filter(purpose="summary").count() >= 1


def test_history_is_played_once() -> None:
    _seed()
    after_first = _history_counts()

    output = _seed()

    assert _history_counts() == after_first
    assert "History:    0 demo session(s) played now" in output


def test_the_down_provider_is_bound_only_while_the_demo_turn_runs() -> None:
    _seed()

    assert ModelConfig.objects.get(pk="mistralai/mistral-7b-instruct").provider is None
    provider = Provider.objects.get(name="demo-local-vllm (down)")
    assert provider.is_active is False
    assert provider.base_url == "http://127.0.0.1:9/v1"


def test_history_never_calls_a_configured_provider(settings, llm_stub) -> None:  # type: ignore[no-untyped-def]
    # Even with a provider key configured, the demo history is played on the offline model.
    _seed()

    assert llm_stub.requests == []
    providers = set(LlmCallEvent.objects.values_list("provider", flat=True))
    assert providers == {"offline", "demo-local-vllm (down)"}
