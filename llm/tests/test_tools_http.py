"""Staff-defined HTTP tools against a real HTTP server on 127.0.0.1: arguments as a JSON body
(POST) or query parameters (GET) with the secret header, error statuses, the response cap, the
timeout, the host allowlist checked at save time and at every call; the secret stored encrypted
and never shown in the admin."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test import Client

from accounts.models import User
from llm.models import HttpTool
from llm.tools.registry import (
    ToolContext,
    ToolResult,
    available_tools,
    openai_tools,
    tool_run,
    unknown_tools,
)

pytestmark = pytest.mark.django_db

CONTEXT = ToolContext(user_id=uuid.uuid4(), session_id=None, room_id=uuid.uuid4())
SECRET = "tok-http-tool-never-shown-7731"
PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
}


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class ToolServer:
    url: str
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        state: ToolServer = self.server.state
        state.received.append(
            Received(
                self.command,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
        )
        if parts.path == "/echo":
            self._send(200, json.dumps({"ok": True, "body": body.decode() or None}).encode())
        elif parts.path.startswith("/status/"):
            self._send(int(parts.path.rsplit("/", 1)[1]), b"upstream says no")
        elif parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/echo")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/big-declared":
            self._send(200, b"a" * 3000)
        elif parts.path == "/big-streamed":
            # No Content-Length: the client must count what it reads and stop.
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"b" * 1000)
                    self.wfile.flush()
            except OSError:
                pass  # the client hung up once it had enough
        elif parts.path == "/slow":
            state.release.wait(10)
            self._send(200, b"late")
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _handle
    do_POST = _handle


@pytest.fixture
def tool_server(settings: Any) -> Iterator[ToolServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = ToolServer(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    settings.TOOL_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()


def make_tool(server: ToolServer, path: str = "/echo", **fields: Any) -> HttpTool:
    tool = HttpTool(
        name=fields.pop("name", "weather"),
        description=fields.pop("description", "The weather in a city."),
        parameters=fields.pop("parameters", PARAMETERS),
        url=server.url + path,
        method=fields.pop("method", "POST"),
        secret_header_name=fields.pop("secret_header_name", "X-Api-Key"),
        **fields,
    )
    tool.secret_header_value = SECRET
    tool.full_clean()
    tool.save()
    return tool


def run(name: str, arguments: dict[str, Any]) -> ToolResult:
    return tool_run(name, json.dumps(arguments), CONTEXT)


# --- calls -----------------------------------------------------------------------------------


def test_post_sends_the_arguments_as_json_with_the_secret_header(tool_server: ToolServer) -> None:
    make_tool(tool_server)
    result = run("weather", {"city": "Lyon", "days": 2})
    assert result.status == "ok", result
    assert json.loads(result.content)["ok"] is True
    (request,) = tool_server.received
    assert request.method == "POST" and request.path == "/echo"
    assert json.loads(request.body) == {"city": "Lyon", "days": 2}
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-api-key"] == SECRET


def test_get_sends_the_arguments_as_query_parameters(tool_server: ToolServer) -> None:
    make_tool(tool_server, method="GET")
    result = run("weather", {"city": "São Paulo", "days": 3})
    assert result.status == "ok", result
    (request,) = tool_server.received
    assert request.method == "GET"
    assert request.query == {"city": ["São Paulo"], "days": ["3"]}
    assert request.body == b""
    assert request.headers["x-api-key"] == SECRET


def test_get_keeps_the_urls_own_query_and_its_keys_win(tool_server: ToolServer) -> None:
    make_tool(tool_server, path="/echo?account=acme&units=metric", method="GET")
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}}
    HttpTool.objects.filter(name="weather").update(parameters=parameters)
    result = run("weather", {"city": "Lyon", "account": "victim"})
    assert result.status == "ok", result
    (request,) = tool_server.received
    assert request.query == {"account": ["acme"], "units": ["metric"], "city": ["Lyon"]}


def test_no_secret_header_when_none_is_set(tool_server: ToolServer) -> None:
    tool = make_tool(tool_server)
    tool.secret_header_value = ""
    tool.save()
    assert run("weather", {"city": "Oslo"}).status == "ok"
    assert "x-api-key" not in tool_server.received[0].headers


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_a_non_2xx_status_is_an_error_result(tool_server: ToolServer, status: int) -> None:
    make_tool(tool_server, path=f"/status/{status}")
    result = run("weather", {"city": "Lyon"})
    assert result.status == "error"
    assert f"HTTP {status}" in result.error
    assert "upstream says no" in result.error


def test_redirects_are_not_followed(tool_server: ToolServer) -> None:
    make_tool(tool_server, path="/redirect")
    result = run("weather", {"city": "Lyon"})
    assert result.status == "error"
    assert "HTTP 302" in result.error and "not followed" in result.error
    assert [r.path for r in tool_server.received] == ["/redirect"]


@pytest.mark.parametrize("path", ["/big-declared", "/big-streamed"])
def test_a_response_over_the_cap_is_an_error_result(
    tool_server: ToolServer, settings: Any, path: str
) -> None:
    settings.TOOL_HTTP_MAX_RESPONSE_BYTES = 2048
    make_tool(tool_server, path=path)
    result = run("weather", {"city": "Lyon"})
    assert result.status == "error"
    assert "response too large" in result.error


def test_a_response_within_the_cap_is_returned_whole(
    tool_server: ToolServer, settings: Any
) -> None:
    settings.TOOL_HTTP_MAX_RESPONSE_BYTES = 4096
    make_tool(tool_server, path="/big-declared")
    result = run("weather", {"city": "Lyon"})
    assert result.status == "ok" and result.content == "a" * 3000


def test_a_slow_response_times_out(tool_server: ToolServer, settings: Any) -> None:
    make_tool(tool_server, path="/slow")
    settings.TOOL_TIMEOUT_SECONDS = 0.3
    started = time.monotonic()
    result = run("weather", {"city": "Lyon"})
    assert result.status == "timeout", result
    assert time.monotonic() - started < 2.0


def test_arguments_failing_the_schema_never_reach_the_server(tool_server: ToolServer) -> None:
    make_tool(tool_server)
    for arguments in ({}, {"city": 3}, {"city": "Lyon", "days": 0}):
        result = run("weather", arguments)
        assert result.status == "error" and result.error.startswith("invalid arguments")
    assert tool_server.received == []


def test_a_host_off_the_allowlist_is_refused_without_a_request(
    tool_server: ToolServer, settings: Any
) -> None:
    make_tool(tool_server)
    settings.TOOL_HTTP_ALLOWED_HOSTS = ["api.example.com"]  # changed after the save
    result = run("weather", {"city": "Lyon"})
    assert result.status == "error"
    assert "TOOL_HTTP_ALLOWED_HOSTS" in result.error
    settings.TOOL_HTTP_ALLOWED_HOSTS = []
    result = run("weather", {"city": "Lyon"})
    assert result.status == "error" and "TOOL_HTTP_ALLOWED_HOSTS" in result.error
    assert tool_server.received == []


def test_a_bad_installed_tool_path_does_not_take_http_tools_down(
    tool_server: ToolServer, settings: Any
) -> None:
    make_tool(tool_server)
    settings.PANTHEON_TOOLS = ["testing.tools_sample:missing"]
    assert run("weather", {"city": "Lyon"}).status == "ok"
    names = [d["function"]["name"] for d in openai_tools(["weather", "gone"], CONTEXT)]
    assert names == ["weather"]


# --- listing ---------------------------------------------------------------------------------


def test_enabled_http_tools_are_listed(tool_server: ToolServer) -> None:
    make_tool(tool_server)
    make_tool(tool_server, name="off", enabled=False)
    by_name = {info.name: info for info in available_tools()}
    assert by_name["weather"].kind == "http"
    assert by_name["weather"].parameters == PARAMETERS
    assert by_name["weather"].description == "The weather in a city."
    assert "off" not in by_name
    assert unknown_tools(["weather", "off"]) == ["off"]
    definition = openai_tools(["weather", "off"], CONTEXT)
    assert definition == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "The weather in a city.",
                "parameters": PARAMETERS,
            },
        }
    ]
    assert run("off", {"city": "x"}).error == "unknown tool 'off'"


def test_http_tools_are_cached_for_the_catalog_bound(
    tool_server: ToolServer, settings: Any, process_clock: Any
) -> None:
    settings.CATALOG_CACHE_SECONDS = 30
    assert unknown_tools(["weather"]) == ["weather"]
    make_tool(tool_server)
    assert unknown_tools(["weather"]) == ["weather"]  # the process's copy
    process_clock.advance(31)
    assert unknown_tools(["weather"]) == []


# --- the model: allowlist, schema, secret at rest ----------------------------------------------


def test_the_secret_is_stored_encrypted(tool_server: ToolServer) -> None:
    tool = make_tool(tool_server)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT secret_header_value_encrypted FROM llm_http_tools WHERE id = %s", [tool.pk]
        )
        (stored,) = cursor.fetchone()
    assert stored and SECRET not in stored
    assert HttpTool.objects.get(pk=tool.pk).secret_header_value == SECRET


def test_the_model_refuses_a_host_off_the_allowlist(settings: Any) -> None:
    from django.core.exceptions import ValidationError

    settings.TOOL_HTTP_ALLOWED_HOSTS = ["api.example.com"]
    tool = HttpTool(name="t", description="d", url="https://evil.example.net/x")
    with pytest.raises(ValidationError) as excinfo:
        tool.full_clean()
    assert "TOOL_HTTP_ALLOWED_HOSTS" in str(excinfo.value.message_dict["url"])
    tool.url = "https://api.example.com/x"
    tool.full_clean()
    tool.url = "http://api.example.com/x"  # plain http to a remote host
    with pytest.raises(ValidationError, match="https"):
        tool.full_clean()


@pytest.mark.parametrize(
    "parameters",
    [
        [],
        {"type": "string"},
        {"type": "object", "properties": {"a": {"type": "strange"}}},
        {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}},
        {"type": "object", "properties": {}, "required": ["missing"]},
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}},
    ],
)
def test_the_model_refuses_a_bad_parameter_schema(settings: Any, parameters: Any) -> None:
    from django.core.exceptions import ValidationError

    settings.TOOL_HTTP_ALLOWED_HOSTS = ["api.example.com"]
    tool = HttpTool(
        name="t", description="d", url="https://api.example.com/", parameters=parameters
    )
    with pytest.raises(ValidationError) as excinfo:
        tool.full_clean()
    assert "parameters" in excinfo.value.message_dict


def test_the_timeout_may_not_exceed_the_global_one(settings: Any) -> None:
    from django.core.exceptions import ValidationError

    settings.TOOL_HTTP_ALLOWED_HOSTS = ["api.example.com"]
    settings.TOOL_TIMEOUT_SECONDS = 10
    tool = HttpTool(name="t", description="d", url="https://api.example.com/", timeout_seconds=11)
    with pytest.raises(ValidationError) as excinfo:
        tool.full_clean()
    assert "timeout_seconds" in excinfo.value.message_dict


# --- admin -----------------------------------------------------------------------------------


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(email="staff@example.com", password="x"))
    return client


def form_data(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": json.dumps(PARAMETERS),
        "url": "https://api.example.com/weather",
        "method": "POST",
        "secret_header_name": "X-Api-Key",
        "secret_header_value": SECRET,
        "timeout_seconds": "5",
        "enabled": "on",
    }
    data.update(overrides)
    return data


def test_admin_adds_a_tool_with_its_secret_encrypted(staff: Client, settings: Any) -> None:
    settings.TOOL_HTTP_ALLOWED_HOSTS = ["api.example.com"]
    response = staff.post("/admin/llm/httptool/add/", form_data())
    assert response.status_code == 302, response.content.decode()[:3000]
    tool = HttpTool.objects.get(name="weather")
    assert tool.secret_header_value == SECRET
    assert SECRET not in tool.secret_header_value_encrypted
    assert tool.parameters == PARAMETERS


def test_admin_rejects_a_disallowed_host(staff: Client, settings: Any) -> None:
    settings.TOOL_HTTP_ALLOWED_HOSTS = ["api.example.com"]
    response = staff.post(
        "/admin/llm/httptool/add/", form_data(url="https://other.example.org/weather")
    )
    assert response.status_code == 200
    assert "TOOL_HTTP_ALLOWED_HOSTS" in response.content.decode()
    assert not HttpTool.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"parameters": "{not json"}, "Enter a valid JSON"),
        ({"parameters": '{"type": "array"}'}, "object"),
        ({"name": "calculator"}, "built-in or installed tool"),
        ({"secret_header_name": ""}, "Name the header"),
    ],
)
def test_admin_rejects_bad_definitions(
    staff: Client, settings: Any, overrides: dict[str, str], message: str
) -> None:
    settings.TOOL_HTTP_ALLOWED_HOSTS = ["api.example.com"]
    response = staff.post("/admin/llm/httptool/add/", form_data(**overrides))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not HttpTool.objects.exists()


def test_admin_never_renders_the_secret(staff: Client, settings: Any) -> None:
    settings.TOOL_HTTP_ALLOWED_HOSTS = ["api.example.com"]
    assert staff.post("/admin/llm/httptool/add/", form_data()).status_code == 302
    tool = HttpTool.objects.get(name="weather")
    for url in (f"/admin/llm/httptool/{tool.pk}/change/", "/admin/llm/httptool/"):
        html = staff.get(url).content.decode()
        assert SECRET not in html
        assert SECRET[:8] not in html
        assert tool.secret_header_value_encrypted not in html
    change = staff.get(f"/admin/llm/httptool/{tool.pk}/change/").content.decode()
    assert 'type="password"' in change and 'name="secret_header_value"' in change
    listing = staff.get("/admin/llm/httptool/").content.decode()
    assert "api.example.com" in listing  # the host column


def test_admin_keeps_the_secret_when_left_blank(staff: Client, settings: Any) -> None:
    settings.TOOL_HTTP_ALLOWED_HOSTS = ["api.example.com"]
    assert staff.post("/admin/llm/httptool/add/", form_data()).status_code == 302
    tool = HttpTool.objects.get(name="weather")
    response = staff.post(
        f"/admin/llm/httptool/{tool.pk}/change/",
        form_data(description="Changed.", secret_header_value=""),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    tool.refresh_from_db()
    assert tool.description == "Changed."
    assert tool.secret_header_value == SECRET


def test_admin_asks_for_the_secret_again_when_the_host_changes(
    staff: Client, settings: Any
) -> None:
    settings.TOOL_HTTP_ALLOWED_HOSTS = ["api.example.com", "other.example.com"]
    assert staff.post("/admin/llm/httptool/add/", form_data()).status_code == 302
    tool = HttpTool.objects.get(name="weather")
    url = f"/admin/llm/httptool/{tool.pk}/change/"
    moved = form_data(url="https://other.example.com/weather", secret_header_value="")
    response = staff.post(url, moved)
    assert response.status_code == 200
    assert "enter the secret again" in response.content.decode()
    response = staff.post(url, {**moved, "clear_secret": "on"})
    assert response.status_code == 302
    tool.refresh_from_db()
    assert tool.url == "https://other.example.com/weather" and not tool.has_secret
