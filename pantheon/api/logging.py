"""Structured request logs: one JSON line per request, with ids, never secrets or prompt text.

`RequestLogMiddleware` (first in `MIDDLEWARE`, so it times everything and tags every answer)
logs one record per request on the `pantheon.request` logger — method, path (without the query
string), status, duration, the authenticated user's id and a request id. The request id comes
from the client's `X-Request-ID` when it is a sane token, else a new one; it is echoed in the
response's `X-Request-ID` and readable by other code through `current_request_id()` (so a
provider-call log line can carry it too).

What is never logged: headers other than `X-Request-ID` (so no `Authorization`, no API key),
the query string, request and response bodies (so no prompt or reply text).

`JsonFormatter` renders any record as one JSON object: time, level, logger, message, the
record's extra fields, and the formatted exception if there is one. `PlainFormatter`
(`LOG_FORMAT=plain`) writes text for a terminal, with control characters escaped, so a request
path carrying `%0A` (or an escape sequence) can neither forge a log line nor drive the terminal.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse
from django.utils.functional import SimpleLazyObject, empty

logger = logging.getLogger("pantheon.request")

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is reused only when it is a plain token: it lands in logs and a response header.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_request_id: ContextVar[str | None] = ContextVar("pantheon_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served in this context, or None outside a request."""
    return _request_id.get()


def _request_id_for(request: HttpRequest) -> str:
    supplied = request.headers.get(REQUEST_ID_HEADER, "")
    if _SANE_REQUEST_ID.match(supplied):
        return supplied
    return uuid.uuid4().hex


def _user_id(request: HttpRequest) -> str | None:
    """The authenticated user's id, without forcing a lookup nobody asked for: DRF puts the user
    it authenticated on the request; a lazy session user that was never read stays unread."""
    user = request.__dict__.get("user")
    if isinstance(user, SimpleLazyObject) and user._wrapped is empty:
        return None
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return str(user.pk)


class RequestLogMiddleware:
    """One structured log line per request, and the `X-Request-ID` header on every response.

    Sync and async capable, so it adds no thread hop under ASGI. A streaming response is logged
    when its last chunk has been sent (`duration_ms` then covers the whole stream)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        request_id = _request_id_for(request)
        token = _request_id.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        return self._finish(request, response, request_id, started)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        request_id = _request_id_for(request)
        token = _request_id.set(request_id)
        started = time.perf_counter()
        try:
            response = await self.get_response(request)
        finally:
            _request_id.reset(token)
        return self._finish(request, response, request_id, started)

    def _finish(
        self, request: HttpRequest, response: HttpResponseBase, request_id: str, started: float
    ) -> HttpResponseBase:
        response[REQUEST_ID_HEADER] = request_id
        if isinstance(response, StreamingHttpResponse):
            self._log_after_stream(request, response, request_id, started)
        else:
            _log_request(request, response, request_id, started)
        return response

    def _log_after_stream(
        self,
        request: HttpRequest,
        response: StreamingHttpResponse,
        request_id: str,
        started: float,
    ) -> None:
        content = response.streaming_content

        if response.is_async:

            async def logged_async() -> AsyncIterator[Any]:
                try:
                    async for chunk in content:  # type: ignore[union-attr]
                        yield chunk
                finally:
                    _log_request(request, response, request_id, started, streamed=True)

            response.streaming_content = logged_async()
        else:

            def logged_sync() -> Iterator[Any]:
                try:
                    yield from content  # type: ignore[misc]
                finally:
                    _log_request(request, response, request_id, started, streamed=True)

            response.streaming_content = logged_sync()


def _log_request(
    request: HttpRequest,
    response: HttpResponseBase,
    request_id: str,
    started: float,
    *,
    streamed: bool = False,
) -> None:
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    fields: dict[str, Any] = {
        "event": "request",
        "request_id": request_id,
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        "duration_ms": duration_ms,
        "user_id": _user_id(request),
    }
    if streamed:
        fields["streamed"] = True
    level = logging.ERROR if response.status_code >= 500 else logging.INFO
    logger.log(
        level,
        "%s %s %s %.1fms",
        request.method,
        request.path,
        response.status_code,
        duration_ms,
        extra=fields,
    )


# The attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: `time`, `level`, `logger`, `message`, the record's extra
    fields, and `exception` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_"):
                payload[name] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


# C0 and C1 control characters, DEL, and the Unicode line and paragraph separators: anything that
# could end a line, rewrite one (\r, \b) or talk to the terminal (ESC).
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_control_characters(text: str) -> str:
    """`text` with every control character written as a visible `\\xNN` / `\\uNNNN` escape."""
    return _CONTROL_CHARACTERS.sub(_escape_control, text)


class PlainFormatter(logging.Formatter):
    """The `plain` log format: the record's line with control characters escaped. A traceback or
    stack keeps its lines, each escaped and indented, so a line that starts at the left margin is
    always the start of a record."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        lines = [escape_control_characters(self.formatMessage(record))]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for text in (record.exc_text, record.stack_info and self.formatStack(record.stack_info)):
            if text:
                lines.extend("  " + escape_control_characters(line) for line in text.split("\n"))
        return "\n".join(lines)
