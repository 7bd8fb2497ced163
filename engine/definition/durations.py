"""Durations as Elastic writes them: ``500ms``, ``30s``, ``15m``, ``2h``, ``1d``, ``1w``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

from engine.errors import DurationError

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_UNIT = "|".join(_UNITS)  # "ms" before "m": the regex takes the first that matches
_PART = re.compile(rf"(\d+(?:\.\d+)?)({_UNIT})")
_WHOLE = re.compile(rf"(?:\d+(?:\.\d+)?(?:{_UNIT}))+")
# The same grammar as a JSON Schema ``pattern``, for step options that take a duration.
DURATION_PATTERN = rf"^\s*(\d+(\.\d+)?({_UNIT})\s*)+$"


def parse_duration(text: str | int | float) -> timedelta:
    """Parse ``15m`` into a timedelta; a bare number is seconds."""
    if isinstance(text, bool):
        raise DurationError(f"{text!r} is not a duration; write e.g. 30s, 15m, 2h, 1d")
    if isinstance(text, int | float):
        if text < 0:
            raise DurationError(f"duration {text} is negative")
        return timedelta(seconds=text)
    cleaned = str(text).strip().replace(" ", "")
    if not cleaned or not _WHOLE.fullmatch(cleaned):
        raise DurationError(
            f"{text!r} is not a duration; write a number and a unit: "
            "500ms, 30s, 15m, 2h, 1d or 1w (parts may combine, as in 1h30m)"
        )
    total = timedelta()
    for amount, unit in _PART.findall(cleaned):
        total += float(amount) * _UNITS[unit]
    return total


def format_duration(delta: timedelta) -> str:
    """Shortest exact spelling of ``delta`` in the same units (``timedelta(minutes=90)`` -> ``1h30m``)."""
    ms = int(round(delta.total_seconds() * 1000))
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
