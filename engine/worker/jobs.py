"""The RQ job bodies: ids in, nothing else. RQ stores each job by this module's import
path (``engine.worker.jobs.<name>``), so these names are part of what is in Redis.

Timer jobs first take themselves off the overdue-timer index (see
:class:`engine.run.timers.Timer`); each re-checks its deadline, so one that runs early
or twice does nothing.
"""

from __future__ import annotations

from datetime import datetime

from engine.run.timers import Timer
from engine.worker.runtime import runtime
from engine.worker.scheduled_runs import start_scheduled_run
from engine.worker.worker import drain


def advance_execution(execution_id: str) -> str | None:
    status = runtime().runner.advance(execution_id)
    return status.value if status else None


def drain_inbox(queue_name: str) -> int:
    """Run the tasks in ``queue_name``'s inbox until it is empty, or until a queue this
    worker serves first has a job waiting; see engine.state.inbox."""
    return drain(queue_name)


# -- timers ------------------------------------------------------------------------------------

def advance_timer(execution_id: str) -> str | None:
    _timer_ran("advance_timer", execution_id)
    return advance_execution(execution_id)


def child_reported(parent_id: str, child_id: str) -> str | None:
    """A child's report is in; its parent reads it (engine.run.children)."""
    _timer_ran("child_reported", parent_id, child_id)
    return advance_execution(parent_id)


def expire_execution(execution_id: str) -> bool:
    _timer_ran("expire_execution", execution_id)
    return runtime().engine.expire(execution_id)


def step_timed_out(execution_id: str, path: str) -> bool:
    _timer_ran("step_timed_out", execution_id, path)
    return runtime().engine.step_timed_out(execution_id, path)


def review_timer(execution_id: str, path: str, level: str, kind: str) -> bool:
    _timer_ran("review_timer", execution_id, path, level, kind)
    return runtime().engine.review_timer(execution_id, path, int(level), kind)


def start_scheduled(workflow: str, due: str) -> str | None:
    _timer_ran("start_scheduled", workflow, due)
    rt = runtime()
    return start_scheduled_run(rt.engine, rt.catalog, workflow, datetime.fromisoformat(due))


def _timer_ran(name: str, *args: str) -> None:
    runtime().store.forget_timer(Timer(name, args, _EPOCH).member)


_EPOCH = datetime.fromtimestamp(0).astimezone()
