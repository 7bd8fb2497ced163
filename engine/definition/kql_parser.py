"""KQL text to a query tree, accepting exactly what Kibana's KQL grammar accepts.

Kibana parses KQL with a PEG grammar (``grammar.peggy`` in ``@kbn/es-query``); this is a
recursive-descent reading of the same rules, so a condition written for Elastic
Workflows parses here when it parses there, to the same tree:

- An unquoted value runs up to a special character (``\\():<>"*{}`` except ``*``, which
  is a wildcard) or a keyword, spaces included, and is trimmed: ``user.name : John Doe``
  compares with "John Doe". A keyword is `` or ``/`` and `` between spaces and ``not``
  followed by a space *anywhere*, so ``a : cannot be`` does not parse, while ``a : b or``
  (nothing after ``or``) is the value "b or".
- Only ``*`` is a wildcard; ``?`` is a literal character. ``\\`` escapes a special
  character, a keyword (``\\or``), ``\\t``/``\\r``/``\\n`` and ``\\uXXXX``; any other
  backslash outside quotes is a syntax error. Unquoted ``true``, ``false`` and ``null``
  are typed values.
- Quoted strings take ``\\"``, ``\\\\``, ``\\t``/``\\r``/``\\n`` and ``\\uXXXX``; a lone
  backslash is itself.
- A value without a field is free text; a field may be quoted or hold a wildcard;
  ``field:{ query }`` is a nested query; the empty condition is Kibana's match-all.
  Kibana's workflow engine matches none of these four, and neither do we (see
  :class:`MatchesNothing`).
- ``not`` takes one sub-query (``not not a : b`` does not parse); ``and`` binds tighter
  than ``or``; a value group ``f : (a or not b)`` stands for ``f : a or not f : b``.

Parsing is linear in the text: every rule scans forward, alternatives share no rescans
longer than a field name, and nesting (parentheses, ``not``, ``{``) is capped at
``MAX_DEPTH`` so no text can exhaust Python's stack.

It builds the records of :mod:`engine.definition.kql_tree`; a syntax error is worded by
:mod:`engine.definition.kql_syntax_errors`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from engine.definition.kql_syntax_errors import (
    nested_too_deeply,
    syntax_error,
    unmatched_parenthesis,
)
from engine.definition.kql_tree import (
    And,
    Exists,
    Match,
    MatchesNothing,
    Not,
    Or,
    Query,
    Range,
    Value,
    Wildcard,
)
from engine.errors import ConditionError

MAX_DEPTH = 100  # nested parentheses, braces and `not`s
_SPACE = " \t\r\n\u00a0"  # KQL's whitespace between tokens
# What JavaScript's String.prototype.trim() removes, which Kibana applies to unquoted text.
JS_WHITESPACE = ("\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
                 "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff")
_SPECIAL = '\\():<>"*{}'
_ESCAPED_WHITESPACE = {"t": "\t", "r": "\r", "n": "\n"}
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_RANGE_OPS = ("<=", ">=", "<", ">")

_T = TypeVar("_T")
_Partial = Callable[[str | None], Query]  # a value (group) waiting for its field


@dataclass(frozen=True)
class _Literal:
    text: str
    quoted: bool
    wildcard: Wildcard | None


class _Fail(Exception):
    pass


def parse_kql(text: str) -> Query:
    """Parse KQL as Kibana does; raise ConditionError (with a 1-based column) if it does not."""
    try:
        return _Parser(text).parse()
    except RecursionError:  # MAX_DEPTH keeps well inside the limit; a caller deep in its own
        raise nested_too_deeply(text, MAX_DEPTH) from None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.depth = 0
        self.farthest = 0  # where the parse got furthest, and what it expected there
        self.expected: set[str] = set()
        self.depth_exceeded_at: int | None = None

    def parse(self) -> Query:
        text = self.text
        position = self._spaces(0)
        if position == len(text):
            return MatchesNothing("empty")
        try:
            query, position = self._or(position)
        except _Fail:
            raise self._error() from None
        position = self._spaces(position)
        if position < len(text) and text[position] == ")" and position >= self.farthest:
            raise unmatched_parenthesis(text, position)
        if position != len(text):
            self._expect(position, "'and', 'or' or the end of the condition")
            raise self._error()
        return query

    # -- errors -------------------------------------------------------------------------------

    def _expect(self, position: int, what: str) -> None:
        if position > self.farthest:
            self.farthest, self.expected = position, set()
        if position == self.farthest:
            self.expected.add(what)

    def _error(self) -> ConditionError:
        text, at = self.text, self.farthest
        keyword = text[at:at + 4].strip(_SPACE) if at < len(text) and self._keyword_at(at) \
            else None
        return syntax_error(text, at, self.expected, keyword=keyword,
                            words_end=len(text.rstrip(_SPACE)),
                            nested_too_deep_at=self.depth_exceeded_at, max_depth=MAX_DEPTH)

    def _enter(self, position: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.depth_exceeded_at = position
            self.farthest = max(self.farthest, position)
            raise _Fail

    # -- lexical rules ------------------------------------------------------------------------

    def _spaces(self, position: int) -> int:
        text = self.text
        while position < len(text) and text[position] in _SPACE:
            position += 1
        return position

    def _word(self, position: int, word: str) -> bool:
        return self.text[position:position + len(word)].lower() == word

    def _keyword_at(self, position: int) -> bool:
        # ` or `, ` and `, or `not ` anywhere: where an unquoted literal stops.
        text, end = self.text, len(self.text)
        if text[position] in _SPACE:
            for word in ("or", "and"):
                after = position + 1 + len(word)
                if after < end and self._word(position + 1, word) and text[after] in _SPACE:
                    return True
            return False
        return position + 3 < end and self._word(position, "not") and text[position + 3] in _SPACE

    def _operator(self, position: int, word: str) -> int | None:
        """Position after `<spaces>word<spaces>` (`and`, `or`), or None."""
        start = self._spaces(position)
        if start == position or not self._word(start, word):
            return None
        after = start + len(word)
        end = self._spaces(after)
        return end if end > after else None

    def _not(self, position: int) -> int | None:
        if not self._word(position, "not"):
            return None
        end = self._spaces(position + 3)
        return end if end > position + 3 else None

    def _literal(self, position: int, what: str) -> tuple[_Literal, int]:
        if position < len(self.text) and self.text[position] == '"':
            return self._quoted(position)
        return self._unquoted(position, what)

    def _quoted(self, position: int) -> tuple[_Literal, int]:
        text, end = self.text, len(self.text)
        chars: list[str] = []
        i = position + 1
        while i < end and text[i] != '"':
            char = text[i]
            if char == "\\" and i + 1 < end:
                following = text[i + 1]
                if following in _ESCAPED_WHITESPACE:
                    chars.append(_ESCAPED_WHITESPACE[following])
                    i += 2
                    continue
                if following == "u" and _HEX4.fullmatch(text, i + 2, i + 6):
                    chars.append(chr(int(text[i + 2:i + 6], 16)))
                    i += 6
                    continue
                if following in '\\"':
                    chars.append(following)
                    i += 2
                    continue
            chars.append(char)
            i += 1
        if i >= end:
            self._expect(end, "'\"'")
            raise _Fail
        return _Literal("".join(chars), True, None), i + 1

    def _unquoted(self, position: int, what: str) -> tuple[_Literal, int]:
        text, end = self.text, len(self.text)
        chars: list[str | None] = []  # None is a wildcard
        i = position
        while i < end:
            char = text[i]
            if char == "\\" and i + 1 < end:
                following = text[i + 1]
                if following in _ESCAPED_WHITESPACE:
                    chars.append(_ESCAPED_WHITESPACE[following])
                    i += 2
                    continue
                if following in _SPECIAL:
                    chars.append(following)
                    i += 2
                    continue
                if following == "u" and _HEX4.fullmatch(text, i + 2, i + 6):
                    chars.append(chr(int(text[i + 2:i + 6], 16)))
                    i += 6
                    continue
                keyword = next((w for w in ("or", "and", "not") if self._word(i + 1, w)), None)
                if keyword is not None:
                    chars.extend(text[i + 1:i + 1 + len(keyword)])
                    i += 1 + len(keyword)
                    continue
            if char == "*":
                chars.append(None)
            elif char in _SPECIAL or self._keyword_at(i):
                break
            else:
                chars.append(char)
            i += 1
        if not chars:
            self._expect(i, what)
            raise _Fail
        # Trim as JavaScript does; a wildcard is never whitespace.
        solid = [n for n, c in enumerate(chars) if c is None or c not in JS_WHITESPACE]
        kept = chars[solid[0]:solid[-1] + 1] if solid else []
        literal = "".join("*" if c is None else c for c in kept)
        if None not in kept:
            return _Literal(literal, False, None), i
        pieces: list[str] = [""]
        for c in kept:
            if c is None:
                pieces.append("")
            else:
                pieces[-1] += c
        return _Literal(literal, False, Wildcard(tuple(pieces))), i

    # -- queries ------------------------------------------------------------------------------

    def _or(self, position: int) -> tuple[Query, int]:
        return self._chain(position, "or", self._and, Or)

    def _and(self, position: int) -> tuple[Query, int]:
        return self._chain(position, "and", self._not_query, And)

    def _chain(self, position: int, word: str, item: Callable[[int], tuple[Query, int]],
               build: Callable[[tuple[Query, ...]], Query]) -> tuple[Query, int]:
        first, position = item(position)
        items = [first]
        while True:
            after = self._operator(position, word)
            if after is None:
                break
            try:
                nxt, end = item(after)
            except _Fail:
                if self.depth_exceeded_at is not None:
                    raise
                break
            items.append(nxt)
            position = end
        return (items[0] if len(items) == 1 else build(tuple(items))), position

    def _not_query(self, position: int) -> tuple[Query, int]:
        return self._negated(position, self._sub_query, Not)

    def _sub_query(self, position: int) -> tuple[Query, int]:
        text = self.text
        if position < len(text) and text[position] == "(":
            self._enter(position)
            try:
                query, end = self._or(self._spaces(position + 1))
                end = self._spaces(end)
                if end < len(text) and text[end] == ")":
                    return query, end + 1
                self._expect(end, "')'")
            except _Fail:
                if self.depth_exceeded_at is not None:
                    raise
            finally:
                self.depth -= 1
        return self._expression(position)

    def _expression(self, position: int) -> tuple[Query, int]:
        text = self.text
        try:
            field, after_field = self._literal(position, "a field or a value")
        except _Fail:
            field = None
        if field is not None:
            at = self._spaces(after_field)
            if at < len(text) and text[at] == ":":
                value_at = self._spaces(at + 1)
                if value_at < len(text) and text[value_at] == "{":
                    nested = self._nested(field, value_at)
                    if nested is not None:
                        return nested
                try:
                    partial, end = self._list_of_values(value_at)
                except _Fail:
                    if self.depth_exceeded_at is not None:
                        raise
                else:
                    return partial(_field_path(field)), end
            else:
                op = next((o for o in _RANGE_OPS if text.startswith(o, at)), None)
                if op is not None:
                    value, end = self._literal(self._spaces(at + len(op)), "a value")
                    path = _field_path(field)
                    if path == _ANY_FIELD:
                        return MatchesNothing("wildcard field"), end
                    return Range(path, op, _to_value(value)), end
                self._expect(at, "':' or a comparison (<, <=, >, >=)")
        partial, end = self._value(position, "a field or a value")
        return partial(None), end

    def _nested(self, field: _Literal, brace: int) -> tuple[Query, int] | None:
        text = self.text
        self._enter(brace)
        try:
            _query, end = self._or(self._spaces(brace + 1))
            end = self._spaces(end)
            if end < len(text) and text[end] == "}":
                return MatchesNothing("nested query", field.text), end + 1
            self._expect(end, "'}'")
        except _Fail:
            if self.depth_exceeded_at is not None:
                raise
        finally:
            self.depth -= 1
        return None

    # -- value groups -------------------------------------------------------------------------

    def _list_of_values(self, position: int) -> tuple[_Partial, int]:
        text = self.text
        if position < len(text) and text[position] == "(":
            self._enter(position)
            try:
                partial, end = self._value_chain(self._spaces(position + 1), "or")
                end = self._spaces(end)
                if end < len(text) and text[end] == ")":
                    return partial, end + 1
                self._expect(end, "')'")
            except _Fail:
                if self.depth_exceeded_at is not None:
                    raise
            finally:
                self.depth -= 1
        return self._value(position, "a value")

    def _value_chain(self, position: int, word: str) -> tuple[_Partial, int]:
        if word == "or":
            first, position = self._value_chain(position, "and")
        else:
            first, position = self._not_values(position)
        items = [first]
        while True:
            after = self._operator(position, word)
            if after is None:
                break
            try:
                nxt, end = (self._value_chain(after, "and") if word == "or"
                            else self._not_values(after))
            except _Fail:
                if self.depth_exceeded_at is not None:
                    raise
                break
            items.append(nxt)
            position = end
        if len(items) == 1:
            return items[0], position
        build = Or if word == "or" else And
        group = tuple(items)
        return (lambda path: build(tuple(partial(path) for partial in group))), position

    def _not_values(self, position: int) -> tuple[_Partial, int]:
        return self._negated(position, self._list_of_values,
                             lambda partial: lambda path: Not(partial(path)))

    def _negated(self, position: int, parse: Callable[[int], tuple[_T, int]],
                 negate: Callable[[_T], _T]) -> tuple[_T, int]:
        """``not`` then what ``parse`` reads, negated; else (no ``not``, or nothing after
        it that parses: ordered choice) what ``parse`` reads from ``position``."""
        after = self._not(position)
        if after is not None:
            self._enter(position)
            try:
                found, end = parse(after)
            except _Fail:
                if self.depth_exceeded_at is not None:
                    raise
            else:
                return negate(found), end
            finally:
                self.depth -= 1
        return parse(position)

    def _value(self, position: int, what: str) -> tuple[_Partial, int]:
        literal, end = self._literal(position, what)
        value = _to_value(literal)

        def build(path: str | None) -> Query:
            if path is None:
                return MatchesNothing("free text")
            if path == _ANY_FIELD:
                return MatchesNothing("wildcard field")
            if value.wildcard is not None and value.wildcard.pieces == ("", ""):
                return Exists(path)
            return Match(path, value)

        return build, end


_ANY_FIELD = "*"  # a field name with a wildcard, which matches nothing


def _field_path(field: _Literal) -> str:
    # A field name with a wildcard names many fields in Elasticsearch; Kibana's workflow
    # engine looks it up as written and finds none.
    return _ANY_FIELD if field.wildcard is not None else field.text


def _to_value(literal: _Literal) -> Value:
    return Value(literal.text, quoted=literal.quoted, wildcard=literal.wildcard)
