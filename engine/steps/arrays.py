"""Elastic's array data steps: ``data.map``, ``data.filter``, ``data.find``,
``data.aggregate``, ``data.concat`` and ``data.dedupe``.

Each takes its source at the step's top level (``items``, or ``arrays`` for
``data.concat``; ``data.dedupe`` also its ``strategy``), usually a ``${{ }}`` template so
a list stays a list, and its configuration under ``with``. Outputs and limits follow
Kibana's implementations:

- ``data.map``: ``with.fields`` is rendered once per element with ``item`` and ``index``
  in scope; a list gives a list of mappings, a single mapping gives one mapping.
- ``data.filter`` / ``data.find``: ``with.condition`` is KQL evaluated with only ``item``
  and ``index`` in scope (templates in it are rendered first, in the step's scope).
  ``data.filter`` outputs the matching elements (at most ``limit``); ``data.find``
  outputs ``{item, index}``, both null when nothing matches, or fails with
  ``errorIfEmpty: true``. An empty condition matches every element.
- ``data.aggregate``: one record per group of ``group_by`` values (keyed by the field
  paths as written), in first-seen order, with a ``_bucket`` label when ``buckets``
  ranges are given (``[from, to)``; an element outside every range is left out), then
  each metric by name: ``count``, or ``sum``/``avg``/``min``/``max`` over the numbers in
  ``field`` (null when there are none). ``order_by`` sorts (nulls last), ``limit`` cuts.
- ``data.concat``: the lists in order (a null entry is an empty list), ``flatten`` true
  for one level or 1-10 levels, ``dedupe`` by deep equality keeping the first.
- ``data.dedupe``: one element per combination of ``with.keys``; ``keep_first`` keeps
  the first element, ``keep_last`` the last one, in the place of the first.

A field path is dotted (``host.name``); ``data.dedupe`` reads a key written literally in
the element first, as Kibana does, then the path. Problems with the data (``items`` not a
list, too many elements) fail the step without retrying: the same data fails again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from engine.definition.conditions import parse_condition
from engine.definition.step_types import StepContext, step_type
from engine.definition.templates import has_template
from engine.errors import ConditionError, StepFailed

MAX_AGGREGATE_ITEMS = 100_000
MAX_CONCAT_ITEMS = 100_000
MAX_CONCAT_ARRAYS = 50

_ITEMS: dict[str, Any] = {"type": "object", "properties": {"items": {}}, "required": ["items"]}
_CONDITION_OPTIONS = {"condition": {"type": "string"}}


def _check_condition(options: Mapping[str, Any],
                     params: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    condition = options.get("condition")
    if isinstance(condition, str) and condition.strip() and not has_template(condition):
        try:
            parse_condition(condition)
        except ConditionError as exc:
            yield ("with", "condition"), f"invalid KQL condition: {exc}"


@step_type("data.map", pure=True, params_schema=_ITEMS, raw_options=("fields",), options_schema={
    "type": "object",
    "properties": {"fields": {"type": "object"}},
    "required": ["fields"],
    "additionalProperties": False,
})
def data_map(ctx: StepContext) -> Any:
    """Each element of ``items`` reshaped by ``with.fields`` (``item`` and ``index`` in scope)."""
    items = ctx.params.get("items")
    if items is None:
        raise StepFailed("items is null: give a list or a mapping to map", retryable=False)
    if not isinstance(items, list | Mapping):
        raise StepFailed(f"items must be a list or a mapping, not {_kind(items)}",
                         retryable=False)
    fields = ctx.options["fields"]
    elements = items if isinstance(items, list) else [items]
    mapped = [dict(ctx.render(fields, {"item": item, "index": index}))
              for index, item in enumerate(elements)]
    return mapped if isinstance(items, list) else mapped[0]


@step_type("data.filter", pure=True, params_schema=_ITEMS, check=_check_condition,
           options_schema={
               "type": "object",
               "properties": {**_CONDITION_OPTIONS, "limit": {"type": "number",
                                                              "exclusiveMinimum": 0}},
               "required": ["condition"],
               "additionalProperties": False,
           })
def data_filter(ctx: StepContext) -> list[Any]:
    """The elements of ``items`` for which the KQL ``with.condition`` holds (at most ``limit``)."""
    items = _list(ctx.params.get("items"), "items")
    condition = str(ctx.options.get("condition") or "")
    limit = ctx.options.get("limit")
    if not condition.strip():
        return items
    kept: list[Any] = []
    for _, item in _matching(items, condition):
        kept.append(item)
        if limit and len(kept) >= limit:
            break
    return kept


@step_type("data.find", pure=True, params_schema=_ITEMS, check=_check_condition,
           options_schema={
               "type": "object",
               "properties": {**_CONDITION_OPTIONS, "errorIfEmpty": {"type": "boolean"}},
               "required": ["condition"],
               "additionalProperties": False,
           })
def data_find(ctx: StepContext) -> dict[str, Any]:
    """The first element of ``items`` for which ``with.condition`` holds, as ``{item, index}``."""
    items = _list(ctx.params.get("items"), "items")
    condition = str(ctx.options.get("condition") or "")
    if not condition.strip():
        found = [(0, items[0])] if items else []
    else:
        found = list(_first(_matching(items, condition)))
    if not found:
        if ctx.options.get("errorIfEmpty"):
            raise StepFailed("No item matching the condition was found" if condition.strip()
                             else "No items found in the collection", retryable=False)
        return {"item": None, "index": None}
    index, item = found[0]
    return {"item": item, "index": index}


def _matching(items: list[Any], condition: str) -> Iterator[tuple[int, Any]]:
    try:
        parsed = parse_condition(condition)
    except ConditionError as exc:  # known only now: the condition was a template
        raise StepFailed(f"Invalid KQL condition: {exc}", retryable=False) from exc
    for index, item in enumerate(items):
        if parsed.evaluate({"item": item, "index": index}):
            yield index, item


def _first(pairs: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    for pair in pairs:
        yield pair
        return


_METRIC: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "operation": {"enum": ["count", "sum", "avg", "min", "max"]},
        "field": {"type": "string", "minLength": 1},
    },
    "required": ["name", "operation"],
    "additionalProperties": False,
    "if": {"properties": {"operation": {"enum": ["sum", "avg", "min", "max"]}},
           "required": ["operation"]},
    "then": {"required": ["field"]},
}


@step_type("data.aggregate", pure=True, params_schema=_ITEMS, options_schema={
    "type": "object",
    "properties": {
        "group_by": {"type": ["array", "string"], "items": {"type": "string"}},
        "metrics": {"type": "array", "items": _METRIC},
        "order": {"enum": ["asc", "desc"]},
        "order_by": {"type": "string"},
        "limit": {"type": "number", "exclusiveMinimum": 0},
        "buckets": {
            "type": "object",
            "properties": {
                "field": {"type": "string", "minLength": 1},
                "ranges": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"from": {"type": "number"}, "to": {"type": "number"},
                                   "label": {"type": "string"}},
                    "additionalProperties": False,
                }},
            },
            "required": ["field", "ranges"],
            "additionalProperties": False,
        },
    },
    "required": ["group_by", "metrics"],
    "additionalProperties": False,
})
def data_aggregate(ctx: StepContext) -> list[dict[str, Any]]:
    """One record per group of ``items`` by ``group_by``, with each metric computed per group."""
    items = _list(ctx.params.get("items"), "items")
    if len(items) > MAX_AGGREGATE_ITEMS:
        raise StepFailed(f"items has {len(items):,} elements, more than the "
                         f"{MAX_AGGREGATE_ITEMS:,} data.aggregate takes", retryable=False)
    options = ctx.options
    group_by = options["group_by"]
    keys = [group_by] if isinstance(group_by, str) else list(group_by)
    metrics = list(options["metrics"])
    for metric in metrics:
        if metric.get("operation") != "count" and not metric.get("field"):
            raise StepFailed(f"metric {metric.get('name')!r} uses {metric.get('operation')!r} "
                             "but has no field; only count needs none", retryable=False)
    buckets = options.get("buckets")
    labelled: Iterable[tuple[Any, str | None]] = ((item, None) for item in items)
    if buckets:
        labelled = ((item, label) for item in items
                    if (label := _bucket(item, buckets)) is not None)
    groups: dict[str, tuple[dict[str, Any], list[Any]]] = {}
    for item, label in labelled:
        values = {key: _field(item, key) for key in keys}
        if buckets:
            values["_bucket"] = label
        identity = json.dumps(list(values.values()), sort_keys=True, default=str)
        groups.setdefault(identity, (values, []))[1].append(item)
    records = [{**values, **{str(m["name"]): _metric(members, m) for m in metrics}}
               for values, members in groups.values()]
    order_by = options.get("order_by")
    if order_by:
        records = _sorted(records, str(order_by), descending=options.get("order") == "desc")
    limit = options.get("limit")
    return records[:int(limit)] if limit else records


def _bucket(item: Any, buckets: Mapping[str, Any]) -> str | None:
    value = _field(item, str(buckets["field"]))
    if not _is_number(value):
        return None
    for bounds in buckets["ranges"]:
        low, high = bounds.get("from"), bounds.get("to")
        if (low is None or value >= low) and (high is None or value < high):
            label = bounds.get("label")
            if label is not None:
                return str(label)
            if low is not None and high is not None:
                return f"{_number_text(low)}-{_number_text(high)}"
            if low is not None:
                return f"{_number_text(low)}+"
            return f"<{_number_text(high)}" if high is not None else "*"
    return None


def _metric(members: list[Any], metric: Mapping[str, Any]) -> float | int | None:
    operation = metric["operation"]
    if operation == "count":
        return len(members)
    numbers = [v for v in (_field(m, str(metric.get("field", ""))) for m in members)
               if _is_number(v)]
    if not numbers:
        return None
    if operation == "sum":
        return sum(numbers)
    if operation == "avg":
        return sum(numbers) / len(numbers)
    return min(numbers) if operation == "min" else max(numbers)


def _sorted(records: list[dict[str, Any]], key: str, *, descending: bool) -> list[dict[str, Any]]:
    present = [r for r in records if r.get(key) is not None]
    missing = [r for r in records if r.get(key) is None]  # last, whatever the order
    try:
        present.sort(key=lambda r: r[key], reverse=descending)
    except TypeError:  # values of kinds that do not compare (a number and a string)
        present.sort(key=lambda r: str(r[key]), reverse=descending)
    return present + missing


@step_type("data.concat", pure=True, params_schema={
    "type": "object",
    "properties": {"arrays": {"type": "array", "minItems": 1, "maxItems": MAX_CONCAT_ARRAYS}},
    "required": ["arrays"],
}, options_schema={
    "type": "object",
    "properties": {
        "dedupe": {"type": "boolean"},
        "flatten": {"anyOf": [{"type": "boolean"},
                              {"type": "integer", "minimum": 1, "maximum": 10}]},
    },
    "additionalProperties": False,
})
def data_concat(ctx: StepContext) -> list[Any]:
    """The lists in ``arrays`` joined in order, flattened and deduplicated as asked."""
    arrays = ctx.params.get("arrays")
    if not isinstance(arrays, list) or not arrays:
        raise StepFailed("arrays must be a non-empty list of lists", retryable=False)
    flatten = ctx.options.get("flatten") or 0
    depth = 1 if flatten is True else int(flatten)
    seen: set[str] | None = set() if ctx.options.get("dedupe") else None
    joined: list[Any] = []
    for position, entry in enumerate(arrays):
        if entry is None:
            continue
        if not isinstance(entry, list):
            raise StepFailed(f"arrays[{position}] is {_kind(entry)}, not a list: each entry of "
                             "arrays must be a list", retryable=False)
        for item in _flattened(entry, depth):
            if seen is not None:
                identity = _identity(item)
                if identity in seen:
                    continue
                seen.add(identity)
            joined.append(item)
            if len(joined) > MAX_CONCAT_ITEMS:
                raise StepFailed(f"the result has more than {MAX_CONCAT_ITEMS:,} elements",
                                 retryable=False)
    return joined


def _flattened(items: list[Any], depth: int) -> Iterator[Any]:
    for item in items:
        if depth > 0 and isinstance(item, list):
            yield from _flattened(item, depth - 1)
        else:
            yield item


@step_type("data.dedupe", pure=True, params_schema={
    "type": "object",
    "properties": {"items": {}, "strategy": {"enum": ["keep_first", "keep_last"]}},
    "required": ["items"],
}, options_schema={
    "type": "object",
    "properties": {"keys": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
    "required": ["keys"],
    "additionalProperties": False,
})
def data_dedupe(ctx: StepContext) -> list[Any]:
    """``items`` with one element per combination of ``with.keys`` values."""
    items = _list(ctx.params.get("items"), "items")
    keys = [str(key) for key in ctx.options["keys"]]
    keep_last = ctx.params.get("strategy") == "keep_last"
    kept: dict[str, Any] = {}
    for item in items:
        identity = (_identity([_key(item, key) for key in keys]) if isinstance(item, Mapping)
                    else _identity(item))
        if keep_last or identity not in kept:
            kept[identity] = item  # an update keeps the first one's place
    return list(kept.values())


def _key(item: Mapping[str, Any], key: str) -> Any:
    return item[key] if key in item else _field(item, key)


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise StepFailed(f"{name} must be a list, not {_kind(value)}; write it as "
                         f"\"${{{{ ... }}}}\" so a list stays a list", retryable=False)
    return value


def _field(item: Any, path: str) -> Any:
    """The value at the dotted ``path`` in ``item``, or None."""
    for part in path.split("."):
        if not isinstance(item, Mapping):
            return None
        item = item.get(part)
    return item


def _identity(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and not (isinstance(value, float) and math.isnan(value)))


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    return "a list" if isinstance(value, list) else f"a {type(value).__name__}"
