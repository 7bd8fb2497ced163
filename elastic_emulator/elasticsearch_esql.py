"""The Elasticsearch emulator's ES|QL: a subset of ``POST /_query``, answered in its
``{columns, values}`` shape.

Supported: ``FROM`` one or more index patterns (comma-separated, ``*`` wildcards), then
any of ``WHERE`` (comparisons ``== != < <= > >=`` of a column with a literal, ``IS [NOT]
NULL``, ``AND``/``OR``/``NOT`` and parentheses; literals are strings in double quotes,
numbers, ``true``/``false``/``null``; a date column compares with an ISO string, and
``NOW() - 1 hour`` style arithmetic is supported), ``KEEP`` (names and ``*`` patterns),
``SORT`` (columns with ``ASC``/``DESC``), ``LIMIT`` and ``STATS [name =] COUNT(*) [BY
column]``. Without ``LIMIT`` at most 1000 rows come back, as ES|QL's default. Column
types are guessed from the values (``keyword``, ``long``, ``double``, ``boolean``,
``date``), since there are no mappings; nested objects become dotted columns, sorted by
name as ``FROM`` lists them. Anything else (``EVAL``, ``DROP``, ``RENAME``, ``DISSECT``,
functions other than ``COUNT``, ``params``) is a ``parsing_exception``; an unknown index
or column a ``verification_exception``, with ES|QL's ``line 1:col`` prefixes.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from elastic_emulator.elasticsearch_query import QueryError, compare, parse_date

DEFAULT_LIMIT = 1000
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>\d+(?:\.\d+)?)'
                    r'|(?P<op>==|!=|<=|>=|<|>|\(|\)|-|\+|,)|(?P<word>[A-Za-z_@][\w.@*]*))')
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}


def _error(type_: str, column: int, message: str) -> QueryError:
    reason = f"line 1:{column}: {message}"
    if type_ == "verification_exception":
        reason = f"Found 1 problem\n{reason}"
    return QueryError(type_, reason)


def run_esql(query: str, indices: Mapping[str, Mapping[str, Any]], now: datetime,
             columnar: bool = False) -> dict[str, Any]:
    """The answer to ``query`` over ``indices`` (index name to ``{id: source}``)."""
    commands = _split(query)
    first, start = commands[0]
    head = re.match(r"(?i)FROM\s+(.+)$", first)
    if not head:
        word = first.split()[0] if first.split() else "<EOF>"
        raise _error("parsing_exception", start + 1, f"mismatched input '{word}' expecting "
                     "{'from', 'row', 'show'}")
    rows = _from(head.group(1), start + 6, indices)
    columns = _columns(rows)
    limited = False
    for text, at in commands[1:]:
        word, _, rest = text.partition(" ")
        keyword = word.upper()
        rest = rest.strip()
        if keyword == "WHERE":
            expression = _Parser(rest, at + len(word) + 2, columns, now).parse()
            rows = [row for row in rows if _truthy(expression(row))]
        elif keyword == "KEEP":
            kept: list[str] = []
            for name in (n.strip() for n in rest.split(",")):
                found = [c for c in columns if fnmatch.fnmatchcase(c, name)]
                if not found:
                    raise _error("verification_exception", at + 1 + text.find(name, 4),
                                 f"Unknown column [{name}]")
                kept += [c for c in found if c not in kept]
            columns = kept
        elif keyword == "SORT":
            for part in reversed([p.strip() for p in rest.split(",")]):
                name, *order = part.split()
                if name not in columns:
                    raise _error("verification_exception", at + 1 + text.find(name, 4),
                                 f"Unknown column [{name}]")
                descending = bool(order) and order[0].upper() == "DESC"
                present = [r for r in rows if r.get(name) is not None]
                absent = [r for r in rows if r.get(name) is None]
                present.sort(key=_SortKey.of(name, now), reverse=descending)
                # nulls last ascending, first descending (ES|QL's default)
                rows = present + absent if not descending else absent + present
        elif keyword == "LIMIT":
            if not rest.isdigit():
                raise _error("parsing_exception", at + 7, f"mismatched input '{rest}' "
                             "expecting INTEGER_LITERAL")
            rows, limited = rows[:int(rest)], True
        elif keyword == "STATS":
            rows, columns = _stats(rest, at + 7, rows, columns)
        else:
            raise _error("parsing_exception", at + 1, f"mismatched input '{word}' expecting "
                         "{'keep', 'limit', 'sort', 'stats', 'where'} (this emulator's subset)")
    if not limited:
        rows = rows[:DEFAULT_LIMIT]
    described = [{"name": c, "type": _type([r.get(c) for r in rows])} for c in columns]
    values = [[r.get(c) for c in columns] for r in rows]
    if columnar:
        values = [list(column) for column in zip(*values, strict=True)] if values else \
            [[] for _ in columns]
    return {"took": 1, "is_partial": False, "columns": described, "values": values}


def _split(query: str) -> list[tuple[str, int]]:
    """The commands of ``query``, split at pipes outside strings, each with its offset."""
    parts, start, quoted = [], 0, False
    for index, char in enumerate(query):
        if char == '"':
            quoted = not quoted
        elif char == "|" and not quoted:
            parts.append((query[start:index], start))
            start = index + 1
    parts.append((query[start:], start))
    out = []
    for text, offset in parts:
        stripped = text.strip()
        out.append((" ".join(stripped.split()), offset + len(text) - len(text.lstrip())))
    if not out[0][0]:
        raise _error("parsing_exception", 1, "mismatched input '<EOF>' expecting "
                     "{'from', 'row', 'show'}")
    return out


def _from(patterns: str, column: int, indices: Mapping[str, Mapping[str, Any]]
          ) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for pattern in (p.strip() for p in patterns.split(",")):
        if not re.fullmatch(r"[\w.*\-]+", pattern):
            raise _error("parsing_exception", column, f"mismatched input '{pattern}'")
        names = [n for n in sorted(indices) if fnmatch.fnmatchcase(n, pattern)]
        if not names and "*" not in pattern:
            raise _error("verification_exception", column, f"Unknown index [{pattern}]")
        for name in names:
            rows += [_flat(source) for source in indices[name].values()]
    return rows


def _flat(source: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in source.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({name for row in rows for name in row})


def _type(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "null"
    if all(isinstance(v, bool) for v in present):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "long"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "double"
    if all(isinstance(v, str) and "T" in v and parse_date(v, datetime.now()) for v in present):
        return "date"
    return "keyword"


def _stats(text: str, column: int, rows: list[dict[str, Any]], columns: list[str]
           ) -> tuple[list[dict[str, Any]], list[str]]:
    found = re.fullmatch(r"(?i)(?:([\w.@]+)\s*=\s*)?COUNT\(\s*(\*|[\w.@]+)\s*\)"
                         r"(?:\s+BY\s+([\w.@]+))?", text)
    if not found:
        raise _error("parsing_exception", column, f"this emulator's STATS supports "
                     f"[name =] COUNT(*|column) [BY column] only, not [{text}]")
    name = found.group(1) or f"COUNT({found.group(2)})"
    counted, by = found.group(2), found.group(3)
    for wanted in (counted, by):
        if wanted and wanted != "*" and wanted not in columns:
            raise _error("verification_exception", column, f"Unknown column [{wanted}]")

    def count(group: list[dict[str, Any]]) -> int:
        return len(group) if counted == "*" else sum(1 for r in group if r.get(counted)
                                                     is not None)

    if by is None:
        return [{name: count(rows)}], [name]
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        value = row.get(by)
        groups.setdefault(tuple(value) if isinstance(value, list) else value, []).append(row)
    return [{name: count(group), by: key} for key, group in groups.items()], [name, by]


class _SortKey:
    """Sorts a column's non-null values as ES|QL does: numbers, dates or text."""

    def __init__(self, value: Any, now: datetime) -> None:
        self.value, self.now = value, now

    @classmethod
    def of(cls, name: str, now: datetime) -> Any:
        return lambda row: cls(row.get(name), now)

    def __lt__(self, other: _SortKey) -> bool:
        return (compare(self.value, other.value, self.now) or 0) < 0


def _truthy(value: Any) -> bool:
    return value is True


class _Parser:
    """A WHERE expression, parsed into a function of a row (three-valued: None is null)."""

    def __init__(self, text: str, column: int, columns: list[str], now: datetime) -> None:
        self.tokens: list[tuple[str, str, int]] = []
        position = 0
        while position < len(text.rstrip()):
            found = _TOKEN.match(text, position)
            if not found:
                raise _error("parsing_exception", column + position,
                             f"token recognition error at: '{text[position:].strip()[:1]}'")
            kind = found.lastgroup or "op"
            self.tokens.append((kind, found.group(kind), column + found.start(kind)))
            position = found.end()
        self.index, self.columns, self.now, self.end = 0, columns, now, column + len(text)

    def parse(self) -> Any:
        expression = self._or()
        if self.index < len(self.tokens):
            _, value, at = self.tokens[self.index]
            raise _error("parsing_exception", at, f"extraneous input '{value}'")
        return expression

    def _peek(self) -> tuple[str, str, int]:
        return self.tokens[self.index] if self.index < len(self.tokens) else ("eof", "<EOF>",
                                                                              self.end)

    def _word(self, *words: str) -> bool:
        kind, value, _ = self._peek()
        if kind == "word" and value.upper() in words:
            self.index += 1
            return True
        return False

    def _or(self) -> Any:
        left = self._and()
        while self._word("OR"):
            right, first = self._and(), left
            left = lambda row, a=first, b=right: _or3(a(row), b(row))  # noqa: E731
        return left

    def _and(self) -> Any:
        left = self._not()
        while self._word("AND"):
            right, first = self._not(), left
            left = lambda row, a=first, b=right: _and3(a(row), b(row))  # noqa: E731
        return left

    def _not(self) -> Any:
        if self._word("NOT"):
            inner = self._not()
            return lambda row: None if inner(row) is None else not inner(row)
        return self._comparison()

    def _comparison(self) -> Any:
        kind, value, at = self._peek()
        if value == "(":
            self.index += 1
            inner = self._or()
            if self._peek()[1] != ")":
                raise _error("parsing_exception", self._peek()[2], "missing ')'")
            self.index += 1
            return inner
        left = self._operand()
        if self._word("IS"):
            negated = self._word("NOT")
            if not self._word("NULL"):
                raise _error("parsing_exception", self._peek()[2], "expecting NULL")
            return lambda row: (left(row) is not None) if negated else (left(row) is None)
        kind, operator, at = self._peek()
        if operator not in ("==", "!=", "<", "<=", ">", ">="):
            raise _error("parsing_exception", at, f"mismatched input '{operator}' expecting "
                         "a comparison")
        self.index += 1
        right = self._operand()
        return lambda row: _compare(operator, left(row), right(row), self.now)

    def _operand(self) -> Any:
        kind, value, at = self._peek()
        self.index += 1
        if kind == "str":
            text = value[1:-1].replace('\\"', '"')
            return lambda row: text
        if kind == "num":
            number = float(value) if "." in value else int(value)
            return lambda row: number
        if kind == "word" and value.upper() in ("TRUE", "FALSE"):
            return lambda row: value.upper() == "TRUE"
        if kind == "word" and value.upper() == "NULL":
            return lambda row: None
        if kind == "word" and value.upper() == "NOW" and self._peek()[1] == "(":
            self.index += 2  # "(" ")"
            moment = self.now
            while self._peek()[1] in ("-", "+"):
                sign = self._peek()[1]
                self.index += 1
                amount, unit = self._peek(), None
                self.index += 1
                _, unit_text, unit_at = self._peek()
                self.index += 1
                unit = _UNITS.get(unit_text.lower().rstrip("s"))
                if unit is None or amount[0] != "num":
                    raise _error("parsing_exception", unit_at, f"unknown time unit "
                                 f"[{unit_text}]")
                delta = timedelta(seconds=float(amount[1]) * unit)
                moment = moment + delta if sign == "+" else moment - delta
            stamp = moment.isoformat().replace("+00:00", "Z")
            return lambda row: stamp
        if kind == "word":
            if value not in self.columns:
                raise _error("verification_exception", at, f"Unknown column [{value}]")
            return lambda row: row.get(value)
        raise _error("parsing_exception", at, f"mismatched input '{value}' expecting a value")


def _compare(operator: str, left: Any, right: Any, now: datetime) -> bool | None:
    if left is None or right is None:
        return None
    if isinstance(left, list):
        return None  # ES|QL: a multi-valued field compares as null (with a warning)
    outcome = compare(left, right, now)
    if outcome is None:
        return None
    return {"==": outcome == 0, "!=": outcome != 0, "<": outcome < 0, "<=": outcome <= 0,
            ">": outcome > 0, ">=": outcome >= 0}[operator]


def _and3(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or3(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False
