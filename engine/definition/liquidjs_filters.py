"""LiquidJS's filters that read an expression or a property path: ``where``,
``where_exp``, ``find_exp`` and ``group_by_exp``.

An item expression (``"i.size > 3"``) is read as an ``if`` tag's, with LiquidJS's tokens
and comparisons, and parsed once per text; ``where`` reads its property as a KQL field
path (``host.name``, ``a['b-c']``) and compares strictly, as LiquidJS does.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from liquid import Environment, RenderContext, is_undefined
from liquid.builtin.expressions.logical import is_truthy
from liquid.exceptions import FilterArgumentError, LiquidSyntaxError
from liquid.expression import Expression
from liquid.filter import with_context

from engine.definition import jsvalue, template_filters
from engine.definition.kql_tree import field_segments
from engine.definition.liquidjs_comparisons import strictly_equal, with_javascript_operators
from engine.definition.liquidjs_parser import parse_expression

__all__ = ["EXPRESSION_FILTERS"]


@functools.lru_cache(maxsize=4096)
def _item_expression(environment: Environment, source: str) -> Expression:
    """The expression of a ``where_exp``/``find_exp``/``group_by_exp`` (``"i.size > 3"``)."""
    expression = parse_expression(environment, source)
    with_javascript_operators([expression])
    return expression


def _per_item(value: object, name: object, source: object,
              context: RenderContext) -> tuple[list[Any], list[Any]]:
    """The items of ``value`` and, for each, ``source`` evaluated with the item as ``name``."""
    items = template_filters.as_list(value)
    try:
        expression = _item_expression(context.env, str(source))
    except LiquidSyntaxError as exc:
        raise FilterArgumentError(f"bad expression {str(source)!r}: {exc.message}",
                                  token=None) from exc
    results = []
    for item in items:
        with context.extend({str(name): item}):
            results.append(expression.evaluate(context))
    return items, results


@with_context
def _where_exp(value: object, name: object, source: object, *,
               context: RenderContext) -> list[Any]:
    items, results = _per_item(value, name, source, context)
    return [item for item, result in zip(items, results, strict=True) if is_truthy(result)]


@with_context
def _find_exp(value: object, name: object, source: object, *, context: RenderContext) -> Any:
    items, results = _per_item(value, name, source, context)
    return next((item for item, result in zip(items, results, strict=True)
                 if is_truthy(result)), None)


@with_context
def _group_by_exp(value: object, name: object, source: object, *,
                  context: RenderContext) -> list[dict[str, Any]]:
    items, results = _per_item(value, name, source, context)
    return template_filters.grouped(items, [None if is_undefined(r) else r for r in results])


_UNSET = object()


def _liquidjs_array(value: object) -> list[Any]:
    # LiquidJS's toArray: a list as it is, an object as its [key, value] pairs, nil as none.
    if isinstance(value, Mapping):
        return [[key, item] for key, item in value.items()]
    return template_filters.as_list(value)


def _property(value: Any, segments: tuple[str, ...]) -> Any:
    for segment in segments:
        if isinstance(value, Mapping):
            value = value.get(segment, jsvalue.UNDEFINED)
        elif isinstance(value, list | tuple):
            if (segment.lstrip("-").isdigit() and len(segment) < 18
                    and -len(value) <= int(segment) < len(value)):
                value = value[int(segment)]
            elif segment in ("size", "first", "last"):
                value = (len(value) if segment == "size" else
                         (value[0] if segment == "first" else value[-1]) if value else None)
            else:
                value = jsvalue.UNDEFINED
        elif isinstance(value, str) and segment == "size":
            value = len(value)
        else:
            return jsvalue.UNDEFINED
    return value


def _where(value: object, prop: object, expected: object = _UNSET) -> list[Any]:
    """LiquidJS's ``where``: the items whose property (a path: ``host.name``) equals
    ``expected`` strictly, or is truthy when none is given; items without it are left out."""
    segments = field_segments(jsvalue.text(prop) if not is_undefined(prop) else "")
    kept = []
    for item in _liquidjs_array(value):
        found = _property(item, segments)
        if expected is _UNSET or is_undefined(expected):
            keep = found is not None and found is not False and found is not jsvalue.UNDEFINED
        else:
            keep = strictly_equal(found, expected)
        if keep:
            kept.append(item)
    return kept


EXPRESSION_FILTERS = {
    "where": _where,
    "where_exp": _where_exp,
    "find_exp": _find_exp,
    "group_by_exp": _group_by_exp,
}
