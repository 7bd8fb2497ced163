"""Review rules as pure functions: escalation levels, who may decide, quorum.

A review's levels are its first approvers (``approvers``, ``sla``, ``channel``) followed
by each ``escalation`` entry. Escalating to level n adds that level's approvers to
those before (earlier ones keep the right to decide), unless the step says
``earlier-levels-keep-rights: false``. After the last level's SLA the
step's ``on-timeout`` applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


DEFAULT_TARGET = "default"  # an `escalation` entry added for SIGNOFF_ESCALATE_TO
CHOSEN_TARGET = "chosen"  # one added for the person a reviewer chose when escalating


def beyond_levels(options: Mapping[str, Any], escalate_to: Sequence[str],
                  to: str | None) -> dict[str, Any] | None:
    """The ``escalation`` entry a person's Escalate adds past the step's last level: the
    workspace's default target (``escalate_to``) once, else the person they chose (``to``).
    None when there is nowhere further (the default target was reached already) or no one
    was named with no default target."""
    reached = any(isinstance(e, Mapping) and e.get("added") == DEFAULT_TARGET
                  for e in options.get("escalation") or ())
    if escalate_to:
        if reached:
            return None
        return {"approvers": list(escalate_to), "added": DEFAULT_TARGET}
    if to:
        return {"approvers": [to], "added": CHOSEN_TARGET}
    return None


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
