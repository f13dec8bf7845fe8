"""The pure built-in tools: `calculator` and `current_time`.

`calculator` never evaluates Python: the expression is parsed with `ast` and only numbers, the
operators + - * / // % ** (unary + and - included) and parentheses are walked, over `Fraction`s,
so 0.1 + 0.2 is exactly 0.3. Work is bounded: the expression's length, and the size of every
intermediate number (a power is refused *before* it is computed when its result would be too
large, so `9**9**9` answers at once).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from llm.tools.errors import ToolError

EXPRESSION_MAX_CHARS = 500
# No number (numerator or denominator) of the computation may need more bits than this
# (~3,000 decimal digits): enough for any arithmetic a person asks for, cheap to compute.
NUMBER_MAX_BITS = 10_000
# Digits shown for a result with no finite decimal expansion (1/3 ≈ 0.33333333333333333333).
APPROXIMATION_DIGITS = 20


_BINARY: dict[type[ast.operator], Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: lambda a, b: Fraction(a // b),
    ast.Mod: operator.mod,
}
_ALLOWED = "only numbers, + - * / // % **, unary minus and parentheses are allowed"


def _size_bits(value: Fraction) -> int:
    return max(abs(value.numerator).bit_length(), value.denominator.bit_length())


def _checked(value: Fraction) -> Fraction:
    if _size_bits(value) > NUMBER_MAX_BITS:
        raise ToolError("number too large: results are limited to about 3000 digits")
    return value


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise ToolError("only integer exponents are supported")
    power = abs(exponent.numerator)
    # The result needs at least (bits(base) - 1) * |exponent| bits: refuse a power that is
    # certainly too large before computing it (a base of 0, 1 or -1 costs nothing whatever the
    # exponent); what passes is at most twice the bound, checked once computed.
    if (_size_bits(base) - 1) * power > NUMBER_MAX_BITS:
        raise ToolError("number too large: the exponent is too big")
    if base == 0 and exponent < 0:
        raise ToolError("division by zero")
    return _checked(base**exponent.numerator)


def _literal(node: ast.Constant, source: str) -> Fraction:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError(f"unsupported value {value!r}: {_ALLOWED}")
    if isinstance(value, int):
        return _checked(Fraction(value))
    # The literal's text, not the float: "0.1" is exactly 1/10.
    text = (ast.get_source_segment(source, node) or repr(value)).replace("_", "")
    try:
        decimal = Decimal(text)
    except InvalidOperation as exc:
        raise ToolError(f"unsupported number {text!r}") from exc
    if not decimal.is_finite():
        raise ToolError(f"unsupported number {text!r}")
    exponent = decimal.as_tuple().exponent
    if isinstance(exponent, int) and abs(exponent) > NUMBER_MAX_BITS // 3:
        raise ToolError("number too large")
    return _checked(Fraction(decimal))


def _evaluate(node: ast.AST, source: str) -> Fraction:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, source)
    if isinstance(node, ast.Constant):
        return _literal(node, source)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _evaluate(node.operand, source)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left = _evaluate(node.left, source)
        right = _evaluate(node.right, source)
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        function = _BINARY.get(type(node.op))
        if function is None:
            raise ToolError(f"unsupported operator: {_ALLOWED}")
        if right == 0 and isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod):
            raise ToolError("division by zero")
        return _checked(function(left, right))
    what = {
        ast.Name: "names",
        ast.Call: "function calls",
        ast.Attribute: "attributes",
    }.get(type(node), type(node).__name__)
    raise ToolError(f"unsupported expression ({what}): {_ALLOWED}")


def calculate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression; `ToolError` says why one is refused."""
    if len(expression) > EXPRESSION_MAX_CHARS:
        raise ToolError(f"the expression is longer than {EXPRESSION_MAX_CHARS} characters")
    source = expression.strip()
    if not source:
        raise ToolError("the expression is empty")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {exc.msg}") from exc
    except (RecursionError, MemoryError, ValueError) as exc:
        raise ToolError("the expression is too deeply nested") from exc
    try:
        return _evaluate(tree, source)
    except RecursionError as exc:
        raise ToolError("the expression is too deeply nested") from exc
    except ZeroDivisionError as exc:
        raise ToolError("division by zero") from exc


# An exact decimal longer than this is shown as a fraction and an approximation instead.
EXACT_DECIMAL_PLACES_MAX = 1_000


def format_number(value: Fraction) -> str:
    """An exact decimal when there is one ("3.5", "0.3", "-14"); otherwise the fraction and an
    approximation ("1/3 ≈ 0.33333333333333333333")."""
    if value.denominator == 1:
        return str(value.numerator)
    twos = fives = 0
    rest = value.denominator
    while rest % 2 == 0:
        rest //= 2
        twos += 1
    while rest % 5 == 0:
        rest //= 5
        fives += 1
    if rest == 1 and max(twos, fives) <= EXACT_DECIMAL_PLACES_MAX:
        places = max(twos, fives)
        scaled = abs(value.numerator) * 10**places // value.denominator
        digits = str(scaled).rjust(places + 1, "0")
        text = f"{digits[:-places]}.{digits[-places:]}".rstrip("0").rstrip(".")
        return f"-{text}" if value < 0 else text
    approximation = format(_approximate(value), f".{APPROXIMATION_DIGITS}g")
    if max(len_digits(value.numerator), len_digits(value.denominator)) > 300:
        return f"≈ {approximation}"  # the exact fraction would be thousands of digits
    return f"{value.numerator}/{value.denominator} ≈ {approximation}"


def len_digits(number: int) -> int:
    """Decimal digits of `number`, estimated from its bits (no conversion to text)."""
    return int(abs(number).bit_length() * 0.30103) + 1


def _approximate(value: Fraction) -> Decimal:
    """`value` as a Decimal (a conversion that never goes through text)."""
    return Decimal(value.numerator) / Decimal(value.denominator)


class CalculatorInput(BaseModel):
    expression: str = Field(
        description=(
            "An arithmetic expression: numbers, + - * / // % ** and parentheses, "
            "e.g. (1.5 + 2) * 3 / 7."
        )
    )


def _calculator(expression: str) -> str:
    return format_number(calculate(expression))


class CurrentTimeInput(BaseModel):
    timezone: str | None = Field(
        default=None,
        description="An IANA time zone such as Europe/Paris; UTC when omitted.",
    )


def current_time_in(timezone: str | None, *, now: datetime | None = None) -> str:
    """The current time (or `now`) in `timezone` (UTC when empty), ISO 8601 to the second."""
    moment = now or datetime.now(UTC)
    if not timezone:
        return moment.astimezone(UTC).isoformat(timespec="seconds")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ToolError(
            f"unknown time zone {timezone!r}: use an IANA name such as Europe/Paris"
        ) from exc
    return moment.astimezone(zone).isoformat(timespec="seconds")


def _current_time(timezone: str | None = None) -> str:
    return current_time_in(timezone)


calculator: BaseTool = StructuredTool.from_function(
    func=_calculator,
    name="calculator",
    description=(
        "Exact arithmetic. Evaluates an expression of numbers with + - * / // % ** and "
        "parentheses; returns the exact result (a fraction with an approximation when it has "
        "no finite decimal form)."
    ),
    args_schema=CalculatorInput,
)

current_time: BaseTool = StructuredTool.from_function(
    func=_current_time,
    name="current_time",
    description=("The current date and time, ISO 8601, in UTC or in the given IANA time zone."),
    args_schema=CurrentTimeInput,
)

BUILTIN_TOOLS: tuple[BaseTool, ...] = (calculator, current_time)
