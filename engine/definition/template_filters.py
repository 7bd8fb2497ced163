"""The template filters Elastic Workflows has and python-liquid lacks.

Kibana renders with LiquidJS and registers three filters of its own: ``json_parse``,
``entries`` and ``pick``. LiquidJS's built-ins that python-liquid does not ship are
added here with LiquidJS's meaning: the array filters return a new list and never
change the one they are given, and a missing value counts as an empty list.

Filters are plain functions ``(value, *args) -> value`` registered by
engine/definition/templates.py, the module python-liquid otherwise enters through.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from liquid import Environment, Undefined, is_undefined
from liquid.builtin.filters.misc import date as liquid_date
from liquid.filter import with_environment

from engine.definition import jsvalue

__all__ = ["FILTERS", "as_list", "grouped"]


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


def _number(value: object) -> float:
    # LiquidJS's toNumber: JavaScript's unary plus, with NaN (and -0) as 0.
    if type(value) is float:
        number = value
    elif type(value) is int and -2**53 <= value <= 2**53:  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    else:
        number = jsvalue.to_number(jsvalue.UNDEFINED if is_undefined(value) else value)
    return number if number == number and number != 0 else 0.0


def _whole(value: float) -> int | float:
    """A JavaScript number as the value a run holds: an int when it is a whole number."""
    if type(value) is int:  # math.floor and math.ceil give ints
        return value
    return int(value) if value.is_integer() and -2**53 <= value <= 2**53 else value


def plus(value: object, other: object = 0) -> int | float:
    """LiquidJS's ``plus``: JavaScript's ``+`` on the operands as numbers."""
    return _whole(_number(value) + _number(other))


def minus(value: object, other: object = 0) -> int | float:
    """LiquidJS's ``minus``."""
    return _whole(_number(value) - _number(other))


def times(value: object, other: object = 0) -> int | float:
    """LiquidJS's ``times``."""
    return _whole(_number(value) * _number(other))


def divided_by(value: object, divisor: object = 0, integer: object = False) -> int | float:
    """LiquidJS's ``divided_by``: true division, rounded down with a truthy third argument;
    by 0 it is Infinity or NaN, as in JavaScript."""
    if integer is False:
        dividend, by = _number(value), _number(divisor)
        return _whole(dividend / by if by else _divide(dividend, by))
    return _whole(_divide(_number(value), _number(divisor), _number(integer)))


def modulo(value: object, divisor: object = 0) -> int | float:
    """LiquidJS's ``modulo``: the remainder with the divisor's sign."""
    return _whole(_modulo(_number(value), _number(divisor)))


def round_(value: object, digits: object = 0) -> int | float:
    """LiquidJS's ``round``: half up, at ``digits`` decimals."""
    number = _number(value)
    if digits == 0 and abs(number) <= 2**53 - 1:  # Math.round, on the magnitude
        whole = math.floor(abs(number))
        rounded = whole + 1 if abs(number) - whole >= 0.5 else whole
        return -rounded if number < 0 else rounded
    return _whole(_round(number, _number(digits)))


def abs_(value: object) -> int | float:
    """LiquidJS's ``abs``."""
    return _whole(abs(_number(value)))


def ceil(value: object) -> int | float:
    """LiquidJS's ``ceil``."""
    return _whole(_ceil(_number(value)))


def floor(value: object) -> int | float:
    """LiquidJS's ``floor``."""
    return _whole(_floor(_number(value)))


def at_least(value: object, *others: object) -> int | float:
    """LiquidJS's ``at_least``: the largest of the operands."""
    return _whole(max((_number(value), *map(_number, others))))


def at_most(value: object, *others: object) -> int | float:
    """LiquidJS's ``at_most``: the smallest of the operands."""
    return _whole(min((_number(value), *map(_number, others))))


def _divide(dividend: float, divisor: float, integer: float = 0) -> float:
    if divisor == 0:
        return math.nan if dividend == 0 else math.copysign(math.inf, dividend) * \
            math.copysign(1, divisor)
    return math.floor(dividend / divisor) if integer else dividend / divisor


def _modulo(value: float, divisor: float) -> float:
    if divisor == 0 or math.isinf(value):
        return math.nan
    return math.fmod(math.fmod(value, divisor) + divisor, divisor)  # JavaScript's %


def _shift(number: float, exponent: float) -> float:
    # LiquidJS moves the decimal point in the number's text, not by multiplying: repr()
    # has the digits String() has, so the number read back is the same.
    if not exponent:
        return number
    mantissa, _, power = repr(float(number)).partition("e")
    try:
        return float(f"{mantissa}e{int(power or 0) + int(exponent)}")
    except ValueError:
        return math.nan  # Infinity


def _round(value: float, digits: float = 0) -> float:
    scaled = _shift(abs(value), digits)
    if not scaled <= 2**53 - 1:
        return value
    whole = math.floor(scaled)
    rounded = _shift(whole + 1 if scaled - whole >= 0.5 else whole, -digits)  # Math.round
    return -rounded if value < 0 else rounded


def _ceil(value: float) -> float:
    return value if math.isinf(value) else math.ceil(value)


def _floor(value: float) -> float:
    return value if math.isinf(value) else math.floor(value)


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


# Kibana's own filters.

def json_parse(value: object) -> object:
    """A JSON string as the value it holds; anything else, or invalid JSON, unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def entries(value: object) -> object:
    """An object as a list of ``{"key": k, "value": v}``; anything else unchanged."""
    if isinstance(value, Mapping):
        return [{"key": key, "value": item} for key, item in value.items()]
    return value


_INDEX = re.compile(r"\d+")
_MISSING = object()


def pick(value: object, *paths: object) -> object:
    """Only the given dotted paths of an object, nested as they were.

    ``pick: "a", "b.c"`` or ``pick: list_of_paths``. A digit segment indexes a list
    (``users.0.name`` keeps ``users`` a list); absent paths are skipped; a value that
    is not an object comes back unchanged.
    """
    if not isinstance(value, Mapping):
        return value
    if len(paths) == 1 and isinstance(paths[0], list | tuple):
        paths = tuple(paths[0])
    picked: dict[str, Any] = {}
    for path in paths:
        if isinstance(path, str) and path:
            _copy_path(value, picked, path.split("."))
    return picked


def _copy_path(source: Mapping[str, Any], target: dict[str, Any], segments: list[str]) -> None:
    found: Any = source
    for segment in segments:
        if isinstance(found, Mapping):
            found = found.get(segment, _MISSING)
        elif isinstance(found, list) and _INDEX.fullmatch(segment) and int(segment) < len(found):
            found = found[int(segment)]
        else:
            return
        if found is _MISSING:
            return
    container: Any = target
    for segment, following in zip(segments, segments[1:], strict=False):
        wants_list = bool(_INDEX.fullmatch(following))
        child = _child(container, segment)
        if not isinstance(child, list if wants_list else dict):
            child = [] if wants_list else {}
            _set_child(container, segment, child)
        container = child
    _set_child(container, segments[-1], json.loads(json.dumps(found, default=str)))


def _child(container: Any, segment: str) -> Any:
    if isinstance(container, list):
        index = int(segment)
        return container[index] if index < len(container) else None
    return container.get(segment)


def _set_child(container: Any, segment: str, value: Any) -> None:
    if isinstance(container, list):
        index = int(segment)
        container.extend([None] * (index + 1 - len(container)))
        container[index] = value
    else:
        container[segment] = value


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


def raw(value: object) -> object:
    """The value as it is (LiquidJS's marker for output not to escape)."""
    return value


FILTERS: dict[str, Callable[..., Any]] = {
    "default": default,
    "date": date,
    "first": first,
    "last": last,
    # LiquidJS's arithmetic is JavaScript's: `10 | divided_by: 3` is 3.3333333333333335,
    # `0.1 | plus: 0.2` is 0.30000000000000004, `2.5 | round` is 3, and text is a number.
    "plus": plus,
    "minus": minus,
    "times": times,
    "divided_by": divided_by,
    "modulo": modulo,
    "round": round_,
    "abs": abs_,
    "ceil": ceil,
    "floor": floor,
    "at_least": at_least,
    "at_most": at_most,
    "json_parse": json_parse,
    "entries": entries,
    "pick": pick,
    "push": push,
    "pop": pop,
    "shift": shift,
    "unshift": unshift,
    "group_by": group_by,
    "array_to_sentence_string": array_to_sentence_string,
    "to_integer": to_integer,
    "normalize_whitespace": normalize_whitespace,
    "number_of_words": number_of_words,
    "xml_escape": xml_escape,
    "cgi_escape": cgi_escape,
    "uri_escape": uri_escape,
    "slugify": slugify,
    "date_to_xmlschema": _date_formatter("%Y-%m-%dT%H:%M:%S{colon_offset}"),
    "date_to_rfc822": _date_formatter("%a, %d %b %Y %H:%M:%S %z"),
    "date_to_string": _date_formatter("%d %b %Y"),
    "date_to_long_string": _date_formatter("%d %B %Y"),
    "raw": raw,
}
