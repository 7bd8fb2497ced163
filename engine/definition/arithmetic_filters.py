"""LiquidJS's arithmetic filters, which compute as JavaScript does.

``plus``, ``minus``, ``times``, ``divided_by``, ``modulo``, ``round``, ``abs``, ``ceil``,
``floor``, ``at_least`` and ``at_most`` read their operands as JavaScript numbers (text
is a number, NaN is 0) and give doubles: ``10 | divided_by: 3`` is 3.3333333333333335,
``0.1 | plus: 0.2`` is 0.30000000000000004, ``2.5 | round`` is 3, and a division by 0 is
Infinity or NaN. A whole result is an int, as a run holds it.
"""

from __future__ import annotations

import math

from liquid import is_undefined

from engine.definition import jsvalue

__all__ = ["abs_", "at_least", "at_most", "ceil", "divided_by", "floor", "minus", "modulo",
           "plus", "round_", "times"]


def _number(value: object) -> float:
    # LiquidJS's toNumber: JavaScript's unary plus, with NaN (and -0) as 0.
    if type(value) is float:
        number = value
    elif type(value) is int and -2**53 <= value <= 2**53:  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    else:
        number = jsvalue.to_number(jsvalue.UNDEFINED if is_undefined(value) else value)
    return number if number == number and number != 0 else 0.0


def _whole(value: float) -> int | float:
    """A JavaScript number as the value a run holds: an int when it is a whole number."""
    if type(value) is int:  # math.floor and math.ceil give ints
        return value
    return int(value) if value.is_integer() and -2**53 <= value <= 2**53 else value


def plus(value: object, other: object = 0) -> int | float:
    """LiquidJS's ``plus``: JavaScript's ``+`` on the operands as numbers."""
    return _whole(_number(value) + _number(other))


def minus(value: object, other: object = 0) -> int | float:
    """LiquidJS's ``minus``."""
    return _whole(_number(value) - _number(other))


def times(value: object, other: object = 0) -> int | float:
    """LiquidJS's ``times``."""
    return _whole(_number(value) * _number(other))


def divided_by(value: object, divisor: object = 0, integer: object = False) -> int | float:
    """LiquidJS's ``divided_by``: true division, rounded down with a truthy third argument;
    by 0 it is Infinity or NaN, as in JavaScript."""
    if integer is False:
        dividend, by = _number(value), _number(divisor)
        return _whole(dividend / by if by else _divide(dividend, by))
    return _whole(_divide(_number(value), _number(divisor), _number(integer)))


def modulo(value: object, divisor: object = 0) -> int | float:
    """LiquidJS's ``modulo``: the remainder with the divisor's sign."""
    return _whole(_modulo(_number(value), _number(divisor)))


def round_(value: object, digits: object = 0) -> int | float:
    """LiquidJS's ``round``: half up, at ``digits`` decimals."""
    number = _number(value)
    if digits == 0 and abs(number) <= 2**53 - 1:  # Math.round, on the magnitude
        whole = math.floor(abs(number))
        rounded = whole + 1 if abs(number) - whole >= 0.5 else whole
        return -rounded if number < 0 else rounded
    return _whole(_round(number, _number(digits)))


def abs_(value: object) -> int | float:
    """LiquidJS's ``abs``."""
    return _whole(abs(_number(value)))


def ceil(value: object) -> int | float:
    """LiquidJS's ``ceil``."""
    return _whole(_ceil(_number(value)))


def floor(value: object) -> int | float:
    """LiquidJS's ``floor``."""
    return _whole(_floor(_number(value)))


def at_least(value: object, *others: object) -> int | float:
    """LiquidJS's ``at_least``: the largest of the operands."""
    return _whole(max((_number(value), *map(_number, others))))


def at_most(value: object, *others: object) -> int | float:
    """LiquidJS's ``at_most``: the smallest of the operands."""
    return _whole(min((_number(value), *map(_number, others))))


def _divide(dividend: float, divisor: float, integer: float = 0) -> float:
    if divisor == 0:
        return math.nan if dividend == 0 else math.copysign(math.inf, dividend) * \
            math.copysign(1, divisor)
    return math.floor(dividend / divisor) if integer else dividend / divisor


def _modulo(value: float, divisor: float) -> float:
    if divisor == 0 or math.isinf(value):
        return math.nan
    return math.fmod(math.fmod(value, divisor) + divisor, divisor)  # JavaScript's %


def _shift(number: float, exponent: float) -> float:
    # LiquidJS moves the decimal point in the number's text, not by multiplying: repr()
    # has the digits String() has, so the number read back is the same.
    if not exponent:
        return number
    mantissa, _, power = repr(float(number)).partition("e")
    try:
        return float(f"{mantissa}e{int(power or 0) + int(exponent)}")
    except ValueError:
        return math.nan  # Infinity


def _round(value: float, digits: float = 0) -> float:
    scaled = _shift(abs(value), digits)
    if not scaled <= 2**53 - 1:
        return value
    whole = math.floor(scaled)
    rounded = _shift(whole + 1 if scaled - whole >= 0.5 else whole, -digits)  # Math.round
    return -rounded if value < 0 else rounded


def _ceil(value: float) -> float:
    return value if math.isinf(value) else math.ceil(value)


def _floor(value: float) -> float:
    return value if math.isinf(value) else math.floor(value)
