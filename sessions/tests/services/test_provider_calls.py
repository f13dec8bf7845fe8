"""One provider call as the pipeline and the summarizer make it: never inside a database
transaction (enforced by the call itself), and a provider that cannot be used is an outcome,
not an exception."""

from __future__ import annotations

import pytest
from django.db import transaction

from llm.gateway import ChatMessage, GatewayRequest
from llm.models import ModelConfig, Provider
from pantheon.db import NetworkCallInTransaction
from sessions.services.provider_calls import provider_call
from sessions.tests.builders import MINI

pytestmark = pytest.mark.django_db


def _request() -> GatewayRequest:
    return GatewayRequest(
        model=MINI, messages=[ChatMessage(role="user", content="Hi")], max_tokens=16
    )


def test_a_provider_call_refuses_to_run_inside_a_transaction(llm_stub) -> None:  # type: ignore[no-untyped-def]
    model = ModelConfig.objects.get(pk=MINI)
    with transaction.atomic(), pytest.raises(NetworkCallInTransaction):
        provider_call(model, _request(), estimated_prompt_tokens=5)
    assert llm_stub.requests == []


def test_the_test_cases_own_transaction_does_not_count(llm_stub) -> None:  # type: ignore[no-untyped-def]
    # pytest-django runs this test inside a transaction Django marks as the test case's own:
    # it stands for the autocommit a real request runs in.
    outcome = provider_call(ModelConfig.objects.get(pk=MINI), _request(), estimated_prompt_tokens=5)
    assert outcome.status == "ok" and outcome.reached
    assert len(llm_stub.requests) == 1


def test_an_unusable_provider_is_an_outcome_with_nothing_sent(llm_stub) -> None:  # type: ignore[no-untyped-def]
    provider = Provider.objects.create(name="off", base_url=llm_stub.url, is_active=False)
    model = ModelConfig.objects.get(pk=MINI)
    model.provider = provider
    outcome = provider_call(model, _request(), estimated_prompt_tokens=5)
    assert not outcome.reached
    assert (outcome.status, outcome.error_code) == ("error", "llm_provider_error")
    assert "disabled" in outcome.error_message
    assert llm_stub.requests == []
