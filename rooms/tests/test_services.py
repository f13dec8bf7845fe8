"""Room and agent services: the domain rules, including duplicate handles under concurrency."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection

from llm.models import ModelConfig
from pantheon.api.exceptions import http_status_of
from pantheon.errors import ApplicationError
from rooms.models import Agent
from rooms.services import agent_create, agent_delete, agent_update, room_create, room_update
from testing.factories import DEFAULT_MODEL, make_agent, make_room


def _field_error(exc_info: pytest.ExceptionInfo[ApplicationError]) -> list[str]:
    exc = exc_info.value
    assert (http_status_of(exc.code), exc.code) == (400, "validation_error")
    return list(exc.details)


@pytest.mark.django_db
def test_room_create_and_update_check_the_manager_model():
    room = make_room()
    ModelConfig.objects.filter(pk="openai/gpt-4o").update(is_active=False)

    with pytest.raises(ApplicationError) as exc_info:
        room_create(owner=room.owner, name="R", manager_model="openai/gpt-4o")
    assert _field_error(exc_info) == ["manager_model"]
    with pytest.raises(ApplicationError) as exc_info:
        room_update(room=room, manager_model="nobody/none")
    assert _field_error(exc_info) == ["manager_model"]

    room_update(room=room, manager_model=DEFAULT_MODEL)
    room.refresh_from_db()
    assert room.manager_model_id == DEFAULT_MODEL
    room_update(room=room, manager_model=None)
    room.refresh_from_db()
    assert room.manager_model_id is None


@pytest.mark.django_db
def test_agent_create_lowercases_the_handle_and_goes_last():
    room = make_room()
    make_agent(room, position=7)
    agent = agent_create(room=room, name="Ada", handle="AdA", model=DEFAULT_MODEL)
    assert (agent.handle, agent.position) == ("ada", 8)


@pytest.mark.django_db
def test_agent_create_turns_the_unique_violation_into_a_handle_error():
    room = make_room()
    agent_create(room=room, name="Ada", handle="ada", model=DEFAULT_MODEL, position=0)
    # An explicit position takes no room lock: the database constraint is what refuses it.
    with pytest.raises(ApplicationError) as exc_info:
        agent_create(room=room, name="Ada 2", handle="ADA", model=DEFAULT_MODEL, position=0)
    assert _field_error(exc_info) == ["handle"]
    assert room.agents.count() == 1


@pytest.mark.django_db
def test_agent_update_rechecks_output_limit_when_the_model_changes():
    agent = make_agent(max_output_tokens=10_000)  # within gpt-4o-mini's 16,384
    with pytest.raises(ApplicationError) as exc_info:
        agent_update(agent=agent, model="openai/gpt-3.5-turbo")  # 4,096 at most
    assert _field_error(exc_info) == ["max_output_tokens"]

    agent.refresh_from_db()
    agent_update(agent=agent, model="openai/gpt-3.5-turbo", max_output_tokens=4096)
    agent.refresh_from_db()
    assert (agent.model_id, agent.max_output_tokens) == ("openai/gpt-3.5-turbo", 4096)


@pytest.mark.django_db
def test_agent_update_to_a_taken_handle_is_a_handle_error():
    room = make_room()
    make_agent(room, handle="ada")
    bo = make_agent(room, handle="bo")
    with pytest.raises(ApplicationError) as exc_info:
        agent_update(agent=bo, handle="Ada")
    assert _field_error(exc_info) == ["handle"]
    assert Agent.objects.get(pk=bo.pk).handle == "bo"


@pytest.mark.django_db
def test_agent_delete_hides_it_and_frees_its_handle():
    room = make_room()
    ada = make_agent(room, handle="ada")
    agent_delete(agent=ada)
    ada.refresh_from_db()
    assert ada.deleted_at is not None and ada.is_active is False
    again = agent_create(room=room, name="Ada", handle="ada", model=DEFAULT_MODEL)
    assert list(Agent.objects.alive().filter(room=room)) == [again]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"temperature": Decimal("2.01")}, "temperature"),
        ({"temperature": Decimal("-0.01")}, "temperature"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"max_output_tokens": 16_385}, "max_output_tokens"),
        ({"handle": "9lives"}, "handle"),
        ({"handle": "x" * 33}, "handle"),
        ({"model": "nobody/none"}, "model"),
    ],
)
@pytest.mark.django_db
def test_agent_create_refuses_invalid_fields(fields, field):
    room = make_room()
    args = {"name": "Ada", "handle": "ada", "model": DEFAULT_MODEL, **fields}
    with pytest.raises(ApplicationError) as exc_info:
        agent_create(room=room, **args)
    assert _field_error(exc_info) == [field]
    assert room.agents.count() == 0


def _race(target, count: int) -> list[object]:
    """Run `target` in `count` threads released together; each result or exception, in order."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize("position", [None, 0])
def test_concurrent_duplicate_handles_give_one_agent_and_handle_errors(position):
    room = make_room()
    results = _race(
        lambda i: agent_create(
            room=room, name=f"Ada {i}", handle="ada", model=DEFAULT_MODEL, position=position
        ),
        4,
    )
    created = [r for r in results if isinstance(r, Agent)]
    refused = [r for r in results if isinstance(r, ApplicationError)]
    assert len(created) == 1 and len(refused) == 3, results
    assert all(exc.details == {"handle": [exc.details["handle"][0]]} for exc in refused)
    assert Agent.objects.filter(room=room).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_creations_each_go_last():
    room = make_room()
    results = _race(
        lambda i: agent_create(room=room, name=f"A{i}", handle=f"a{i}", model=DEFAULT_MODEL), 5
    )
    assert all(isinstance(r, Agent) for r in results), results
    positions = sorted(Agent.objects.filter(room=room).values_list("position", flat=True))
    assert positions == [0, 1, 2, 3, 4]
