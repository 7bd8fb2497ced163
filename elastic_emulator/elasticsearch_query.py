"""The Elasticsearch emulator's query DSL: which documents a ``_search`` query matches.

A document is its ``_source`` (a JSON object); a field is a dotted name, read through
nested objects or as a flat key (``{"host": {"name": "a"}}`` and ``{"host.name": "a"}``
both have ``host.name``). There are no mappings and no analysis: ``term``/``terms``
compare whole values (a list matches when one of its values does), ``match`` compares
lower-cased word tokens, ``range`` compares numbers as numbers and anything else as a
date when both sides read as one (ISO 8601, epoch milliseconds or date math such as
``now-1h``, ``now/d``), else as text. Scores are constant (1.0 per matching clause).
An unknown query answers Elasticsearch's ``parsing_exception``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

_MISSING = object()
_WORD = re.compile(r"\w+")
_DATE_MATH = re.compile(r"^(now|.+?\|\|)((?:[+-]\d+[yMwdhHms])*)(/[yMwdhHms])?$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "H": 3600, "d": 86400, "w": 604800,
                 "M": 30 * 86400, "y": 365 * 86400}


class QueryError(Exception):
    """A query Elasticsearch would refuse: its error ``type`` and ``reason``."""

    def __init__(self, type_: str, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.type = type_
        self.reason = reason
        self.status = status


def field_values(source: Mapping[str, Any], name: str) -> list[Any]:
    """Every value of field ``name`` in ``source`` (lists flattened); [] when it is absent."""
    found = _lookup(source, name.split("."))
    if found is _MISSING or found is None:
        return []
    if isinstance(found, list):
        return [v for v in _flatten(found) if v is not None]
    return [found]


def _lookup(node: Any, parts: list[str]) -> Any:
    if not parts:
        return node
    if isinstance(node, list):
        values = [_lookup(item, parts) for item in node]
        values = [v for v in values if v is not _MISSING]
        return values if values else _MISSING
    if not isinstance(node, Mapping):
        return _MISSING
    for cut in range(len(parts), 0, -1):  # "a.b" as a flat key before a.b nested
        key = ".".join(parts[:cut])
        if key in node:
            found = _lookup(node[key], parts[cut:])
            if found is not _MISSING:
                return found
    return _MISSING


def _flatten(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        out.extend(_flatten(value) if isinstance(value, list) else [value])
    return out


def matches(query: Any, source: Mapping[str, Any], now: datetime) -> bool:
    """Whether ``source`` matches ``query`` (a query DSL object); QueryError if malformed."""
    if not isinstance(query, Mapping) or len(query) != 1:
        raise QueryError("parsing_exception", "[_na] query malformed, must start with start_object"
                         if not isinstance(query, Mapping)
                         else "[_na] query malformed, no start_object after query name")
    [(kind, body)] = query.items()
    handler = _QUERIES.get(kind)
    if handler is None:
        raise QueryError("parsing_exception", f"unknown query [{kind}]")
    return handler(body, source, now)


def _single_field(kind: str, body: Any) -> tuple[str, Any]:
    if not isinstance(body, Mapping) or len(body) != 1:
        raise QueryError("parsing_exception", f"[{kind}] query doesn't support multiple fields, "
                         "found none" if not body else f"[{kind}] query doesn't support "
                         "multiple fields")
    [(field, spec)] = body.items()
    return str(field), spec


def _match_all(body: Any, source: Mapping[str, Any], now: datetime) -> bool:
    return True


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower() == str(b).lower()
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    if isinstance(a, int | float) or isinstance(b, int | float):
        return str(a) == str(b)  # a number field queried with "200" matches, as ES coerces
    return bool(a == b)


def _term(body: Any, source: Mapping[str, Any], now: datetime) -> bool:
    field, spec = _single_field("term", body)
    wanted = spec.get("value") if isinstance(spec, Mapping) else spec
    insensitive = isinstance(spec, Mapping) and spec.get("case_insensitive") is True
    for value in field_values(source, field):
        if insensitive and isinstance(value, str) and isinstance(wanted, str):
            if value.lower() == wanted.lower():
                return True
        elif _equal(value, wanted):
            return True
    return False


def _terms(body: Any, source: Mapping[str, Any], now: datetime) -> bool:
    fields = {k: v for k, v in (body or {}).items() if k != "boost"}
    if len(fields) != 1 or not isinstance(next(iter(fields.values())), list):
        raise QueryError("parsing_exception", "[terms] query requires a field with an array "
                         "of values")
    [(field, wanted)] = fields.items()
    return any(_equal(v, w) for v in field_values(source, field) for w in wanted)


def _match(body: Any, source: Mapping[str, Any], now: datetime) -> bool:
    field, spec = _single_field("match", body)
    text = spec.get("query") if isinstance(spec, Mapping) else spec
    operator = str(spec.get("operator", "or")).lower() if isinstance(spec, Mapping) else "or"
    wanted = set(_WORD.findall(str(text).lower()))
    if not wanted:
        return False
    have = {t for v in field_values(source, field) for t in _WORD.findall(str(v).lower())}
    return wanted <= have if operator == "and" else bool(wanted & have)


def _exists(body: Any, source: Mapping[str, Any], now: datetime) -> bool:
    if not isinstance(body, Mapping) or "field" not in body:
        raise QueryError("parsing_exception", "[exists] must be provided with a [field]")
    return bool(field_values(source, str(body["field"])))


def _wildcard(body: Any, source: Mapping[str, Any], now: datetime) -> bool:
    field, spec = _single_field("wildcard", body)
    pattern = spec.get("value", spec.get("wildcard")) if isinstance(spec, Mapping) else spec
    insensitive = isinstance(spec, Mapping) and spec.get("case_insensitive") is True
    regex = re.compile(fnmatch.translate(str(pattern)), re.IGNORECASE if insensitive else 0)
    return any(regex.match(str(v)) for v in field_values(source, field))


def _prefix(body: Any, source: Mapping[str, Any], now: datetime) -> bool:
    field, spec = _single_field("prefix", body)
    prefix = str(spec.get("value") if isinstance(spec, Mapping) else spec)
    return any(str(v).startswith(prefix) for v in field_values(source, field))


def parse_date(value: Any, now: datetime) -> datetime | None:
    """``value`` as a UTC datetime: ISO 8601, epoch milliseconds, or date math; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    text = str(value).strip()
    math = _DATE_MATH.match(text)
    if math:
        anchor = now if math.group(1) == "now" else parse_date(math.group(1)[:-2], now)
        if anchor is None:
            return None
        for sign, amount, unit in re.findall(r"([+-])(\d+)([yMwdhHms])", math.group(2)):
            delta = timedelta(seconds=int(amount) * _UNIT_SECONDS[unit])
            anchor = anchor + delta if sign == "+" else anchor - delta
        if math.group(3):
            anchor = _round_down(anchor, math.group(3)[1])
        return anchor
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _round_down(moment: datetime, unit: str) -> datetime:
    if unit == "s":
        return moment.replace(microsecond=0)
    if unit == "m":
        return moment.replace(second=0, microsecond=0)
    if unit in "hH":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "w":
        return day - timedelta(days=day.weekday())
    if unit == "M":
        return day.replace(day=1)
    if unit == "y":
        return day.replace(month=1, day=1)
    return day


def compare(value: Any, bound: Any, now: datetime) -> int | None:
    """-1, 0 or 1 as ``value`` sorts before, with or after ``bound``; None if they do not
    compare (a number against text that is not one)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            other = float(bound)
        except (TypeError, ValueError):
            other_date = parse_date(bound, now)
            if other_date is None:
                return None
            return _sign(value - other_date.timestamp() * 1000)
        return _sign(float(value) - other)
    left, right = parse_date(value, now), parse_date(bound, now)
    if left is not None and right is not None:
        return _sign((left - right).total_seconds())
    a, b = str(value), str(bound)
    return (a > b) - (a < b)


def _sign(number: float) -> int:
    return (number > 0) - (number < 0)


def _range(body: Any, source: Mapping[str, Any], now: datetime) -> bool:
    field, spec = _single_field("range", body)
    if not isinstance(spec, Mapping):
        raise QueryError("parsing_exception", f"[range] query malformed, no start_object "
                         f"after field name [{field}]")
    unknown = [k for k in spec if k not in ("gt", "gte", "lt", "lte", "format", "time_zone",
                                            "boost", "relation")]
    if unknown:
        raise QueryError("parsing_exception", f"[range] query does not support [{unknown[0]}]")
    tests: dict[str, Callable[[int], bool]] = {
        "gt": lambda c: c > 0, "gte": lambda c: c >= 0, "lt": lambda c: c < 0,
        "lte": lambda c: c <= 0}
    for value in field_values(source, field):
        ok = True
        for key, test in tests.items():
            if key in spec and spec[key] is not None:
                outcome = compare(value, spec[key], now)
                if outcome is None or not test(outcome):
                    ok = False
                    break
        if ok:
            return True
    return False


def _bool(body: Any, source: Mapping[str, Any], now: datetime) -> bool:
    if not isinstance(body, Mapping):
        raise QueryError("parsing_exception", "[bool] query malformed")
    unknown = [k for k in body if k not in ("must", "filter", "should", "must_not",
                                            "minimum_should_match", "boost", "_name")]
    if unknown:
        raise QueryError("parsing_exception", f"[bool] query does not support [{unknown[0]}]")

    def clauses(key: str) -> list[Any]:
        value = body.get(key)
        return [] if value is None else value if isinstance(value, list) else [value]

    must, filter_, should, must_not = (clauses(k) for k in ("must", "filter", "should",
                                                            "must_not"))
    if not all(matches(q, source, now) for q in [*must, *filter_]):
        return False
    if any(matches(q, source, now) for q in must_not):
        return False
    minimum = body.get("minimum_should_match")
    if minimum is None:
        minimum = 0 if (must or filter_) else 1
    minimum = int(str(minimum).rstrip("%")) if str(minimum).lstrip("-").rstrip("%").isdigit() \
        else 1
    if not should:
        return True
    return sum(1 for q in should if matches(q, source, now)) >= min(minimum, len(should))


_QUERIES: dict[str, Callable[[Any, Mapping[str, Any], datetime], bool]] = {
    "match_all": _match_all, "term": _term, "terms": _terms, "match": _match,
    "bool": _bool, "range": _range, "exists": _exists,
    "wildcard": _wildcard, "prefix": _prefix,
}
