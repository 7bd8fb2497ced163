"""The seam between deciding that something must happen later and RQ making it happen.

:class:`engine.jobs.RQScheduler` implements it with RQ queues and scheduled jobs;
the runner and the engine only see this protocol.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol


class Scheduler(Protocol):
    def enqueue_advance(self, execution_id: str, *, pipeline: Any = None) -> None:
        """Advance the execution as soon as a worker is free."""

    def enqueue(self, function: str, *args: Any) -> None:
        """Run ``function`` (an import path) with ``args`` on the engine's queue, soon:
        plug-ins use it for work that should not wait behind their own queues."""

    def hand_in(self, function: str, *args: Any) -> None:
        """Run ``function`` with ``args`` (JSON) on a worker soon, in one job with the other
        tasks handed in meanwhile (:mod:`engine.inbox`): for small, frequent tasks that are
        safe to run twice, such as a reviewer's click. ``function`` may return a callable,
        run once the task is acknowledged."""

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
