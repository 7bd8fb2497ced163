"""LiquidJS's built-in filters that python-liquid lacks, or reads otherwise.

With LiquidJS's meaning: ``default`` keeps 0 and empty objects, ``date`` formats in UTC
with LiquidJS's directives, the array filters return a new list and never change the one
they are given, and a missing value counts as an empty list. ``where``, ``where_exp``,
``find_exp`` and ``group_by_exp`` read an expression per item (``"i.size > 3"``, as an
``if`` tag's, with LiquidJS's tokens and comparisons, parsed once per text) or a property
path (``host.name``, read as a KQL field) and compare strictly, as LiquidJS does; they
are :data:`EXPRESSION_FILTERS`.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from liquid import Environment, RenderContext, Undefined, is_undefined
from liquid.builtin.expressions.logical import is_truthy
from liquid.builtin.filters.misc import date as liquid_date
from liquid.exceptions import FilterArgumentError, LiquidSyntaxError
from liquid.expression import Expression
from liquid.filter import with_context, with_environment

from engine.definition import jsvalue
from engine.definition.kql_tree import field_segments
from engine.definition.liquidjs_comparisons import strictly_equal, with_javascript_operators
from engine.definition.liquidjs_parser import parse_expression

__all__ = ["EXPRESSION_FILTERS", "array_to_sentence_string", "as_list", "cgi_escape", "date",
           "date_to_long_string", "date_to_rfc822", "date_to_string", "date_to_xmlschema",
           "default", "first", "group_by", "grouped", "last", "normalize_whitespace",
           "number_of_words", "pop", "push", "raw", "shift", "slugify", "to_integer",
           "unshift", "uri_escape", "xml_escape"]


def as_list(value: object) -> list[Any]:
    """LiquidJS's reading of a filter's input as an array: nothing is an empty one."""
    if value is None or is_undefined(value):
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


_NO_DEFAULT = object()


def default(value: object, default_: object = _NO_DEFAULT, *,
            allow_false: object = False) -> object:
    """LiquidJS's ``default``: an empty string or list, false, nil and undefined give the
    default (undefined when none is given); 0 and objects, even empty ones, stay."""
    fallback = Undefined("default") if default_ is _NO_DEFAULT else default_
    if isinstance(value, str | list | tuple):
        return value if value else fallback
    if value is False and allow_false not in (False, None, 0, "") and \
            not is_undefined(allow_false):
        return value
    if value is None or value is False or is_undefined(value):
        return fallback
    return value


_EPOCH_TEXT = re.compile(r"[0-9]+")


def _utc_moment(value: object) -> object:
    """The date a ``date`` filter formats, as LiquidJS reads it on a server in UTC: an
    instant with an offset is shown in UTC, a number (or digits) is seconds since the
    epoch, ``now``/``today`` the current time; other values are left to python-liquid."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC) if value.tzinfo is not None else value
    if isinstance(value, int | float) and not isinstance(value, bool) or \
            isinstance(value, str) and _EPOCH_TEXT.fullmatch(value):
        try:
            return dt.datetime.fromtimestamp(float(value), dt.UTC)  # type: ignore[arg-type]
        except (OverflowError, OSError, ValueError):
            return value
    if value in ("now", "today"):
        return dt.datetime.now(dt.UTC)
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return value
        return moment.astimezone(dt.UTC) if moment.tzinfo is not None else moment
    return value


_DEFAULT_DATE_FORMAT = "%A, %B %-e, %Y at %-l:%M %P %z"  # LiquidJS's, without a format
_LIQUIDJS_DIRECTIVES = re.compile(r"%[%LNqs]")


def _ordinal_suffix(day: int) -> str:
    if day in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _directive(moment: dt.datetime, directive: str) -> str:
    millisecond = f"{moment.microsecond // 1000:03d}"
    return {"%%": "%%", "%L": millisecond, "%N": millisecond.ljust(9, "0"),
            "%q": _ordinal_suffix(moment.day),
            "%s": str(int(moment.timestamp()))}[directive]


@with_environment
def date(value: object, fmt: object = None, *, environment: Environment) -> object:
    """LiquidJS's ``date`` on a server in UTC: python-liquid's strftime, in UTC, with
    LiquidJS's ``%L`` (milliseconds), ``%N``, ``%q`` (``st``, ``nd``…) and default format."""
    moment = _utc_moment(value)
    if fmt is None or is_undefined(fmt):
        fmt = _DEFAULT_DATE_FORMAT
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)  # JavaScript reads it as local: UTC
        if isinstance(fmt, str):
            fmt = _LIQUIDJS_DIRECTIVES.sub(lambda m: _directive(moment, m.group()), fmt)
    return liquid_date(moment, fmt, environment=environment)


def first(value: object) -> object:
    """LiquidJS's ``first``: the first item of a list or character of a string (undefined
    when empty); anything else gives an empty string."""
    if isinstance(value, str | list | tuple | range):
        return value[0] if len(value) else Undefined("first")
    return ""


def last(value: object) -> object:
    """LiquidJS's ``last``, as :func:`first` from the end."""
    if isinstance(value, str | list | tuple | range):
        return value[-1] if len(value) else Undefined("last")
    return ""


def _text(value: object) -> str:
    if value is None or is_undefined(value):
        return ""
    return str(value)


# LiquidJS's array filters: each returns a new list.

def push(value: object, item: object = None) -> list[Any]:
    """The list with ``item`` appended."""
    return [*as_list(value), item]


def pop(value: object) -> list[Any]:
    """The list without its last item."""
    return as_list(value)[:-1]


def shift(value: object) -> list[Any]:
    """The list without its first item."""
    return as_list(value)[1:]


def unshift(value: object, item: object = None) -> list[Any]:
    """The list with ``item`` put first."""
    return [item, *as_list(value)]


def group_by(value: object, key: object) -> list[dict[str, Any]]:
    """``[{"name": k, "items": [...]}]`` for each value of ``key``, in order of appearance."""
    items = as_list(value)
    return grouped(items, [item.get(str(key)) if isinstance(item, Mapping) else None
                           for item in items])


def grouped(items: list[Any], names: list[Any]) -> list[dict[str, Any]]:
    """``items`` grouped by their ``names`` (one name per item), in order of appearance."""
    groups: dict[Any, tuple[Any, list[Any]]] = {}
    for item, name in zip(items, names, strict=True):
        groups.setdefault(_hashable(name), (name, []))[1].append(item)
    return [{"name": name, "items": members} for name, members in groups.values()]


def _hashable(value: object) -> Any:
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)
    return value


def array_to_sentence_string(value: object, connector: object = "and") -> str:
    """``a, b, and c`` (``a and b`` for two)."""
    items = [_text(item) for item in as_list(value)]
    word = _text(connector)
    if len(items) <= 1:
        return "".join(items)
    if len(items) == 2:
        return f"{items[0]} {word} {items[1]}"
    return f"{', '.join(items[:-1])}, {word} {items[-1]}"


# LiquidJS's string and number filters.

def to_integer(value: object) -> int:
    """The value as an integer, truncated; 0 when it is not a number."""
    if isinstance(value, bool):
        return int(value)
    try:
        number = float(value) if isinstance(value, int | float) else float(_text(value).strip())
    except ValueError:
        return 0
    return int(number) if math.isfinite(number) else 0


_SPACES = re.compile(r"\s+")


def normalize_whitespace(value: object) -> str:
    """Every run of whitespace as one space."""
    return _SPACES.sub(" ", _text(value))


def number_of_words(value: object, mode: object = None) -> int:
    """How many whitespace-separated words the text has."""
    return len(_text(value).split())


def xml_escape(value: object) -> str:
    """``& < > " '`` as XML entities."""
    return html.escape(_text(value), quote=True)


def cgi_escape(value: object) -> str:
    """Percent-encoded for a query string, spaces as ``+``."""
    return quote(_text(value), safe="-_.~").replace("%20", "+")


def uri_escape(value: object) -> str:
    """Percent-encoded as a whole URI: reserved characters such as ``/?&=#[]`` stay."""
    return quote(_text(value), safe=";,/?:@&=+$-_.!~*'()#[]")


_SLUG_MODES = {
    "raw": re.compile(r"\s+"),
    "default": re.compile(r"[^\w]+|_+"),
    "pretty": re.compile(r"[^\w._~!$&'()+,;=@]+|_+"),
    "ascii": re.compile(r"[^A-Za-z0-9]+"),
}


def slugify(value: object, mode: object = "default", cased: object = False) -> str:
    """Words joined by hyphens, lowercased unless ``cased``; modes as Jekyll's."""
    text = _text(value)
    pattern = _SLUG_MODES.get(_text(mode) or "default")
    if pattern is None:  # "none"
        return text
    slug = pattern.sub("-", text).strip("-")
    return slug if cased is True else slug.lower()


def _date_formatter(fmt: str) -> Callable[[object], object]:
    def format_date(value: object) -> object:
        moment = _as_datetime(value)
        if moment is None:
            return value
        offset = moment.strftime("%z")
        return moment.strftime(fmt.replace("{colon_offset}", f"{offset[:3]}:{offset[3:]}"))

    format_date.__doc__ = f"A date as ``{fmt}``."
    return format_date


def _as_datetime(value: object) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, tz=dt.UTC)
    if isinstance(value, str):
        text = value.strip()
        if text == "now":
            return dt.datetime.now(dt.UTC)
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return None


date_to_xmlschema = _date_formatter("%Y-%m-%dT%H:%M:%S{colon_offset}")
date_to_rfc822 = _date_formatter("%a, %d %b %Y %H:%M:%S %z")
date_to_string = _date_formatter("%d %b %Y")
date_to_long_string = _date_formatter("%d %B %Y")


def raw(value: object) -> object:
    """The value as it is (LiquidJS's marker for output not to escape)."""
    return value


# LiquidJS's filters that read an expression per item, or a property path.

@functools.lru_cache(maxsize=4096)
def _item_expression(environment: Environment, source: str) -> Expression:
    """The expression of a ``where_exp``/``find_exp``/``group_by_exp`` (``"i.size > 3"``)."""
    expression = parse_expression(environment, source)
    with_javascript_operators([expression])
    return expression


def _per_item(value: object, name: object, source: object,
              context: RenderContext) -> tuple[list[Any], list[Any]]:
    """The items of ``value`` and, for each, ``source`` evaluated with the item as ``name``."""
    items = as_list(value)
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
    return grouped(items, [None if is_undefined(r) else r for r in results])


_UNSET = object()


def _liquidjs_array(value: object) -> list[Any]:
    # LiquidJS's toArray: a list as it is, an object as its [key, value] pairs, nil as none.
    if isinstance(value, Mapping):
        return [[key, item] for key, item in value.items()]
    return as_list(value)


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
