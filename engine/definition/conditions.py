"""KQL conditions for step ``if:`` guards and ``if`` steps, parsed once and evaluated on a scope.

The text is KQL exactly as Kibana parses it (:mod:`engine.definition.kql_parser`); a condition
with ``{{ }}`` templates inside is rendered against the scope first, when it is evaluated,
and a condition that is, once rendered and trimmed, exactly ``true`` or ``false`` is that
boolean, as in Elastic Workflows. A condition that is one whole ``${{ expr }}`` is the
expression's value: a boolean as it is, a string read as KQL, undefined false, and any
other value an error (:func:`evaluate_template_condition`).

Evaluation is Kibana's workflow engine's (``evaluateKql`` in ``@kbn/eval-kql``), case by
case, with JavaScript's conversions (:mod:`engine.definition.jsvalue`):

- A field path is read a property at a time (``a.b``, ``a[0]``, ``a['b-c']``); a dotted
  key (``"kibana.alert.rule.name"`` as one key) is not a path. Through a list, a number
  picks an item and a name reads every item, the values found becoming one list
  (``event.alerts.host.name``). A missing field matches nothing.
- ``field : value`` converts the value to the field's type: to text for a string (date
  math such as ``now-1h`` becomes an ISO instant first), with ``parseFloat`` for a number
  (``12abc`` is 12), and for a boolean to whether it is the text ``true`` (so ``flag : no``
  holds for a false flag). Null, objects and lists of nothing never match; a list matches
  when any item does, nested lists included.
- A wildcard (``web-*``) matches strings, and numbers and booleans as their text
  (``n : 23*`` holds for 2339); ``field : *`` holds for any value but null.
- ``<``, ``<=``, ``>``, ``>=`` convert the same way and compare as JavaScript does: a
  number with a number, text with text by UTF-16 code units (``"10" < "9"``); a list
  holds when one of its items (not items of nested lists) does.
- Free text, a wildcard field name and a nested ``field:{...}`` query match nothing.

Evaluating a KQL condition never raises. Event data cannot make it slow: a wildcard is never
a regex over the value; its literal pieces between the stars are found left to right, the
first anchored at the start and the last at the end (a backtracking regex took 7 s for
``*failed*login*`` over 128 KB). Nested lists are read without recursion, and a path
through lists nested deeper than ``MAX_LIST_DEPTH`` matches nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.definition import datemath, jsvalue, templates
from engine.definition.kql_parser import JS_WHITESPACE, parse_kql
from engine.definition.kql_tree import (
    And,
    Constant,
    Exists,
    Match,
    MatchesNothing,
    Not,
    Or,
    Query,
    Range,
    Value,
    Wildcard,
    field_segments,
)
from engine.errors import ConditionError, TemplateError

__all__ = ["MAX_LIST_DEPTH", "Condition", "Constant", "Query", "evaluate_template_condition",
           "is_template_condition", "parse_condition", "resolve_path"]

_TEMPLATE_PART = re.compile(r"\{\{(?:(?!\}\}).)*\}\}|\{%(?:(?!%\}).)*%\}", re.DOTALL)
_PLACEHOLDER = "signoff-template-value"  # what a template stands for when validating
MAX_LIST_DEPTH = 100  # lists a field path may cross inside lists
_ANY = Wildcard(("", ""))
_NOT_FOUND = object()
_END = object()


@dataclass(frozen=True)
class Condition:
    """A parsed KQL condition; build it with :func:`parse_condition`.

    A condition with ``{{ }}`` templates inside (``templated``) is rendered against the
    scope and parsed when it is evaluated, as Elastic does; until then ``query`` is what
    it parses to with each template standing for a plain word, or None when that does
    not parse (a template may stand for operators too, so that is no error). ``literal``
    is set for a condition written as a YAML boolean, which is that boolean.
    """

    text: str
    literal: bool | None = None
    query: Query = dataclasses.field(init=False, repr=False, compare=False)
    templated: bool = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.literal is not None:
            object.__setattr__(self, "templated", False)
            object.__setattr__(self, "query", Constant(self.literal))
            return
        if is_template_condition(self.text):
            raise ConditionError("this is a template, not KQL; the template engine evaluates it",
                                 condition=self.text, column=1)
        templated = templates.has_template(self.text)
        object.__setattr__(self, "templated", templated)
        if templated:
            try:
                templates.compile_template(self.text)
            except TemplateError as exc:
                raise ConditionError(str(exc), condition=self.text,
                                     column=max(exc.column, 1)) from exc
            try:
                query: Query | None = _kql(_TEMPLATE_PART.sub(_PLACEHOLDER, self.text))
            except ConditionError:
                query = None
            object.__setattr__(self, "query", query)
        else:
            object.__setattr__(self, "query", _kql(self.text))

    def evaluate(self, scope: Mapping[str, Any], *, now: dt.datetime | None = None) -> bool:
        """Whether ``scope`` satisfies the condition; ``now`` (default: the current time)
        is what date math such as ``now-1h`` counts from.

        Never raises, except that a templated condition raises TemplateError when its
        templates fail to render and ConditionError when the rendered text is not KQL.
        """
        if self.templated:
            return _evaluate(_kql(templates.render_text(self.text, scope)), scope, now)
        return _evaluate(self.query, scope, now)

    @property
    def references(self) -> frozenset[str]:
        """Field paths the condition reads, dotted, with ``[N]`` written as ``.N``."""
        paths = {path for path in _paths(self.query) if _PLACEHOLDER not in path}
        if self.templated:
            paths |= templates.references(self.text)
        return frozenset(paths)


def parse_condition(text: str | bool) -> Condition:
    """Parse a KQL condition (cached by text); raise ConditionError with a column if invalid.

    A bool (YAML's ``condition: true``) is a condition that is that boolean.
    """
    if isinstance(text, bool):
        return _LITERALS[text]
    if not isinstance(text, str):
        raise ConditionError(f"a condition must be a string, not {type(text).__name__}",
                             condition=str(text), column=1)
    return _parse_cached(text)


def is_template_condition(text: str) -> bool:
    """Whether the text is one whole ``${{ ... }}``, which Elastic evaluates as an expression
    (a ``{{ }}`` template renders to text, which is read as KQL)."""
    return isinstance(text, str) and text.startswith("${{") and text.endswith("}}")


def evaluate_template_condition(text: str, scope: Mapping[str, Any], *,
                                now: dt.datetime | None = None) -> bool:
    """Whether a condition that is one whole ``${{ expr }}`` holds, as Elastic decides it.

    A boolean is the answer; undefined (a missing variable) is false; a string is a
    condition in turn (``true``/``false`` or KQL, with no templates rendered again); any
    other value, null included, raises ConditionError, as does a string that is not KQL.
    A filter failing on the value raises TemplateError.
    """
    value = templates.evaluate_expression(text, scope, undefined=jsvalue.UNDEFINED)
    if isinstance(value, bool):
        return value
    if value is jsvalue.UNDEFINED:
        return False
    if isinstance(value, str):
        return _evaluate(_kql(value), scope, now)
    raise ConditionError(
        f"the expression gave {_kind(value)}; a condition written as one ${{{{ }}}} must give "
        "a boolean, or a string that is read as KQL", condition=text, column=1)


def resolve_path(scope: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """Look up ``a.b[0].c`` (or ``a.b.0.c``, ``a['b']``) as Kibana's workflow engine does:
    ``(found, value)``. Through a list, a number picks an item and a name reads every item,
    what is found in them merged into one list."""
    value = _resolve(scope, _segments(path), 0, 0)
    return (False, None) if value is _NOT_FOUND else (True, value)


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str) -> Condition:
    return Condition(text)


_LITERALS = {True: Condition("true", literal=True), False: Condition("false", literal=False)}


@functools.lru_cache(maxsize=4096)
def _segments(path: str) -> tuple[str, ...]:
    return field_segments(path)


@functools.lru_cache(maxsize=1024)
def _kql(text: str) -> Query:
    # Elastic's workflow engine reads a condition that is exactly "true" or "false" (once
    # rendered and trimmed) as that boolean; in KQL each would be free text.
    trimmed = text.strip(JS_WHITESPACE)
    if trimmed in ("true", "false"):
        return Constant(trimmed == "true")
    return parse_kql(text)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if jsvalue.is_number(value):
        return f"the number {jsvalue.number_text(value)}"
    if isinstance(value, Mapping):
        return "an object"
    if _is_list(value) or isinstance(value, range):
        return "a list"
    return f"a {type(value).__name__}"


def _resolve(value: Any, segments: tuple[str, ...], at: int, lists: int) -> Any:
    while at < len(segments):
        head = segments[at]
        if _is_list(value):
            if _is_index(head, value):
                value = value[int(head)]
                at += 1
                continue
            if lists >= MAX_LIST_DEPTH:
                return _NOT_FOUND
            found = [item for item in (_resolve(element, segments, at, lists + 1)
                                       for element in value) if item is not _NOT_FOUND]
            if not found:
                return _NOT_FOUND
            if len(found) == 1:
                return found[0]
            return [leaf for item in found for leaf in (item if _is_list(item) else (item,))]
        if not isinstance(value, Mapping) or head not in value:
            return _NOT_FOUND
        value = value[head]
        at += 1
    return value


def _is_index(segment: str, items: Sequence[Any]) -> bool:
    if not (segment.isascii() and segment.isdigit()):
        return False
    digits = segment.lstrip("0") or "0"
    return len(digits) <= 18 and int(digits) < len(items)


def _evaluate(query: Query | None, scope: Mapping[str, Any], now: dt.datetime | None) -> bool:
    match query:
        case Constant(constant):
            return constant
        case Not(item):
            return not _evaluate(item, scope, now)
        case And(items):
            return all(_evaluate(item, scope, now) for item in items)
        case Or(items):
            return any(_evaluate(item, scope, now) for item in items)
        case Exists(path):
            actual = _resolve(scope, _segments(path), 0, 0)
            return actual is not _NOT_FOUND and _some(actual, lambda e: _matches(e, _ANY))
        case Match(path, value):
            actual = _resolve(scope, _segments(path), 0, 0)
            if actual is _NOT_FOUND:
                return False
            wildcard = value.wildcard
            if wildcard is not None:
                return _some(actual, lambda e: _matches(e, wildcard))
            return _some(actual, lambda e: _equals(e, value, now))
        case Range(path, op, value):
            actual = _resolve(scope, _segments(path), 0, 0)
            if actual is _NOT_FOUND:
                return False
            # Unlike equality, a range looks one list deep.
            if _is_list(actual):
                return any(_in_range(element, op, value, now) for element in actual)
            return _in_range(actual, op, value, now)
    return False  # MatchesNothing


def _some(actual: Any, test: Callable[[Any], bool]) -> bool:
    # On a list, a match holds when it holds for any element, nested lists included.
    # A stack, not recursion: an event's lists may nest deeper than Python's recursion limit.
    pending: list[Iterator[Any]] = [iter((actual,))]
    while pending:
        element: Any = next(pending[-1], _END)
        if element is _END:
            pending.pop()
        elif _is_list(element):
            pending.append(iter(element))
        elif test(element):
            return True
    return False


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _as_text(value: Value, now: dt.datetime | None) -> str:
    if value.may_be_date_math:
        instant = datemath.resolve(value.literal_text, now or dt.datetime.now(dt.UTC))
        if instant is not None:
            return instant
    return value.literal_text


def _matches(actual: Any, wildcard: Wildcard) -> bool:
    if isinstance(actual, str):
        return wildcard.matches(actual)
    if isinstance(actual, bool):
        return wildcard.matches("true" if actual else "false")
    if isinstance(actual, int | float):
        return wildcard.matches(jsvalue.number_text(actual))
    return actual is not None  # an object exists, whatever the pattern


def _equals(actual: Any, value: Value, now: dt.datetime | None) -> bool:
    if isinstance(actual, str):
        return actual == _as_text(value, now)
    if isinstance(actual, bool):
        return actual == (value.literal_text == "true")
    if isinstance(actual, int | float):
        return jsvalue.to_number(actual) == value.number
    return False  # null and objects are never equal to a value


def _in_range(actual: Any, op: str, value: Value, now: dt.datetime | None) -> bool:
    right: str | bool | float
    if isinstance(actual, str):
        right = _as_text(value, now)
    elif isinstance(actual, bool):
        right = value.literal_text == "true"
    elif isinstance(actual, int | float):
        right = value.number
    else:
        return False  # null, objects and nested lists compare with nothing
    return jsvalue.compare(actual, op, right)


def _paths(query: Query | None) -> list[str]:
    match query:
        case Match(path) | Exists(path) | Range(path):
            return [".".join(_segments(path))]
        case MatchesNothing(path=str(path)):
            return [".".join(_segments(path))]
        case And(items) | Or(items):
            return [path for item in items for path in _paths(item)]
        case Not(item):
            return _paths(item)
    return []
