"""JavaScript's conversions and comparisons, for the places where Elastic's meaning comes from them.

Kibana evaluates KQL conditions and renders Liquid in JavaScript, so a value's text
(``String(2.0)`` is ``2``), ``parseFloat`` (``"12abc"`` is 12) and what ``<`` does between
a string and a number (``"10" > 9`` compares numbers, ``"10" > "9"`` compares text by
UTF-16 code units) decide what a condition or a template means. Values here are what a
run's scope holds: None (JavaScript's null), bool, int, float, str, lists and mappings;
``UNDEFINED`` stands for JavaScript's undefined. Nothing here raises.
"""

from __future__ import annotations

import decimal
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

__all__ = ["UNDEFINED", "compare", "is_number", "number_text", "parse_float", "text",
           "to_number"]


class _Undefined:
    __slots__ = ()

    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Final = _Undefined()

# What String.prototype.trim() and StringToNumber skip: WhiteSpace and LineTerminator.
_JS_SPACE = ("\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
             "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff")
# parseFloat's StrDecimalLiteral, as a prefix; no quantifier repeats another's digits.
_DECIMAL_PREFIX = re.compile(
    r"[+-]?(?:Infinity|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")
_NON_DECIMAL = re.compile(r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+")
_SAFE_INTEGER = 2**53
_NUMBERS = (int, float)
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def is_number(value: object) -> bool:
    """Whether JavaScript's ``typeof`` of ``value`` is "number" (bool is not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _double(value: int | float) -> float:
    # A JSON number is a double in JavaScript; an int past 1e308 is Infinity there.
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def number_text(value: int | float) -> str:
    """``String(n)``: ``2.0`` is "2", ``1e21`` is "1e+21", ``1e-7`` is "1e-7"."""
    if isinstance(value, int) and -_SAFE_INTEGER <= value <= _SAFE_INTEGER:
        return str(value)
    number = _double(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    # repr() gives the shortest digits that round-trip, as ECMAScript's Number::toString.
    parts = decimal.Decimal(repr(abs(number))).normalize().as_tuple()
    digits = "".join(map(str, parts.digits))
    k = len(digits)
    n = int(parts.exponent) + k  # the value is 0.digits × 10**n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    exponent = n - 1
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"


def text(value: object) -> str:
    """``String(value)``: null is "null", a list joins its items with ",", an object is
    "[object Object]"."""
    if isinstance(value, str):
        return value
    if type(value) is int and -_SAFE_INTEGER <= value <= _SAFE_INTEGER:  # type: ignore[operator]
        return str(value)
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number_text(value)
    if isinstance(value, Mapping):
        return "[object Object]"
    if isinstance(value, Sequence | range):
        return _join(value)
    return str(value)


def _join(items: Sequence[Any] | range) -> str:
    # Array.prototype.join: null and undefined items are empty. A list that holds itself
    # cannot come from JSON; the stack only guards against deep nesting.
    parts: list[str] = []
    for item in items:
        if item is None or item is UNDEFINED:
            parts.append("")
        elif isinstance(item, list | tuple | range):
            parts.append(_join(item))
        else:
            parts.append(text(item))
    return ",".join(parts)


def parse_float(value: str) -> float:
    """``parseFloat(value)``: the longest decimal prefix after leading white space, else NaN."""
    match = _DECIMAL_PREFIX.match(value.lstrip(_JS_SPACE))
    if match is None:
        return math.nan
    return float(match.group())


def to_number(value: object) -> float:
    """``Number(value)`` for a primitive: "" and null are 0, undefined and junk NaN, and
    a list or object its text's number, as ``<`` converts them."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return _double(value)
    if value is None:
        return 0.0
    if value is UNDEFINED:
        return math.nan
    return _string_to_number(value if isinstance(value, str) else text(value))


def _string_to_number(value: str) -> float:
    stripped = value.strip(_JS_SPACE)
    if not stripped:
        return 0.0
    if _NON_DECIMAL.fullmatch(stripped):
        return _double(int(stripped, 0))
    match = _DECIMAL_PREFIX.fullmatch(stripped)
    return float(match.group()) if match is not None else math.nan


def _primitive(value: object) -> object:
    # ToPrimitive with hint "number": a list or an object becomes its text.
    if value is None or value is UNDEFINED or isinstance(value, str | bool | int | float):
        return value
    return text(value)


def _utf16(value: str) -> bytes:
    return value.encode("utf-16-be", "surrogatepass")


def compare(left: object, op: str, right: object) -> bool:
    """JavaScript's ``left op right`` for ``<``, ``<=``, ``>``, ``>=``."""
    if type(left) in _NUMBERS and type(right) in _NUMBERS:
        return _OPERATORS[op](_double(left), _double(right))  # type: ignore[arg-type]
    left, right = _primitive(left), _primitive(right)
    if isinstance(left, str) and isinstance(right, str):
        if left.isascii() and right.isascii():
            return _OPERATORS[op](left, right)
        # JavaScript compares UTF-16 code units, which puts characters past U+FFFF
        # before U+E000..U+FFFF; big-endian bytes order as the units do.
        return _OPERATORS[op](_utf16(left), _utf16(right))
    a, b = to_number(left), to_number(right)
    return _OPERATORS[op](a, b)  # NaN compares false either way, as in JavaScript
