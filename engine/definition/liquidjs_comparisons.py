"""LiquidJS's comparisons, which are JavaScript's: ``<``, ``>``, ``<=``, ``>=`` and
``contains``.

python-liquid compares as Python does: it refuses a string against a number, and finds a
key in an object. LiquidJS converts as JavaScript does (``"10" > 9`` is true, ``"10" >
"9"`` compares UTF-16 code units) and finds nothing in an object.
:func:`with_javascript_operators` retypes python-liquid's nodes once, when a template is
parsed, so rendering costs what it did; :func:`strictly_equal` is LiquidJS's ``equals``,
which its ``where`` filter shares.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

from liquid import RenderContext, is_undefined
from liquid.builtin.expressions import Nil
from liquid.builtin.expressions.logical import (
    ContainsExpression,
    GeExpression,
    GtExpression,
    LeExpression,
    LtExpression,
)
from liquid.builtin.expressions.primitive import Blank, Empty
from liquid.expression import Expression

from engine.definition import jsvalue

__all__ = ["strictly_equal", "with_javascript_operators"]


def _is_drop(expression: Expression, value: Any) -> bool:
    # `nil`, `empty` and `blank` written in the template are LiquidJS drops, which are
    # neither less nor greater than anything; a null value from the data is JavaScript's null.
    return isinstance(expression, Nil | Empty | Blank) or isinstance(value, Empty | Blank)


def _relational(expression: Any, op: str, left: Any, right: Any) -> bool:
    left = jsvalue.UNDEFINED if is_undefined(left) else left
    right = jsvalue.UNDEFINED if is_undefined(right) else right
    if _is_drop(expression.left, left) or _is_drop(expression.right, right):
        return False
    return jsvalue.compare(_listed(left), op, _listed(right))


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, range) else value


_SAFE = 2**53


class _JSRelational:
    """``<``, ``>``, ``<=``, ``>=`` as JavaScript compares. Two numbers, or two ASCII
    strings, Python compares the same way, so they skip the conversions (an int past
    2**53 is rounded to a double in JavaScript first, so it takes the long way)."""

    __slots__ = ()
    left: Expression
    right: Expression
    _op: str
    _python: Callable[..., Any]

    def evaluate(self, context: RenderContext) -> object:
        left: Any = self.left.evaluate(context)
        right: Any = self.right.evaluate(context)
        left_type, right_type = type(left), type(right)
        if left_type is str and right_type is str:
            if left.isascii() and right.isascii():
                return self._python(left, right)
        elif ((left_type is int or left_type is float)
              and (right_type is int or right_type is float)
              and -_SAFE <= left <= _SAFE and -_SAFE <= right <= _SAFE):
            return self._python(left, right)
        return _relational(self, self._op, left, right)

    async def evaluate_async(self, context: RenderContext) -> object:
        return self.evaluate(context)


class _JSLt(_JSRelational, LtExpression):
    __slots__ = ()
    _op, _python = "<", operator.lt


class _JSGt(_JSRelational, GtExpression):
    __slots__ = ()
    _op, _python = ">", operator.gt


class _JSLe(_JSRelational, LeExpression):
    __slots__ = ()
    _op, _python = "<=", operator.le


class _JSGe(_JSRelational, GeExpression):
    __slots__ = ()
    _op, _python = ">=", operator.ge


def strictly_equal(left: Any, right: Any) -> bool:
    """LiquidJS's ``equals`` as ``contains`` uses it: lists item by item, else ``===``."""
    if isinstance(left, list | tuple):
        return (isinstance(right, list | tuple) and len(left) == len(right)
                and all(strictly_equal(a, b) for a, b in zip(left, right, strict=True)))
    if jsvalue.is_number(left) and jsvalue.is_number(right):
        return jsvalue.to_number(left) == jsvalue.to_number(right)
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    if isinstance(left, bool) and isinstance(right, bool):
        return left == right
    return left is right  # null, undefined, and an object only to itself


def _contains(expression: Any, context: RenderContext) -> bool:
    left = expression.left.evaluate(context)
    right = expression.right.evaluate(context)
    if type(right) is str and (type(left) is list or type(left) is str):
        return right in left  # a string equals only a string, in both languages
    left = _listed(jsvalue.UNDEFINED if is_undefined(left) else left)
    right = _listed(jsvalue.UNDEFINED if is_undefined(right) else right)
    if _is_drop(expression.left, left) and not isinstance(expression.left, Nil):
        left = ""  # `empty` and `blank` are the empty string to JavaScript
    if isinstance(left, list | tuple):
        return any(strictly_equal(item, right) for item in left)
    if isinstance(left, str):
        return jsvalue.text(right) in left  # String.prototype.indexOf converts its argument
    return False  # an object, a number, nil: LiquidJS finds nothing in them


class _JSContains(ContainsExpression):
    __slots__ = ()

    def evaluate(self, context: RenderContext) -> object:
        return _contains(self, context)

    async def evaluate_async(self, context: RenderContext) -> object:
        return _contains(self, context)


_JAVASCRIPT_OPERATORS: dict[type[Expression], type[Expression]] = {
    LtExpression: _JSLt, GtExpression: _JSGt, LeExpression: _JSLe, GeExpression: _JSGe,
    ContainsExpression: _JSContains,
}


def with_javascript_operators(expressions: Iterable[Expression]) -> None:
    """Make ``<``, ``>``, ``<=``, ``>=`` and ``contains`` in these expressions (and those
    inside them) compare as LiquidJS does, in JavaScript: ``"10" > 9`` converts the
    string to a number, ``"10" > "9"`` compares text by UTF-16 code units, and an object
    contains nothing. The nodes are python-liquid's, retyped in place once, when parsed.
    """
    pending = list(expressions)
    while pending:
        expression = pending.pop()
        javascript = _JAVASCRIPT_OPERATORS.get(type(expression))
        if javascript is not None:
            expression.__class__ = javascript
        pending.extend(expression.children())
