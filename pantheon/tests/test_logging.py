"""Structured request logs: one line per request with ids, never secrets or prompt text."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import re
import sys
from typing import Any

import pytest
from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from django.test import RequestFactory
from rest_framework.test import APIClient

from pantheon.api.logging import JsonFormatter, RequestLogMiddleware, current_request_id
from testing import factories
from usage.services import credits_grant

MIDDLEWARE = "pantheon.api.logging.RequestLogMiddleware"


@pytest.fixture(autouse=True)
def _request_logging(settings: Any) -> None:
    # The middleware goes first (outermost), as in production settings.
    if MIDDLEWARE not in settings.MIDDLEWARE:
        settings.MIDDLEWARE = [MIDDLEWARE, *settings.MIDDLEWARE]


def _request_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pantheon.request"]


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record as the JSON formatter writes it, plus its raw attributes."""
    formatter = JsonFormatter()
    return "\n".join(formatter.format(r) + repr(r.__dict__) for r in caplog.records)


@pytest.mark.django_db
def test_one_json_line_per_request_with_ids(caplog: pytest.LogCaptureFixture) -> None:
    user, key = factories.make_api_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    caplog.set_level(logging.INFO, logger="pantheon.request")

    first = client.get("/api/v1/auth/me?limit=5")
    second = client.get("/api/v1/rooms")

    records = _request_records(caplog)
    assert len(records) == 2
    lines = [json.loads(JsonFormatter().format(r)) for r in records]
    assert lines[0]["method"] == "GET"
    assert lines[0]["path"] == "/api/v1/auth/me"  # no query string
    assert lines[0]["status"] == 200
    assert lines[0]["user_id"] == str(user.pk)
    assert isinstance(lines[0]["duration_ms"], float) and lines[0]["duration_ms"] >= 0
    assert lines[0]["logger"] == "pantheon.request" and lines[0]["level"] == "INFO"
    assert lines[1]["path"] == "/api/v1/rooms"
    # A fresh id per request, echoed to the client.
    assert lines[0]["request_id"] == first["X-Request-ID"]
    assert lines[1]["request_id"] == second["X-Request-ID"]
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.django_db
def test_a_sane_client_request_id_is_kept_and_junk_is_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pantheon.request")
    client = APIClient()

    kept = client.get("/api/v1/health", headers={"X-Request-ID": "trace-42.abc:1"})
    replaced = client.get("/api/v1/health", headers={"X-Request-ID": "bad id\nwith newline"})

    assert kept["X-Request-ID"] == "trace-42.abc:1"
    assert replaced["X-Request-ID"] != "bad id\nwith newline"
    assert len(replaced["X-Request-ID"]) == 32
    assert [r.request_id for r in _request_records(caplog)] == [
        "trace-42.abc:1",
        replaced["X-Request-ID"],
    ]


@pytest.mark.django_db
def test_unauthenticated_and_error_requests_are_logged_without_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, key = factories.make_api_key()
    caplog.set_level(logging.DEBUG)
    client = APIClient()

    client.get("/api/v1/auth/me", headers={"Authorization": "Bearer pan_0123abcd_wrongsecret"})
    client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {key}x"})
    client.get("/api/v1/nowhere", headers={"Authorization": f"Bearer {key}"})

    records = _request_records(caplog)
    assert [(r.status, r.user_id) for r in records] == [(401, None), (401, None), (404, None)]
    logged = _everything_logged(caplog)
    assert "wrongsecret" not in logged
    assert key not in logged
    assert key.rsplit("_", 1)[1] not in logged  # not even the secret part
    assert "Bearer" not in logged


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_turn_logs_neither_the_key_nor_the_prompt_nor_the_reply(
    caplog: pytest.LogCaptureFixture, llm_stub: Any
) -> None:
    user, key = factories.make_api_key()
    credits_grant(user=user, amount_micro=10_000_000, note="t", idempotency_key=f"log-{user.pk}")
    room = factories.make_room(owner=user)
    factories.make_agent(room, handle="ada", name="Ada")
    session = factories.make_session(room)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    prompt = "@ada the launch codeword is zebra-papaya-17"
    caplog.set_level(logging.DEBUG)

    response = client.post(f"/api/v1/sessions/{session.id}/turns", {"input": prompt}, format="json")

    assert response.status_code == 201, response.content
    reply = response.json()["messages"][1]["content"]
    assert "zebra-papaya" in reply  # the stub echoes the prompt: the reply is secret too
    records = _request_records(caplog)
    assert len(records) == 1
    assert (records[0].method, records[0].status) == ("POST", 201)
    assert records[0].user_id == str(user.pk)
    logged = _everything_logged(caplog)
    assert "zebra-papaya" not in logged
    assert key not in logged and "Bearer" not in logged


def test_a_streaming_response_is_logged_once_when_the_stream_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pantheon.request")
    middleware = RequestLogMiddleware(
        lambda request: StreamingHttpResponse(iter([b"event: a\n\n", b"event: b\n\n"]))
    )

    response = middleware(RequestFactory().post("/api/v1/sessions/x/turns"))

    assert _request_records(caplog) == []  # nothing yet: the stream has not been sent
    assert b"".join(response.streaming_content) == b"event: a\n\nevent: b\n\n"
    records = _request_records(caplog)
    assert len(records) == 1
    assert records[0].streamed is True and records[0].status == 200
    assert records[0].request_id == response["X-Request-ID"]


def test_async_chain_logs_and_exposes_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pantheon.request")
    seen: list[str | None] = []

    async def view(request: Any) -> HttpResponse:
        seen.append(current_request_id())
        return HttpResponse(status=204)

    middleware = RequestLogMiddleware(view)
    request = RequestFactory().get("/api/v1/health", headers={"X-Request-ID": "abc-1"})

    response = asyncio.run(middleware(request))

    assert response.status_code == 204 and response["X-Request-ID"] == "abc-1"
    assert seen == ["abc-1"]
    assert current_request_id() is None  # reset after the request
    assert [(r.path, r.status, r.request_id) for r in _request_records(caplog)] == [
        ("/api/v1/health", 204, "abc-1")
    ]


def test_json_formatter_renders_extras_and_exceptions() -> None:
    log = logging.getLogger("pantheon.tests.json")
    try:
        raise ValueError("boom")
    except ValueError:
        record = log.makeRecord(
            log.name,
            logging.ERROR,
            __file__,
            1,
            "failed %s",
            ("call",),
            exc_info=sys.exc_info(),
            extra={"request_id": "r1", "status": 502},
        )

    line = JsonFormatter().format(record)

    assert "\n" not in line.replace("\\n", "")  # one line
    payload = json.loads(line)
    assert payload["message"] == "failed call"
    assert payload["level"] == "ERROR"
    assert payload["request_id"] == "r1" and payload["status"] == 502
    assert "ValueError: boom" in payload["exception"]
    assert payload["time"].endswith("+00:00")


def _plain_formatter() -> logging.Formatter:
    """The `plain` formatter exactly as settings configure it for `LOG_FORMAT=plain`."""
    config = settings.LOGGING["formatters"]["plain"]
    return logging.config.DictConfigurator(settings.LOGGING).configure_formatter(dict(config))


# What a plain log line starts with: the formatter's asctime.
_RECORD_START = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} ", re.MULTILINE)


@pytest.mark.django_db
def test_plain_format_cannot_be_forged_through_the_path(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pantheon.request")
    forged = "2026-01-01 00:00:00,000 INFO pantheon.request GET /admin/ 200 1.0ms"

    APIClient().get("/api/v1/nowhere%0A" + forged.replace(" ", "%20") + "%0D%1B[2J%E2%80%A8x")

    [record] = _request_records(caplog)
    assert "\n" in record.getMessage()  # the path really carries the newline…
    line = _plain_formatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert len(_RECORD_START.findall(line)) == 1  # …and the output is one record
    assert "/api/v1/nowhere\\x0a2026-01-01" in line
    assert "\\x0d\\x1b[2J\\u2028x" in line


def test_plain_format_indents_a_traceback_under_its_record() -> None:
    log = logging.getLogger("pantheon.tests.plain")
    try:
        raise ValueError("bad input\n2026-01-01 00:00:00,000 INFO forged line")
    except ValueError:
        record = log.makeRecord(
            log.name, logging.ERROR, __file__, 1, "failed %s", ("call\x07",), sys.exc_info()
        )

    text = _plain_formatter().format(record)

    lines = text.split("\n")
    assert lines[0].endswith("ERROR pantheon.tests.plain failed call\\x07")
    assert len(_RECORD_START.findall(text)) == 1
    assert all(line.startswith("  ") for line in lines[1:])
    assert (
        "  ValueError: bad input" in lines and "  2026-01-01 00:00:00,000 INFO forged line" in lines
    )
