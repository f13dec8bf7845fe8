"""The tool registry: which tools exist, their OpenAI definitions, and running one call.

Four sources, listed in this order (a name is taken by the first source that has it):

- built-ins (`llm.tools.builtins`): `calculator`, `current_time`;
- app tools registered at start-up with `register_tool` (a factory of the tool for a
  `ToolContext`: `session_search` is registered by the sessions app, which owns the data);
- installed tools, the import paths in `PANTHEON_TOOLS`, loaded at first use
  (`ImproperlyConfigured` for a bad path; `manage.py check` reports it too);
- enabled HTTP tools (`llm.models.HttpTool`), cached per process for `CATALOG_CACHE_SECONDS`.

`tool_run` never raises for a tool's failure: an unknown name, arguments that are not JSON or do
not fit the schema, an exception in the tool and a timeout are all results the model can read.
It runs the tool in a worker thread and waits at most `TOOL_TIMEOUT_SECONDS`; call it outside any
database transaction (an HTTP tool may take seconds, and a tool reading the database does so on
its worker thread's own connection).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

import pydantic
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.utils.module_loading import import_string
from langchain_core.tools import BaseTool, ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool

from llm.json_schema import UnsupportedSchema, schema_errors
from llm.models import HttpTool
from llm.tools.builtins import BUILTIN_TOOLS
from llm.tools.errors import ToolError, ToolTimeout
from llm.tools.http import HttpToolSpec, http_tool_build
from llm.tools.schema import TOOL_NAME_PATTERN
from pantheon.process_cache import ProcessValue

logger = logging.getLogger(__name__)

ToolKind = Literal["builtin", "installed", "http"]
ToolStatus = Literal["ok", "error", "timeout"]
REGISTRABLE_KINDS: frozenset[str] = frozenset({"builtin", "installed"})
TRUNCATION_MARKER = "\n[truncated: {cut} more characters]"
# Threads that run tool calls. A call that times out keeps its thread until it returns (a thread
# cannot be killed): HTTP tools bound their own requests, other tools should too.
POOL_THREADS = 32


@dataclass(frozen=True)
class ToolContext:
    """Who a tool runs for: passed to app tools' factories when a call is prepared."""

    user_id: UUID
    session_id: UUID | None
    room_id: UUID | None


@dataclass(frozen=True)
class ToolInfo:
    """One tool as `GET tools` lists it. `parameters` is the JSON schema of its arguments (as
    the model sees it)."""

    name: str
    description: str
    kind: ToolKind
    parameters: dict[str, Any] = field(hash=False, compare=False)


@dataclass(frozen=True)
class ToolResult:
    """One tool call's outcome. `content` is what goes back to the model (for a failure, the
    error in words), cut to `TOOL_RESULT_MAX_CHARS` with a marker; `error` is the bare error
    message ("" when `status` is ok)."""

    status: ToolStatus
    content: str
    latency_ms: int
    error: str = ""


# --- app tools -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _AppTool:
    name: str
    factory: Callable[[ToolContext], BaseTool]
    description: str
    kind: ToolKind


_app_tools: dict[str, _AppTool] = {}
_app_tools_lock = threading.Lock()
# A context for reading an app tool's schema when nobody calls it (listing, validation).
_SCHEMA_CONTEXT = ToolContext(user_id=UUID(int=0), session_id=None, room_id=None)


def register_tool(
    name: str,
    factory: Callable[[ToolContext], BaseTool],
    *,
    description: str,
    kind: str,
) -> None:
    """Register an app's tool whose behaviour depends on who calls it (called from the app's
    `AppConfig.ready`). `factory(context)` builds the langchain-core tool for one call; it must
    be cheap and touch no data (it is also called with a placeholder context to read the tool's
    argument schema). Registering a name again replaces the earlier registration (an app's
    `ready` may run more than once in tests); a built-in's name is refused."""
    if not TOOL_NAME_PATTERN.match(name):
        raise ValueError(f"tool name {name!r}: use 1-64 letters, digits, '-' or '_'")
    if kind not in REGISTRABLE_KINDS:
        raise ValueError(f"tool kind {kind!r}: one of {sorted(REGISTRABLE_KINDS)}")
    if name in _builtins():
        raise ValueError(f"tool name {name!r} is a built-in tool")
    with _app_tools_lock:
        _app_tools[name] = _AppTool(name, factory, description, kind)  # type: ignore[arg-type]
    _app_tool_parameters.cache_clear()


def unregister_tool(name: str) -> None:
    """Forget an app tool (tests)."""
    with _app_tools_lock:
        _app_tools.pop(name, None)
    _app_tool_parameters.cache_clear()


@functools.lru_cache(maxsize=256)
def _app_tool_parameters(name: str, factory: Callable[[ToolContext], BaseTool]) -> dict[str, Any]:
    return _parameters(factory(_SCHEMA_CONTEXT))


# --- built-ins and installed tools -----------------------------------------------------------


@functools.cache
def _builtins() -> dict[str, BaseTool]:
    return {tool.name: tool for tool in BUILTIN_TOOLS}


def _import_tool(path: str) -> BaseTool:
    """The langchain-core tool at `path` ("package.module:attribute" or
    "package.module.attribute"): a `BaseTool` instance (a function decorated with `@tool` is
    one) or a `BaseTool` subclass taking no arguments."""
    cleaned = path.strip()
    if cleaned.count(":") > 1 or not cleaned:
        raise ImproperlyConfigured(f"PANTHEON_TOOLS: {path!r} is not an import path")
    dotted = cleaned.replace(":", ".")
    try:
        target = import_string(dotted)
    except ImportError as exc:
        raise ImproperlyConfigured(f"PANTHEON_TOOLS: cannot import {path!r}: {exc}") from exc
    if isinstance(target, type) and issubclass(target, BaseTool):
        try:
            target = target()
        except Exception as exc:
            raise ImproperlyConfigured(
                f"PANTHEON_TOOLS: {path!r} is a tool class that cannot be built without "
                f"arguments: {exc}"
            ) from exc
    if not isinstance(target, BaseTool):
        raise ImproperlyConfigured(
            f"PANTHEON_TOOLS: {path!r} is a {type(target).__name__}, not a langchain-core tool "
            "(a BaseTool instance or a function decorated with @tool)"
        )
    return target


@functools.lru_cache(maxsize=8)
def _installed_for(paths: tuple[str, ...]) -> dict[str, BaseTool]:
    tools: dict[str, BaseTool] = {}
    for path in paths:
        tool = _import_tool(path)
        if not TOOL_NAME_PATTERN.match(tool.name):
            raise ImproperlyConfigured(
                f"PANTHEON_TOOLS: {path!r} is named {tool.name!r}; tool names are 1-64 letters, "
                "digits, '-' or '_'"
            )
        if tool.name in _builtins() or tool.name in tools:
            raise ImproperlyConfigured(
                f"PANTHEON_TOOLS: {path!r} is named {tool.name!r}, like another tool"
            )
        tools[tool.name] = tool
    return tools


def installed_tools() -> dict[str, BaseTool]:
    """The tools of `PANTHEON_TOOLS` by name, imported at first use (keyed by the setting's
    value, so a changed setting loads again). Raises `ImproperlyConfigured` for a bad entry."""
    raw = settings.PANTHEON_TOOLS
    paths = raw.split(",") if isinstance(raw, str) else list(raw)
    return _installed_for(tuple(p.strip() for p in paths if p and p.strip()))


# --- HTTP tools ------------------------------------------------------------------------------


def _http_tools_load() -> dict[str, HttpToolSpec]:
    return {
        row.name: HttpToolSpec(
            name=row.name,
            description=row.description,
            parameters=row.parameters,
            url=row.url,
            method=row.method,
            secret_header_name=row.secret_header_name,
            secret_header_encrypted=row.secret_header_value_encrypted,
            timeout_seconds=float(row.timeout_seconds),
        )
        for row in HttpTool.objects.filter(enabled=True).order_by("name")
    }


_http_tools = ProcessValue(load=_http_tools_load, seconds_setting="CATALOG_CACHE_SECONDS")


def _http_specs() -> dict[str, HttpToolSpec]:
    return _http_tools.get()


# --- listing ---------------------------------------------------------------------------------


def _parameters(tool: BaseTool) -> dict[str, Any]:
    return convert_to_openai_tool(tool)["function"].get(
        "parameters", {"type": "object", "properties": {}}
    )


def static_tool_names() -> set[str]:
    """Names taken by built-ins, app tools and installed tools: an HTTP tool cannot use them."""
    names = set(_builtins()) | set(_app_tools)
    with contextlib.suppress(ImproperlyConfigured):  # reported by `manage.py check`
        names |= set(installed_tools())
    return names


def available_tools() -> list[ToolInfo]:
    """Every tool an agent may list: built-ins, app tools, installed tools, enabled HTTP tools.
    Raises `ImproperlyConfigured` when `PANTHEON_TOOLS` has a bad entry."""
    infos: list[ToolInfo] = []
    seen: set[str] = set()

    def add(info: ToolInfo) -> None:
        if info.name in seen:
            logger.warning("tool %r is shadowed by another tool of that name", info.name)
            return
        seen.add(info.name)
        infos.append(info)

    for tool in _builtins().values():
        add(ToolInfo(tool.name, tool.description, "builtin", _parameters(tool)))
    for app_tool in list(_app_tools.values()):
        parameters = _app_tool_parameters(app_tool.name, app_tool.factory)
        add(ToolInfo(app_tool.name, app_tool.description, app_tool.kind, parameters))
    for tool in installed_tools().values():
        add(ToolInfo(tool.name, tool.description, "installed", _parameters(tool)))
    for spec in _http_specs().values():
        add(ToolInfo(spec.name, spec.description, "http", dict(spec.parameters)))
    return infos


def unknown_tools(names: Iterable[str]) -> list[str]:
    """The names (each once, in order) that are not available tools: what makes an agent's
    `tools` invalid."""
    known = {info.name for info in available_tools()}
    unknown: list[str] = []
    for name in names:
        if name not in known and name not in unknown:
            unknown.append(name)
    return unknown


def _resolve(name: str, context: ToolContext) -> BaseTool | None:
    """The tool called `name`, built for `context`; None when there is none."""
    if tool := _builtins().get(name):
        return tool
    if app_tool := _app_tools.get(name):
        return app_tool.factory(context)
    try:
        installed = installed_tools()
    except ImproperlyConfigured:
        # A bad PANTHEON_TOOLS entry (reported by `manage.py check`) does not take the HTTP
        # tools down with it; a name found nowhere else may be the broken one: say so.
        if spec := _http_specs().get(name):
            return http_tool_build(spec)
        raise
    if tool := installed.get(name):
        return tool
    if spec := _http_specs().get(name):
        return http_tool_build(spec)
    return None


def openai_tools(names: Iterable[str], context: ToolContext) -> list[dict[str, Any]]:
    """The OpenAI tool definitions (`{"type": "function", "function": {name, description,
    parameters}}`) of `names`, in order, each once. A name that is no longer a tool (an HTTP
    tool disabled since the agent was saved, or one a bad `PANTHEON_TOOLS` entry hides) is left
    out and logged: the reply goes on without it."""
    definitions: list[dict[str, Any]] = []
    done: set[str] = set()
    for name in names:
        if name in done:
            continue
        done.add(name)
        try:
            tool = _resolve(name, context)
        except ImproperlyConfigured as exc:
            logger.error("agent tool %r left out of the request: %s", name, exc)
            continue
        if tool is None:
            logger.warning("agent tool %r is not available: left out of the request", name)
            continue
        definition = convert_to_openai_tool(tool)
        definition["function"]["name"] = name
        definitions.append(definition)
    return definitions


# --- running ---------------------------------------------------------------------------------

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="tool")
        return _pool


def truncate(content: str, max_chars: int | None = None) -> str:
    """`content` cut to `max_chars` (default `TOOL_RESULT_MAX_CHARS`) characters in all, the
    cut marked at the end."""
    limit = int(settings.TOOL_RESULT_MAX_CHARS if max_chars is None else max_chars)
    if len(content) <= limit:
        return content
    keep = limit
    while True:  # the marker's length depends on how much is cut: find the fixed point
        marker = TRUNCATION_MARKER.format(cut=len(content) - keep)
        fitted = max(0, limit - len(marker))
        if fitted == keep:
            break
        keep = fitted
    if keep == 0:  # a limit too small for the marker
        return content[:limit]
    return content[:keep] + marker


def _as_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    content = getattr(output, "content", None)  # a ToolMessage
    if isinstance(content, str):
        return content
    try:
        return json.dumps(output, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(output)


def _validation_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error.get("loc", ())) or "$"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def _arguments_error(tool: BaseTool, arguments: dict[str, Any]) -> str | None:
    """Why `arguments` do not fit the tool's schema, or None when they do."""
    schema = tool.args_schema
    if isinstance(schema, dict):
        try:
            errors = schema_errors(arguments, schema)
        except UnsupportedSchema as exc:
            return f"the tool's parameter schema cannot be checked: {exc}"
        return "; ".join(errors) or None
    call_schema = tool.tool_call_schema
    if isinstance(call_schema, type) and issubclass(call_schema, pydantic.BaseModel):
        try:
            call_schema.model_validate(arguments)
        except pydantic.ValidationError as exc:
            return _validation_message(exc)
    return None


def _exception_message(exc: BaseException) -> str:
    if isinstance(exc, ToolError | ToolException):
        return str(exc) or type(exc).__name__
    if isinstance(exc, pydantic.ValidationError):
        return f"invalid value: {_validation_message(exc)}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _invoke(tool: BaseTool, arguments: dict[str, Any]) -> Any:
    try:
        return tool.invoke(arguments)
    finally:
        # This pool thread's own database connections (a tool that read data) go back now.
        connections.close_all()


def _failure(status: ToolStatus, error: str, started: float) -> ToolResult:
    latency_ms = int((time.monotonic() - started) * 1000)
    prefix = "Timeout" if status == "timeout" else "Error"
    return ToolResult(status, truncate(f"{prefix}: {error}"), latency_ms, error)


def tool_run(name: str, arguments_json: str, context: ToolContext) -> ToolResult:
    """Run one tool call of the model: `name` with its JSON `arguments_json`, for `context`.

    Never raises for the tool's failure: each becomes a result — `error` for an unknown tool,
    arguments that are not a JSON object or do not fit the schema, or an exception in the tool
    (its message, never a stack trace); `timeout` when it takes more than
    `TOOL_TIMEOUT_SECONDS`. Call it outside any database transaction."""
    started = time.monotonic()
    try:
        tool = _resolve(name, context)
    except ImproperlyConfigured as exc:
        logger.error("tools are misconfigured: %s", exc)
        return _failure("error", f"tool {name!r} is unavailable: tools are misconfigured", started)
    except Exception as exc:
        logger.exception("preparing tool %r failed", name)
        return _failure("error", f"tool {name!r} could not be prepared: {exc}", started)
    if tool is None:
        return _failure("error", f"unknown tool {name!r}", started)
    try:
        arguments = json.loads(arguments_json or "{}")
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        return _failure("error", f"invalid arguments: not JSON ({exc})", started)
    except RecursionError:
        return _failure("error", "invalid arguments: nested too deeply", started)
    if not isinstance(arguments, dict):
        return _failure("error", "invalid arguments: a JSON object is expected", started)
    try:
        problem = _arguments_error(tool, arguments)
    except Exception as exc:
        logger.exception("checking the arguments of tool %r failed", name)
        problem = f"they cannot be checked ({type(exc).__name__})"
    if problem:
        return _failure("error", f"invalid arguments: {problem}", started)

    seconds = float(settings.TOOL_TIMEOUT_SECONDS)
    future: Future[Any] = _executor().submit(_invoke, tool, arguments)
    try:
        output = future.result(timeout=seconds)
    except FutureTimeout:
        future.cancel()  # still queued: never starts
        return _failure("timeout", f"tool {name!r} took longer than {seconds:g}s", started)
    except ToolTimeout as exc:
        return _failure("timeout", _exception_message(exc), started)
    except Exception as exc:
        logger.info("tool %r failed: %s", name, _exception_message(exc))
        return _failure("error", _exception_message(exc), started)
    latency_ms = int((time.monotonic() - started) * 1000)
    return ToolResult("ok", truncate(_as_text(output)), latency_ms)
