"""Review rules as pure functions: escalation levels, who may decide, quorum.

A review's levels are its first approvers (``approvers``, ``sla``, ``channel``) followed
by each ``escalation`` entry. Escalating to level n adds that level's approvers to
those before (earlier ones keep the right to decide), unless the step says
``earlier-levels-keep-rights: false``. After the last level's SLA the
step's ``on-timeout`` applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.definition.durations import parse_duration


@dataclass(frozen=True)
class Level:
    approvers: tuple[str, ...]
    sla: timedelta | None
    channel: str | None = None


def levels(options: Mapping[str, Any]) -> list[Level]:
    """Level 0 (the step's own approvers) then one per ``escalation`` entry."""
    found = [Level(tuple(options.get("approvers") or ()), _duration(options.get("sla")),
                   options.get("channel"))]
    for entry in options.get("escalation") or ():
        found.append(Level(tuple(entry.get("approvers") or ()), _duration(entry.get("sla")),
                           entry.get("channel")))
    return found


def merged(current: Iterable[str], added: Iterable[str]) -> tuple[str, ...]:
    """``current`` then the new names of ``added``, without repeats, in order."""
    seen = list(dict.fromkeys(current))
    for name in added:
        if name not in seen:
            seen.append(name)
    return tuple(seen)


def remind_time(options: Mapping[str, Any], level_start: datetime,
                level_due: datetime | None) -> datetime | None:
    """When to remind the current approvers: ``remind`` after the level starts, before its SLA."""
    remind = _duration(options.get("remind"))
    if remind is None:
        return None
    at = level_start + remind
    return at if level_due is None or at < level_due else None


def earlier_levels_keep_rights(options: Mapping[str, Any]) -> bool:
    """``earlier-levels-keep-rights`` (default true): escalating adds approvers; false
    replaces them with the new level's."""
    return options.get("earlier-levels-keep-rights") is not False


def approvals_required(options: Mapping[str, Any]) -> int:
    return max(1, int(options.get("approvals-required") or 1))


def _duration(value: Any) -> timedelta | None:
    return parse_duration(value) if value not in (None, "") else None
