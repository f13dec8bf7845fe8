"""The tool registry: the built-ins (`calculator` never evaluates Python, `current_time`),
installed tools from `PANTHEON_TOOLS`, app-registered tools, the OpenAI definitions, and
`tool_run`, which turns every failure (unknown name, bad arguments, an exception, a timeout)
into a result the model can read."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from langchain_core.tools import BaseTool, StructuredTool

from llm.tools.builtins import calculate, format_number
from llm.tools.registry import (
    ToolContext,
    ToolResult,
    available_tools,
    openai_tools,
    register_tool,
    tool_run,
    truncate,
    unknown_tools,
    unregister_tool,
)

pytestmark = pytest.mark.django_db

CONTEXT = ToolContext(user_id=uuid.uuid4(), session_id=uuid.uuid4(), room_id=None)


def run(name: str, arguments: Any) -> ToolResult:
    payload = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return tool_run(name, payload, CONTEXT)


def calc(expression: str) -> ToolResult:
    return run("calculator", {"expression": expression})


@pytest.fixture
def app_tools() -> Iterator[list[str]]:
    """Names registered by a test, unregistered after it."""
    names: list[str] = []
    yield names
    for name in names:
        unregister_tool(name)


def register(names: list[str], name: str, func: Any, description: str = "test tool") -> None:
    register_tool(
        name,
        lambda context: StructuredTool.from_function(func=func, name=name, description=description),
        description=description,
        kind="builtin",
    )
    names.append(name)


# --- calculator ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0.1+0.2", "0.3"),
        ("2**10", "1024"),
        ("7/2", "3.5"),
        ("-(3+4)*2", "-14"),
        ("10 // 3", "3"),
        ("7 % 3", "1"),
        ("2 ** -2", "0.25"),
        ("1.5e3 + 0.5", "1500.5"),
        ("(-2) ** 3", "-8"),
        ("1/3", "1/3 ≈ 0.33333333333333333333"),
    ],
)
def test_calculator_is_exact(expression: str, expected: str) -> None:
    result = calc(expression)
    assert result.status == "ok", result
    assert result.content == expected
    assert result.error == ""


@pytest.mark.parametrize(
    ("expression", "what"),
    [
        ("__import__('os')", "function calls"),
        ("a+1", "names"),
        ("(1).__class__", "attributes"),
        ("'a' * 3", "unsupported value"),
        ("1 < 2", "Compare"),
        ("[1, 2]", "List"),
        ("lambda: 1", "Lambda"),
        ("True + 1", "unsupported value"),
        ("1j * 2", "unsupported value"),
        ("1; 2", "not an arithmetic expression"),
    ],
)
def test_calculator_refuses_anything_but_arithmetic(expression: str, what: str) -> None:
    result = calc(expression)
    assert result.status == "error"
    assert what in result.error


def test_calculator_never_evaluates_python(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    assert format_number(calculate("(1 + 2) * 3")) == "9"


@pytest.mark.parametrize("expression", ["9**9**9", "2**100000", "10**10**10", "(2**5000)**3"])
def test_calculator_refuses_huge_powers_at_once(expression: str) -> None:
    started = time.monotonic()
    result = calc(expression)
    assert result.status == "error"
    assert "too large" in result.error
    assert time.monotonic() - started < 1.0


def test_calculator_large_but_bounded_power_is_exact() -> None:
    result = calc("2**1000")
    assert result.status == "ok"
    assert result.content == str(2**1000)


@pytest.mark.parametrize("expression", ["1/0", "5 // 0", "5 % 0", "0 ** -1", "1 / (2 - 2)"])
def test_calculator_division_by_zero_is_an_error_result(expression: str) -> None:
    result = calc(expression)
    assert result.status == "error"
    assert result.error == "division by zero"
    assert "Traceback" not in result.content


def test_calculator_refuses_long_input() -> None:
    result = calc("1+" * 250 + "1")  # 501 characters
    assert result.status == "error"
    assert "longer than 500" in result.error
    assert calc("+".join(["1"] * 250)).content == "250"  # 499 characters: fine


def test_calculator_deep_nesting_is_an_error_not_a_crash() -> None:
    result = calc("(" * 240 + "1" + ")" * 240)
    assert result.status in ("ok", "error")
    if result.status == "error":
        assert "nested" in result.error or "not an arithmetic" in result.error


# --- current_time ----------------------------------------------------------------------------


def test_current_time_is_utc_by_default() -> None:
    result = run("current_time", {})
    assert result.status == "ok"
    moment = datetime.fromisoformat(result.content)
    assert moment.utcoffset() == timedelta(0)
    assert abs(moment - datetime.now(UTC)) < timedelta(seconds=5)


def test_current_time_in_a_zone() -> None:
    result = run("current_time", {"timezone": "Asia/Kolkata"})
    assert result.status == "ok"
    moment = datetime.fromisoformat(result.content)
    assert moment.utcoffset() == timedelta(hours=5, minutes=30)
    assert abs(moment - datetime.now(UTC)) < timedelta(seconds=5)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "Not a zone"])
def test_current_time_unknown_zone_is_an_error_result(zone: str) -> None:
    result = run("current_time", {"timezone": zone})
    assert result.status == "error"
    assert "unknown time zone" in result.error


# --- tool_run: failures become results -------------------------------------------------------


def test_unknown_tool() -> None:
    result = run("no_such_tool", {})
    assert result.status == "error"
    assert "unknown tool" in result.error
    assert result.content.startswith("Error: ")


@pytest.mark.parametrize(
    "payload", ["{not json", "", "[1, 2]", '"text"', "null", "[" * 100_000 + "]" * 100_000]
)
def test_invalid_json_arguments(payload: str) -> None:
    result = tool_run("calculator", payload, CONTEXT)
    assert result.status == "error"
    assert "invalid arguments" in result.error or "Field required" in result.error


@pytest.mark.parametrize(
    "arguments",
    [{}, {"expression": 12}, {"expression": None}, {"expr": "1+1"}],
)
def test_arguments_failing_the_schema(arguments: dict[str, Any]) -> None:
    result = run("calculator", arguments)
    assert result.status == "error"
    assert result.error.startswith("invalid arguments")
    assert "errors.pydantic.dev" not in result.error


def test_a_tool_that_raises_gives_its_message_without_a_stack_trace(
    app_tools: list[str],
) -> None:
    def explode() -> str:
        raise RuntimeError("the flux capacitor broke")

    register(app_tools, "explode", explode)
    result = run("explode", {})
    assert result.status == "error"
    assert result.error == "RuntimeError: the flux capacitor broke"
    assert "Traceback" not in result.content and "File " not in result.content


def test_a_tool_that_takes_too_long_times_out_quickly(app_tools: list[str], settings: Any) -> None:
    settings.TOOL_TIMEOUT_SECONDS = 0.2
    release = threading.Event()

    def sleepy() -> str:
        release.wait(10)
        return "too late"

    register(app_tools, "sleepy", sleepy)
    try:
        started = time.monotonic()
        result = run("sleepy", {})
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert result.status == "timeout"
    assert "0.2" in result.error
    assert elapsed < 1.5
    assert 150 <= result.latency_ms < 1500


def test_a_long_result_is_truncated_with_a_marker(app_tools: list[str], settings: Any) -> None:
    settings.TOOL_RESULT_MAX_CHARS = 100
    register(app_tools, "long", lambda: "x" * 1000)
    result = run("long", {})
    assert result.status == "ok"
    assert len(result.content) == 100
    kept = result.content.index("\n[truncated")
    assert result.content[:kept] == "x" * kept
    assert result.content.endswith(f"[truncated: {1000 - kept} more characters]")


def test_truncate_leaves_short_content_alone_and_bounds_everything() -> None:
    assert truncate("abc", 3) == "abc"
    for limit in (1, 5, 30, 31, 32, 500):
        assert len(truncate("y" * 1000, limit)) == limit


def test_latency_is_measured(app_tools: list[str]) -> None:
    register(app_tools, "nap", lambda: time.sleep(0.05) or "done")
    result = run("nap", {})
    assert result.status == "ok" and result.content == "done"
    assert result.latency_ms >= 50


def test_non_text_output_is_serialised(app_tools: list[str]) -> None:
    register(app_tools, "structured", lambda: {"a": [1, 2], "b": "é"})
    assert json.loads(run("structured", {}).content) == {"a": [1, 2], "b": "é"}


# --- listing and OpenAI definitions ----------------------------------------------------------


def test_available_tools_lists_the_builtins() -> None:
    by_name = {info.name: info for info in available_tools()}
    assert by_name["calculator"].kind == "builtin"
    assert by_name["current_time"].kind == "builtin"
    assert by_name["calculator"].parameters["required"] == ["expression"]
    assert by_name["calculator"].parameters["properties"]["expression"]["type"] == "string"
    assert by_name["calculator"].description


def test_unknown_tools() -> None:
    assert unknown_tools(["calculator", "nope", "current_time", "nope", "other"]) == [
        "nope",
        "other",
    ]
    assert unknown_tools([]) == []


def test_openai_tools_shape() -> None:
    definitions = openai_tools(["calculator", "current_time", "calculator", "gone"], CONTEXT)
    assert [d["function"]["name"] for d in definitions] == ["calculator", "current_time"]
    for definition in definitions:
        assert definition["type"] == "function"
        assert set(definition["function"]) == {"name", "description", "parameters"}
        assert definition["function"]["parameters"]["type"] == "object"
        json.dumps(definition)  # plain JSON
    calculator = definitions[0]["function"]
    assert calculator["parameters"]["properties"]["expression"]["type"] == "string"
    assert calculator["parameters"]["required"] == ["expression"]


# --- app-registered tools --------------------------------------------------------------------


def test_an_app_tool_is_built_for_its_context(app_tools: list[str]) -> None:
    def factory(context: ToolContext) -> BaseTool:
        def whoami(prefix: str) -> str:
            return f"{prefix}{context.user_id}/{context.session_id}"

        return StructuredTool.from_function(
            func=whoami, name="whoami", description="Who is calling."
        )

    register_tool("whoami", factory, description="Who is calling.", kind="builtin")
    app_tools.append("whoami")

    info = {i.name: i for i in available_tools()}["whoami"]
    assert info.kind == "builtin"
    assert info.parameters["properties"]["prefix"]["type"] == "string"
    assert openai_tools(["whoami"], CONTEXT)[0]["function"]["name"] == "whoami"
    result = run("whoami", {"prefix": "> "})
    assert result.content == f"> {CONTEXT.user_id}/{CONTEXT.session_id}"
    assert unknown_tools(["whoami"]) == []


def test_register_tool_refuses_bad_names_kinds_and_builtin_names() -> None:
    def factory(context: ToolContext) -> BaseTool:
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="built-in"):
        register_tool("calculator", factory, description="x", kind="builtin")
    with pytest.raises(ValueError, match="kind"):
        register_tool("fine", factory, description="x", kind="magic")
    with pytest.raises(ValueError, match="name"):
        register_tool("not ok!", factory, description="x", kind="builtin")


# --- installed tools (PANTHEON_TOOLS) --------------------------------------------------------


def test_installed_tools_are_listed_and_run(settings: Any) -> None:
    settings.PANTHEON_TOOLS = ["testing.tools_sample:word_count", "testing.tools_sample.shout"]
    by_name = {info.name: info for info in available_tools()}
    assert by_name["word_count"].kind == "installed"
    assert by_name["word_count"].parameters["properties"]["text"]["type"] == "string"
    assert by_name["shout"].kind == "installed"
    assert unknown_tools(["word_count", "shout"]) == []

    result = run("word_count", {"text": "the quick brown fox"})
    assert result.status == "ok" and result.content == "4"
    assert run("shout", {"text": "hey"}).content == "HEY"
    assert run("word_count", {"text": 3}).status == "error"
    definition = openai_tools(["word_count"], CONTEXT)[0]["function"]
    assert definition["name"] == "word_count"
    assert definition["parameters"]["required"] == ["text"]


def test_a_tool_class_path_is_instantiated(settings: Any) -> None:
    settings.PANTHEON_TOOLS = ["testing.tools_sample:ShoutTool"]
    assert run("shout", {"text": "ok"}).content == "OK"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("testing.tools_sample:missing", "cannot import"),
        ("no_such_package.tools:thing", "cannot import"),
        ("testing.tools_sample:NOT_A_TOOL", "not a langchain-core tool"),
        ("testing.tools_sample:word_count:again", "not an import path"),
        ("testing.tools_sample:calculator_clone", "cannot import"),
    ],
)
def test_a_bad_installed_path_is_a_clear_configuration_error(
    settings: Any, path: str, message: str
) -> None:
    settings.PANTHEON_TOOLS = [path]
    with pytest.raises(ImproperlyConfigured, match=message):
        available_tools()
    errors = [m for m in run_checks() if m.id == "llm.E001"]
    assert len(errors) == 1 and message in errors[0].msg
    # A call of any tool not found earlier says so instead of raising.
    result = run("word_count", {"text": "a"})
    assert result.status == "error" and "misconfigured" in result.error
    # The built-ins still run.
    assert calc("1+1").content == "2"


def test_two_installed_tools_with_one_name_are_refused(settings: Any) -> None:
    settings.PANTHEON_TOOLS = ["testing.tools_sample:word_count", "testing.tools_sample:word_count"]
    with pytest.raises(ImproperlyConfigured, match="like another tool"):
        available_tools()


def test_the_system_check_passes_with_good_paths(settings: Any) -> None:
    settings.PANTHEON_TOOLS = ["testing.tools_sample:word_count"]
    assert [m for m in run_checks() if m.id == "llm.E001"] == []


def test_calculator_shows_a_huge_exact_decimal_as_an_approximation() -> None:
    from llm.tools.builtins import calculate, format_number

    text = format_number(calculate("1/2**9999"))
    assert text.startswith("≈ 1.00247454984129040") and text.endswith("e-3010")
    assert format_number(calculate("7/2")) == "3.5"
