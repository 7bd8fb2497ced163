"""KQL's query tree: what a condition says once parsed, as Kibana's KQL tree holds it.

:mod:`engine.definition.kql_parser` builds it from text and
:mod:`engine.definition.conditions` evaluates it on a run. A value keeps what was
written (quoted or not, its wildcard pieces) and reads it lazily as Kibana does: typed
``true``/``false``/``null``, JavaScript's ``parseFloat``, whether it may be date math. A
field's path is read into property segments by :func:`field_segments`, which LiquidJS's
``where`` filter shares.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from engine.definition.jsvalue import parse_float


@dataclass(frozen=True)
class Wildcard:
    """An unquoted value with ``*``: the literal pieces between its stars, in order.

    The first piece is anchored at the start and the last at the end; each middle piece
    is found at its leftmost place, which leaves every later piece the most room, so a
    match never backtracks across a star.
    """

    pieces: tuple[str, ...]

    def matches(self, text: str) -> bool:
        """Whether the whole of ``text`` matches, in time linear in ``len(text)``."""
        head, *middle, tail = self.pieces
        end = len(text) - len(tail)
        if end < len(head) or not text.startswith(head) or not text.endswith(tail):
            return False
        position = len(head)
        for piece in middle:
            if piece:
                found = text.find(piece, position, end)
                if found < 0:
                    return False
                position = found + len(piece)
        return True


@dataclass(frozen=True)
class Value:
    """A value as written (unescaped, trimmed); ``wildcard`` is set when an unquoted value
    has an unescaped ``*``."""

    text: str
    quoted: bool = False
    wildcard: Wildcard | None = None

    @functools.cached_property
    def literal(self) -> str | bool | None:
        """The value as Kibana's KQL tree holds it: unquoted ``null``, ``true`` and
        ``false`` are typed, everything else is text (a wildcard's stars as Kibana marks
        them, ``@kuery-wildcard@``)."""
        if self.quoted:
            return self.text
        if self.wildcard is not None:
            return KUERY_WILDCARD.join(self.wildcard.pieces)
        return _TYPED_LITERALS.get(self.text, self.text)

    @functools.cached_property
    def literal_text(self) -> str:
        """JavaScript's ``String()`` of :attr:`literal`: ``null`` for null."""
        literal = self.literal
        if isinstance(literal, str):
            return literal
        return "null" if literal is None else "true" if literal else "false"

    @functools.cached_property
    def number(self) -> float:
        """JavaScript's ``parseFloat`` of :attr:`literal`: NaN when it is no number."""
        return parse_float(self.literal_text)

    @functools.cached_property
    def may_be_date_math(self) -> bool:
        """Whether Kibana tries the text as date math (``now…`` or ``…||…``)."""
        return self.literal_text.startswith("now") or "||" in self.literal_text


KUERY_WILDCARD = "@kuery-wildcard@"  # how Kibana's KQL tree writes a value's `*`
_TYPED_LITERALS: dict[str, bool | None] = {"null": None, "true": True, "false": False}


# The query tree. A value group `f : (a or not b)` is built as `f : a or not f : b`, as KQL does.
@dataclass(frozen=True)
class Match:
    path: str
    value: Value


@dataclass(frozen=True)
class Exists:
    path: str


@dataclass(frozen=True)
class Range:
    path: str
    op: str
    value: Value


@dataclass(frozen=True)
class Or:
    items: tuple[Query, ...]


@dataclass(frozen=True)
class And:
    items: tuple[Query, ...]


@dataclass(frozen=True)
class Not:
    item: Query


@dataclass(frozen=True)
class Constant:
    value: bool


@dataclass(frozen=True)
class MatchesNothing:
    """What KQL accepts but Kibana's workflow engine never matches: ``kind`` is "free text"
    (a value without a field), "wildcard field", "nested query" or "empty"; ``path`` is
    the nested query's field."""

    kind: str
    path: str | None = None


Query = Match | Exists | Range | Or | And | Not | Constant | MatchesNothing


def field_segments(path: str) -> tuple[str, ...]:
    """A field name's property path, read as Kibana's workflow engine reads it:
    ``a.b[0].c`` and ``a['b-c']`` give ``("a", "b", "0", "c")`` and ``("a", "b-c")``."""
    parts: list[str] = []
    current: list[str] = []
    in_bracket = False
    for char in path:
        if char == "." and not in_bracket or char in "[]":
            if current:
                part = "".join(current)
                if char == "]" and len(part) > 1 and part[0] == part[-1] and part[0] in "'\"":
                    part = part[1:-1]
                parts.append(part)
                current = []
            in_bracket = char == "[" or in_bracket and char != "]"
        else:
            current.append(char)
    if current:
        parts.append("".join(current))
    return tuple(parts)
