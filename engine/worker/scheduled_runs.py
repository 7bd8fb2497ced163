"""Starting the runs of scheduled triggers (``type: scheduled``), once per due time.

When a trigger is next due is :mod:`engine.definition.triggers`. Workers share one
schedule per trigger in Redis (``signoff:sched:{name}:{n}``: the next due time and the
definition it was computed from). Every sweep, each worker looks
for schedules due before its next sweep; the one that moves the schedule forward
(a compare-and-set) enqueues the run for the exact due time, so a schedule fires
once however many workers there are, and none is lost while all are down (a
missed time fires once when a worker returns, then the schedule moves on).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from engine.definition.model import Trigger, Workflow
from engine.definition.triggers import next_due, scheduled_triggers
from engine.errors import WorkflowInputsInvalid, WorkflowInvalid, WorkflowNotFound
from engine.notify import Actor
from engine.state import keys
from engine.state.execution import iso, utcnow

if TYPE_CHECKING:
    from engine.definition.loader import WorkflowCatalog
    from engine.run.engine import Engine
    from engine.run.timers import Scheduler
    from engine.state.store import Store

log = logging.getLogger(__name__)
SCHEDULER = Actor(id="system:scheduler", name="system:scheduler", source="system")


def schedule_key(workflow: Workflow, index: int) -> str:
    return keys.schedule(workflow.name, index)


def encode(due: datetime, digest: str) -> str:
    return json.dumps({"due": due.timestamp(), "d": digest})


def decode(raw: str | bytes | None) -> tuple[datetime | None, str | None]:
    if raw is None:
        return None, None
    data = json.loads(raw)
    return datetime.fromtimestamp(float(data["due"]), UTC), str(data["d"])


class ScheduleKeeper:
    """Moves every scheduled trigger forward exactly once per due time, across all workers."""

    def __init__(self, store: Store, scheduler: Scheduler, catalog: WorkflowCatalog,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.scheduler = scheduler
        self.catalog = catalog
        self.clock = clock

    def tick(self, horizon: timedelta) -> list[tuple[str, datetime]]:
        """Enqueue runs due before now + ``horizon``; returns (workflow, due) for each."""
        now = self.clock()
        started = []
        for name in self.catalog.names():
            try:
                workflow = self.catalog.get(name)
            except (WorkflowInvalid, WorkflowNotFound):
                continue  # `signoff validate` reports it; a broken file schedules nothing
            if not workflow.enabled:
                continue
            for index, trigger in scheduled_triggers(workflow):
                fired = self._advance(workflow, index, trigger, now, horizon)
                if fired is not None:
                    started.append((workflow.name, fired))
        return started

    def _advance(self, workflow: Workflow, index: int, trigger: Trigger, now: datetime,
                 horizon: timedelta) -> datetime | None:
        key = schedule_key(workflow, index)
        raw = self.store.get_value(key)
        due, digest = decode(raw)
        if due is None or digest != workflow.digest:
            # First sight of this schedule, or its definition changed: start from now.
            self.store.compare_and_set(key, raw, encode(next_due(trigger, now), workflow.digest))
            return None
        if due > now + horizon:
            return None
        # Times missed while no worker ran collapse into this one run.
        following = next_due(trigger, max(due, now))
        if not self.store.compare_and_set(key, raw, encode(following, workflow.digest)):
            return None  # another worker took this due time
        self.scheduler.start_workflow_at(workflow.name, due)
        return due


def start_scheduled_run(engine: Engine, catalog: WorkflowCatalog, name: str,
                        due: datetime) -> str | None:
    """Start one scheduled run of ``name`` (the RQ job the keeper enqueued)."""
    try:
        workflow = catalog.get(name)
    except (WorkflowInvalid, WorkflowNotFound) as exc:
        log.error("scheduled run of %s not started: %s", name, exc)
        return None
    if not workflow.enabled:
        return None
    event = {"trigger": {"type": "scheduled", "scheduledAt": iso(due)}}
    try:
        return engine.run(workflow, event, actor=SCHEDULER)
    except WorkflowInputsInvalid as exc:  # a required input with no default: never startable
        log.error("scheduled run of %s not started: %s", name, exc)
        return None
