"""KQL conditions for step ``if:`` guards and ``if`` steps, parsed once and evaluated on a scope.

The text is KQL exactly as Kibana parses it (:mod:`engine.definition.kql`); a condition
with ``{{ }}`` templates inside is rendered against the scope first, when it is evaluated,
as Elastic Workflows do, and a condition that is exactly ``true`` or ``false`` is that
boolean. Evaluation follows Kibana's workflow engine: a missing field, a comparison between
incompatible types, free text, a wildcard field name and a nested ``field:{...}`` query
are simply false, and evaluating never raises (except a templated condition, which can
fail to render or render to text that is not KQL).

Event data is untrusted, so evaluation costs time linear in what it reads, and it reads at
most the first 64 KiB (65,536 characters, ``READ_LIMIT``) of a string: a wildcard matches
that prefix (``*login`` does not see the end of a longer value), and a longer string is
never read as a number. Equality and comparisons with text need no more of a value than
the condition's own text. A wildcard is never a regex over the whole value: its literal
pieces between the stars are found left to right, the first anchored at the start and
the last at the end, as KQL requires; a backtracking regex took 7 s for
``*failed*login*`` over 128 KB. Nested lists are read without recursion, so no event is
too deep to evaluate.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.definition import templates
from engine.definition.kql import (
    JS_WHITESPACE,
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
    field_segments,
    parse_kql,
)
from engine.errors import ConditionError, TemplateError

__all__ = ["READ_LIMIT", "Condition", "Query", "is_template_condition", "parse_condition",
           "resolve_path"]

# No quantifier follows another over the same digits, so a long non-number fails in linear
# time (`[0-9]+\.?[0-9]*` took 11 s on 16,384 digits and an "x").
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TEMPLATE = re.compile(r"\$?\{\{(?:(?!\}\}).)*\}\}", re.DOTALL)
_TEMPLATE_PART = re.compile(r"\{\{(?:(?!\}\}).)*\}\}|\{%(?:(?!%\}).)*%\}", re.DOTALL)
_PLACEHOLDER = "signoff-template-value"  # what a template stands for when validating
READ_LIMIT = 65_536  # characters of a string value a condition reads
_RANGE_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_END = object()


@dataclass(frozen=True)
class Condition:
    """A parsed KQL condition; build it with :func:`parse_condition`.

    A condition with ``{{ }}`` templates inside (``templated``) is rendered against the
    scope and parsed when it is evaluated, as Elastic does; until then ``query`` is what
    it parses to with each template standing for a plain word, or None when that does
    not parse (a template may stand for operators too, so that is no error).
    """

    text: str
    query: Query = dataclasses.field(init=False, repr=False, compare=False)
    templated: bool = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        templated = templates.has_template(self.text) and not is_template_condition(self.text)
        object.__setattr__(self, "templated", templated)
        if templated:
            try:
                templates.compile_template(self.text)
            except TemplateError as exc:
                raise ConditionError(f"template error: {exc}", condition=self.text,
                                     column=max(exc.column, 1)) from exc
            try:
                query: Query | None = _parse(_TEMPLATE_PART.sub(_PLACEHOLDER, self.text))
            except ConditionError:
                query = None
            object.__setattr__(self, "query", query)
        else:
            object.__setattr__(self, "query", _parse(self.text))

    def evaluate(self, scope: Mapping[str, Any]) -> bool:
        """Whether ``scope`` satisfies the condition.

        Never raises, except that a templated condition raises TemplateError when its
        templates fail to render and ConditionError when the rendered text is not KQL.
        """
        if self.templated:
            return parse_condition(templates.render_text(self.text, scope)).evaluate(scope)
        return _evaluate(self.query, scope)

    @property
    def references(self) -> frozenset[str]:
        """Field paths the condition reads, dotted, with ``[N]`` written as ``.N``."""
        paths = {path for path in _paths(self.query) if _PLACEHOLDER not in path}
        if self.templated:
            paths |= templates.references(self.text)
        return frozenset(paths)


def parse_condition(text: str) -> Condition:
    """Parse a KQL condition (cached by text); raise ConditionError with a column if invalid."""
    if isinstance(text, bool):  # YAML turns `if: true` into a bool
        text = "true" if text else "false"
    if not isinstance(text, str):
        raise ConditionError(f"a condition must be a string, not {type(text).__name__}",
                             condition=str(text), column=1)
    return _parse_cached(text)


def is_template_condition(text: str) -> bool:
    """Whether the text is one whole ``{{ ... }}`` or ``${{ ... }}`` template, not KQL."""
    return isinstance(text, str) and _TEMPLATE.fullmatch(text.strip()) is not None


def resolve_path(scope: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """Look up ``a.b[0].c`` (or ``a.b.0.c``, ``a['b']``) in nested mappings and lists:
    ``(found, value)``."""
    return _walk(scope, _segments(path))


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str) -> Condition:
    return Condition(text)


@functools.lru_cache(maxsize=4096)
def _segments(path: str) -> tuple[str, ...]:
    return field_segments(path)


def _walk(node: Any, segments: tuple[str, ...]) -> tuple[bool, Any]:
    if not segments:
        return True, node
    if isinstance(node, Mapping):
        # Elastic documents also use flattened keys ("kibana.alert.rule.name"): try those too.
        for size in range(1, len(segments) + 1):
            key = ".".join(segments[:size])
            if key in node:
                found, value = _walk(node[key], segments[size:])
                if found:
                    return True, value
        return False, None
    head = segments[0]
    if _is_list(node) and head.isascii() and head.isdigit() and int(head) < len(node):
        return _walk(node[int(head)], segments[1:])
    return False, None


def _parse(text: str) -> Query:
    if is_template_condition(text):
        raise ConditionError("this is a template, not KQL; the template engine evaluates it",
                             condition=text, column=1)
    # Elastic's workflow engine reads a condition that is exactly "true" or "false" (once
    # trimmed) as that boolean; in KQL each would be free text.
    trimmed = text.strip(JS_WHITESPACE)
    if trimmed in ("true", "false"):
        return Constant(trimmed == "true")
    return parse_kql(text)


def _evaluate(query: Query, scope: Mapping[str, Any]) -> bool:
    match query:
        case Constant(constant):
            return constant
        case MatchesNothing():
            return False
        case Not(item):
            return not _evaluate(item, scope)
        case And(items):
            return all(_evaluate(item, scope) for item in items)
        case Or(items):
            return any(_evaluate(item, scope) for item in items)
        case Exists(path):
            return _holds_at(scope, path, lambda element: element is not None)
        case Range(path, op, value):
            return _holds_at(scope, path, lambda element: _in_range(element, op, value))
        case Match(path, value):
            return _holds_at(scope, path, lambda element: _equals(element, value))
    return False


def _holds_at(scope: Mapping[str, Any], path: str, test: Callable[[Any], bool]) -> bool:
    found, actual = resolve_path(scope, path)
    return found and _some(actual, test)


def _some(actual: Any, test: Callable[[Any], bool]) -> bool:
    # On a list, a comparison holds when it holds for any element, as in Elasticsearch.
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


def _equals(actual: Any, value: Value) -> bool:
    if value.wildcard is not None:
        return isinstance(actual, str) and value.wildcard.matches(actual[:READ_LIMIT])
    if isinstance(actual, str):
        return actual == value.text
    if isinstance(actual, bool):
        return value.text.lower() == ("true" if actual else "false")
    if actual is None:
        return not value.quoted and value.text == "null"
    if isinstance(actual, int | float):
        number = _number(value.text)
        return number is not None and number == actual
    return False


def _in_range(actual: Any, op: str, value: Value) -> bool:
    compare = _RANGE_OPS[op]
    number = _number(value.text)
    if isinstance(actual, bool) or actual is None:
        return False
    if isinstance(actual, int | float):
        return number is not None and compare(actual, number)
    if isinstance(actual, str):
        if number is None:  # e.g. ISO dates, which compare correctly as text
            return compare(actual, value.text)
        actual_number = _number(actual) if len(actual) <= READ_LIMIT else None
        return actual_number is not None and compare(actual_number, number)
    return False


def _number(text: str) -> int | float | None:
    if not _NUMBER.fullmatch(text):
        return None
    if any(c in text for c in ".eE") or len(text) > 4000:  # int() refuses over 4,300 digits
        return float(text)
    return int(text)


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
