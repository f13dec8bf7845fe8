"""Staff-defined HTTP tools: a langchain-core tool that calls a URL with the model's arguments.

The URL's host is checked against `TOOL_HTTP_ALLOWED_HOSTS` before any connection is made, at
every call (the setting may have changed since the tool was saved). POST sends the arguments as a
JSON body, GET as query parameters; the secret header (decrypted only for the call) goes with
them. Redirects are not followed, the response is streamed and abandoned past
`TOOL_HTTP_MAX_RESPONSE_BYTES`, and the whole call is bounded by the tool's timeout.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from django.conf import settings
from langchain_core.tools import BaseTool, StructuredTool

from llm.crypto import SecretUnreadable, decrypt_secret
from llm.tools.errors import ToolError, ToolTimeout
from llm.tools.schema import http_tool_url_error

_USER_AGENT = "Pantheon-tool/1"
_ERROR_BODY_CHARS = 300


@dataclass(frozen=True)
class HttpToolSpec:
    """What a process keeps of an `llm.models.HttpTool` row: the secret stays encrypted."""

    name: str
    description: str
    parameters: dict[str, Any]
    url: str
    method: str
    secret_header_name: str
    secret_header_encrypted: str
    timeout_seconds: float


def http_tool_build(spec: HttpToolSpec) -> BaseTool:
    """The langchain-core tool that runs `spec`: its argument schema is the stored JSON schema
    (arguments are checked against it by the registry before the call)."""

    def call(**arguments: Any) -> str:
        return http_tool_call(spec, arguments)

    return StructuredTool.from_function(
        func=call,
        name=spec.name,
        description=spec.description,
        args_schema=spec.parameters,
    )


def _query_params(arguments: dict[str, Any]) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for key, value in arguments.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is None:
                continue
            if isinstance(item, bool):
                params.append((key, "true" if item else "false"))
            elif isinstance(item, str | int | float):
                params.append((key, str(item)))
            else:
                params.append((key, json.dumps(item, separators=(",", ":"))))
    return params


def http_tool_call(spec: HttpToolSpec, arguments: dict[str, Any]) -> str:
    """The response body of one call of `spec` with `arguments` (text). Raises `ToolError` (a
    refused host, a non-2xx status, a response too large, a network error) or `ToolTimeout`."""
    refused = http_tool_url_error(spec.url)
    if refused:
        raise ToolError(f"HTTP tool {spec.name!r} refused: {refused}")
    headers = {"User-Agent": _USER_AGENT, "Accept": "application/json, text/plain;q=0.9, */*;q=0.5"}
    if spec.secret_header_name and spec.secret_header_encrypted:
        try:
            headers[spec.secret_header_name] = decrypt_secret(spec.secret_header_encrypted)
        except SecretUnreadable as exc:
            raise ToolError(
                f"HTTP tool {spec.name!r}: its secret header cannot be decrypted with the "
                "configured PANTHEON_ENCRYPTION_KEYS"
            ) from exc
    seconds = max(0.001, min(float(spec.timeout_seconds), float(settings.TOOL_TIMEOUT_SECONDS)))
    deadline = time.monotonic() + seconds
    cap = int(settings.TOOL_HTTP_MAX_RESPONSE_BYTES)
    request: dict[str, Any] = {"headers": headers}
    if spec.method == "GET":
        # The URL's own query stays, and its keys are staff's: the model adds, never overrides
        # (httpx would replace the URL's query with `params`).
        fixed = parse_qsl(urlsplit(spec.url).query, keep_blank_values=True)
        taken = {key for key, _ in fixed}
        request["params"] = fixed + [p for p in _query_params(arguments) if p[0] not in taken]
    else:
        request["json"] = arguments
    try:
        # No proxy from the environment: the allowlisted host is the one connected to.
        with (
            httpx.Client(
                timeout=httpx.Timeout(seconds), follow_redirects=False, trust_env=False
            ) as client,
            client.stream(spec.method, spec.url, **request) as response,
        ):
            return _read(spec, response, cap=cap, deadline=deadline, seconds=seconds)
    except httpx.TimeoutException as exc:
        raise ToolTimeout(
            f"HTTP tool {spec.name!r}: no complete answer within {seconds:g}s"
        ) from exc
    except httpx.HTTPError as exc:
        raise ToolError(f"HTTP tool {spec.name!r}: request failed ({type(exc).__name__})") from exc


def _read(
    spec: HttpToolSpec, response: httpx.Response, *, cap: int, deadline: float, seconds: float
) -> str:
    ok = 200 <= response.status_code < 300
    # A failure's body only serves as a hint in the error: a little of it is read.
    limit = cap if ok else _ERROR_BODY_CHARS
    declared = response.headers.get("content-length", "")
    if ok and declared.isdigit() and int(declared) > cap:
        raise ToolError(f"HTTP tool {spec.name!r}: response too large (over {cap} bytes)")
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            if ok:
                raise ToolError(f"HTTP tool {spec.name!r}: response too large (over {cap} bytes)")
            break
        if time.monotonic() > deadline:
            raise ToolTimeout(f"HTTP tool {spec.name!r}: no complete answer within {seconds:g}s")
    text = bytes(body[:limit]).decode(response.encoding or "utf-8", errors="replace")
    if not ok:
        status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
        if 300 <= response.status_code < 400:
            status += " (redirects are not followed)"
        snippet = text.strip()
        raise ToolError(f"HTTP tool {spec.name!r}: {status}" + (f": {snippet}" if snippet else ""))
    return text
