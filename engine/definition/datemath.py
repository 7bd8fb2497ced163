"""Elasticsearch date math as Kibana resolves it in a KQL condition (``@kbn/datemath``).

``now``, ``now-1h``, ``now/d``, ``now-7d/d`` and an anchored ``2025-01-01T00:00:00Z||+1M``
resolve to an instant; Kibana's workflow engine then compares its ISO text
(``2025-01-15T12:00:00.000Z``) with the field's string. A unit is ``y``, ``M``, ``w``,
``d``, ``h``, ``m``, ``s`` or ``ms``; ``+N``/``-N`` move by N units (months and years as
moment.js does, keeping the day of the month when it exists and else the month's last
day), ``/unit`` rounds down to the start of the unit (a week starts on Sunday, moment's
default locale). Anything else makes the text no date at all, and the condition compares
it as it is written (``now-invalidunit``).

Kibana rounds in its server's time zone; here rounding is in UTC, which is what a Kibana
server running in UTC (Elastic Cloud's) does. An anchor is read as ISO 8601 with a
calendar (``2025-01-15``, ``20250115``, ``2025-01``) or ordinal (``2025-015``) date and an
optional time and offset, as moment.js reads it; moment also accepts week dates, RFC 2822
and, failing all those, whatever JavaScript's ``Date`` makes of the text, which here are
no date. Dates before year 1 or after 9999 are no date either.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re

__all__ = ["resolve"]

_UNITS = ("y", "M", "w", "d", "h", "m", "s", "ms")
# What JavaScript's isNaN() is false for, one character at a time: digits, white space, "".
_NUMERIC_CHARACTER = set("0123456789\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004"
                         "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
                         "\ufeff")
_OFFSET = r"(?P<offset>[+-]\d\d(?::?\d\d)?|\s*Z)?"
# moment.js's two ISO 8601 shapes: a date and a time both with separators, or neither.
_ISO = (
    re.compile(r"\s*(?P<year>\d{4})-(?:(?P<month>\d\d)(?:-(?P<day>\d\d))?|(?P<ordinal>\d{3}))"
               r"(?:[T ](?P<time>\d\d(?::\d\d(?::\d\d(?:[.,]\d+)?)?)?)" + _OFFSET + r")?",
               re.ASCII),
    re.compile(r"\s*(?P<year>\d{4})(?:(?P<month>\d\d)(?P<day>\d\d)?|(?P<ordinal>\d{3}))?"
               r"(?:[T ](?P<time>\d\d(?:\d\d(?:\d\d(?:[.,]\d+)?)?)?)" + _OFFSET + r")?",
               re.ASCII),
)


def resolve(text: str, now: dt.datetime) -> str | None:
    """The ISO text (UTC, milliseconds) of date math ``text`` at ``now``, or None when
    Kibana would not read it as a date."""
    if text.startswith("now"):
        moment: dt.datetime | None = now.astimezone(dt.UTC)
        math = text[3:]
    else:
        anchor, _, math = text.partition("||")
        moment = _iso(anchor)
    if moment is None:
        return None
    if math:
        moment = _apply(math, moment)
        if moment is None:
            return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _apply(math: str, moment: dt.datetime) -> dt.datetime | None:
    # A line-by-line reading of datemath's parseDateMath, quirks included.
    length, i = len(math), 0
    while i < length:
        sign = math[i]
        i += 1
        if sign not in "/+-":
            return None
        following = math[i] if i < length else ""
        if following not in _NUMERIC_CHARACTER:
            amount = 1
        elif length == 2:
            return None  # datemath takes the digit for the unit, which is none
        else:
            start = i
            while (math[i] if i < length else "") in _NUMERIC_CHARACTER:
                i += 1
                if i >= length:
                    return None
            digits = re.match(r"[\s\ufeff]*([0-9]+)", math[start:i])
            if digits is None:
                return None  # parseInt gives NaN
            amount = int(digits.group(1))
        if sign == "/" and amount != 1:
            return None
        unit_start = i
        i += 1
        while i < length and math[i].isascii() and math[i].isalpha():
            i += 1
        unit = math[unit_start:i]
        if unit not in _UNITS:
            return None
        try:
            moment = (_start_of(moment, unit) if sign == "/" else
                      _add(moment, amount if sign == "+" else -amount, unit))
        except (OverflowError, ValueError):
            return None
    return moment


def _add(moment: dt.datetime, amount: int, unit: str) -> dt.datetime:
    if unit in ("y", "M"):
        months = moment.month - 1 + amount * (12 if unit == "y" else 1)
        year, month = moment.year + months // 12, months % 12 + 1
        day = min(moment.day, calendar.monthrange(year, month)[1])
        return moment.replace(year=year, month=month, day=day)
    step = {"w": dt.timedelta(weeks=1), "d": dt.timedelta(days=1), "h": dt.timedelta(hours=1),
            "m": dt.timedelta(minutes=1), "s": dt.timedelta(seconds=1),
            "ms": dt.timedelta(milliseconds=1)}[unit]
    return moment + step * amount


def _start_of(moment: dt.datetime, unit: str) -> dt.datetime:
    if unit == "ms":
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    moment = moment.replace(microsecond=0)
    if unit == "s":
        return moment
    moment = moment.replace(second=0)
    if unit == "m":
        return moment
    moment = moment.replace(minute=0)
    if unit == "h":
        return moment
    moment = moment.replace(hour=0)
    if unit == "w":
        return moment - dt.timedelta(days=(moment.weekday() + 1) % 7)
    if unit == "M":
        return moment.replace(day=1)
    if unit == "y":
        return moment.replace(month=1, day=1)
    return moment


def _iso(text: str) -> dt.datetime | None:
    match = _ISO[0].fullmatch(text) or _ISO[1].fullmatch(text)
    if match is None:
        return None
    parts = match.groupdict()
    year = int(parts["year"])
    month_text, day_text, ordinal, time = (parts["month"], parts["day"], parts["ordinal"],
                                           parts["time"])
    # moment reads a year alone, or a year and a month, only without a time.
    if time is not None and ordinal is None and day_text is None:
        return None
    try:
        if ordinal is not None:
            day_of_year = int(ordinal)
            if not 1 <= day_of_year <= (366 if calendar.isleap(year) else 365):
                return None
            date = dt.date(year, 1, 1) + dt.timedelta(days=day_of_year - 1)
        else:
            date = dt.date(year, int(month_text or 1), int(day_text or 1))
        clock = _clock(time)
        if clock is None:
            return None
        hour, minute, second, millisecond = clock
        extra = dt.timedelta(days=1) if hour == 24 else dt.timedelta()
        moment = dt.datetime(date.year, date.month, date.day, hour % 24, minute, second,
                             millisecond * 1000, tzinfo=dt.UTC) + extra
        return moment - _offset(parts["offset"])
    except (ValueError, OverflowError):
        return None


def _clock(time: str | None) -> tuple[int, int, int, int] | None:
    if time is None:
        return 0, 0, 0, 0
    whole, _, fraction = time.replace(",", ".").partition(".")
    digits = whole.replace(":", "")
    hour, minute, second = int(digits[0:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    millisecond = int(float("0." + fraction) * 1000) if fraction else 0
    if hour == 24 and (minute or second or millisecond):
        return None
    if hour > 24 or minute > 59 or second > 59:
        return None
    return hour, minute, second, millisecond


def _offset(offset: str | None) -> dt.timedelta:
    if offset is None or offset.strip() == "Z":
        return dt.timedelta()
    sign = -1 if offset[0] == "-" else 1
    digits = offset[1:].replace(":", "")
    return sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
