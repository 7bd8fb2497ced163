"""The seam between deciding that something must happen later and RQ making it happen.

:class:`engine.worker.scheduler.RQScheduler` implements it with RQ queues and scheduled jobs;
the runner and the engine only see this protocol.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from engine.state import keys


@dataclass(frozen=True)
class Timer:
    """A timer job (by its name in :mod:`engine.worker.jobs`, with string arguments) due at ``when``.

    A state change that needs a timer (a review starting to wait with an SLA, a ``wait``
    step) commits the timer's entry in the overdue-timer index together with itself
    (:attr:`entry`, a ``Change.zadd``); the scheduler is asked afterwards. A worker that
    dies in between leaves the entry, and the workers' sweep fires it when overdue: the
    timer is late, never lost.
    """

    job: str
    args: tuple[str, ...]
    when: datetime

    @property
    def member(self) -> str:
        return json.dumps([self.job, *self.args], separators=(",", ":"))

    @property
    def entry(self) -> tuple[str, float, str]:
        return keys.INDEX_TIMERS, self.when.timestamp(), self.member


def advance_timer(execution_id: str, when: datetime) -> Timer:
    return Timer("advance_timer", (execution_id,), when)


def child_reported_timer(parent_id: str, child_id: str, when: datetime) -> Timer:
    """Advance a parent whose child reported its end (engine.run.children): one per child,
    so it never stands for, or is dropped with, the parent's own timers."""
    return Timer("child_reported", (parent_id, child_id), when)


def run_timeout_timer(execution_id: str, when: datetime) -> Timer:
    return Timer("expire_execution", (execution_id,), when)


def step_timeout_timer(execution_id: str, path: str, when: datetime) -> Timer:
    return Timer("step_timed_out", (execution_id, path), when)


def review_timer(execution_id: str, path: str, level: int, kind: str, when: datetime) -> Timer:
    return Timer("review_timer", (execution_id, path, str(level), kind), when)


def start_workflow_timer(workflow: str, when: datetime) -> Timer:
    return Timer("start_scheduled", (workflow, when.isoformat()), when)


class Scheduler(Protocol):
    def enqueue_advance(self, execution_id: str, *, pipeline: Any = None) -> None:
        """Advance the execution as soon as a worker is free."""

    def enqueue(self, function: str, *args: Any) -> None:
        """Run ``function`` (an import path) with ``args`` on the engine's queue, soon:
        plug-ins use it for work that should not wait behind their own queues."""

    def hand_in(self, function: str, *args: Any, on_failure: str = "",
                first: bool = False, reads: tuple[tuple[str, str], ...] = ()) -> None:
        """Run ``function`` with ``args`` (JSON) on a worker soon, in one job with the other
        tasks handed in meanwhile (:mod:`engine.state.inbox`): for small, frequent tasks that are
        safe to run twice, such as a reviewer's click. Should it fail, it is tried again
        with backoff for ten minutes, then ``on_failure`` (an import path, if any) is
        called with the error and ``args``. ``first``: before the run segments waiting (a
        person waits on it: a reviewer's decision). ``reads``: what it reads first, read
        as it is taken (:attr:`engine.state.inbox.Task.reads`)."""

    def enqueue_to(self, queue: str, function: str, *args: Any, retry: Sequence[int] = (),
                   timeout: int | None = None, description: str | None = None) -> None:
        """Run ``function`` (an import path) with ``args`` on a worker serving ``queue``
        (a plug-in's own queue, such as the bot's ``slack``); should it fail, try again
        after each of ``retry``'s intervals (seconds)."""

    def hand_in_to(self, queue: str, function: str, *args: Any,
                   retry: Sequence[int] = (), on_failure: str = "") -> None:
        """As :meth:`hand_in`, through ``queue``'s inbox (drained by that queue's workers);
        ``retry``: the seconds before each further try, when not the default backoff."""

    def schedule(self, timer: Timer) -> None:
        """Run ``timer`` at its time (no earlier; late only if the workers are)."""

    def advance_at(self, execution_id: str, when: datetime) -> None:
        """Advance the execution at ``when`` (a `wait` step or a retry delay)."""

    def run_timeout_at(self, execution_id: str, when: datetime) -> None:
        """Time the run out at ``when`` unless it has finished (``settings.timeout``)."""

    def step_timeout_at(self, execution_id: str, path: str, when: datetime) -> None:
        """Apply the human step's ``on-timeout`` at ``when`` unless it was decided."""

    def review_timer_at(self, execution_id: str, path: str, level: int, kind: str,
                        when: datetime) -> None:
        """At ``when``, act on a review's SLA (``kind="sla"``) or remind (``"remind"``),
        unless it was decided or moved to another level by then."""

    def start_workflow_at(self, workflow: str, when: datetime) -> None:
        """Start a run of ``workflow`` at ``when`` (a scheduled trigger)."""
