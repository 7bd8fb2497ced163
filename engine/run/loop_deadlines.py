"""The deadlines of the loop iterations a walk is in, and what they cut short.

A loop's ``iteration-timeout`` gives each iteration a deadline from its start, its
``timeout`` the whole loop one from the loop's start (:mod:`engine.run.flow_steps` sets
them as iterations begin). They are checked at every step boundary inside: a step that
would run, wait or wake after one fails in its place (:mod:`engine.run.runner`), and
whatever waits inside a timed iteration (a timer, a retry's delay, a review, an action's
own time-out) is cut to end by the nearest one. Pure: the walk holds the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from engine.run import timers
from engine.run.next_step import ReviewStart
from engine.state.execution import iso, parse_iso


@dataclass(frozen=True)
class Deadline:
    """When the iteration (or the whole loop, ``loop`` its path) a step runs in times out."""

    at: datetime
    message: str
    loop: str | None = None


def expired(deadlines: Sequence[Deadline], now: datetime) -> Deadline | None:
    """The soonest of ``deadlines`` if it has passed at ``now``."""
    if not deadlines:
        return None
    first = min(deadlines, key=lambda deadline: deadline.at)
    return first if now >= first.at else None


def within(deadlines: Sequence[Deadline], wake: datetime) -> datetime:
    """``wake``, or the soonest deadline when that is sooner: a timer or a retry's delay
    inside a timed iteration wakes the run then, to time the iteration out."""
    if not deadlines:
        return wake
    return min(wake, *(deadline.at for deadline in deadlines))


def review_within(deadlines: Sequence[Deadline], review: ReviewStart, execution_id: str,
                  path: str) -> ReviewStart:
    """A review asked inside a timed iteration (or loop) is due at its deadline, if that
    is sooner than its own: a timer then applies the step's ``on-timeout``."""
    if not deadlines:
        return review
    deadline = min(deadline.at for deadline in deadlines)
    due = parse_iso(review.waiting.due_at)
    if due is not None and due <= deadline:
        return review
    return replace(review, waiting=replace(review.waiting, due_at=iso(deadline)),
                   timers=(*review.timers, timers.step_timeout_timer(execution_id, path,
                                                                     deadline)))


def action_timeout(deadlines: Sequence[Deadline], timeout: timedelta | None,
                   now: datetime) -> float | None:
    """An action's ``timeout`` (seconds), or the time left to its iteration's deadline if
    shorter; None when it has neither."""
    limits = [timeout] if timeout is not None else []
    if deadlines:
        limits.append(within(deadlines, now + timedelta(days=366)) - now)
    return max(0.001, min(limits).total_seconds()) if limits else None
