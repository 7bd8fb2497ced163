"""Child executions: the runner's side of ``workflow.execute``, ``workflow.executeAsync``
(and ``parallel``, :mod:`engine.run.branches`).

A child is an ordinary execution (its own RQ job, lease, timers, audit trail, recovery
after a dead worker) whose hash holds a :class:`ParentLink` under ``par``. The parent
never holds a worker while it waits:

1. The parent records the step as WAITING with the child's id (committed), then creates
   the child. A worker that dies in between leaves the id recorded and no child: the
   replay creates it then, under the same id, so there is never a second one.
2. The parent parks in WAITING (no lease, not in the running index), in a commit guarded
   by the number of reports in its children hash (``signoff:kids:{id}``): a child that
   reported since the parent looked makes the guard fail, and the parent looks again.
3. A child reaching a terminal state writes its :class:`ChildReport` into that hash in its
   own final commit, with an overdue-timer entry that advances the parent; it then enqueues
   the parent's advance and drops the entry. A worker that dies in between leaves the
   entry: the workers' sweep fires it. A report is never lost and always wakes the parent
   (a wake-up that finds the parent busy is dropped, but then the parent has yet to park,
   and its guarded park sees the report).
4. The parent's replay reads the report: the step completes with the child's outputs, or
   fails with the child's error, and its ``on-failure`` applies.

When a parent is cancelled or times out, the children it waits on are cancelled with it
(:func:`awaited_children`, used by :meth:`engine.run.reviews.Reviews.end`), as Kibana
cancels a child on its parent's cancel; a ``workflow.executeAsync`` child runs on.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from engine.definition.inputs import input_problems
from engine.definition.model import Step, Workflow
from engine.errors import SignoffError, TemplateError
from engine.run import timers
from engine.run.buffered_writes import ExecutionChanged
from engine.run.timers import Scheduler
from engine.run.walk import Frame, Suspend, Walk
from engine.state import audit, keys
from engine.state.execution import (
    ChildReport,
    ExecutionState,
    ExecutionStatus,
    ParentLink,
    StepResult,
    StepStatus,
    canonical,
    iso,
)
from engine.state.store import Change, Store
from engine.steps.composition import MAX_WORKFLOW_DEPTH, async_output

FindWorkflow = Callable[[str], Workflow]


# -- the child's side ---------------------------------------------------------------------------

def report_end(change: Change, state: ExecutionState, status: ExecutionStatus, now: datetime,
               *, outputs: Any = None, error: str | None = None,
               steps: Mapping[str, Any] | None = None) -> timers.Timer | None:
    """Add to ``change`` (the final commit of ``state``, a child its parent waits on) its
    report to the parent and the timer entry that wakes it; returns that timer, for
    :func:`wake_parent` after the commit (None when there is no parent to tell)."""
    link = state.parent
    if link is None or not link.awaited:
        return None
    report = ChildReport(id=state.id, status=status, outputs=outputs, error=error,
                         started_at=state.started_at, finished_at=iso(now),
                         steps=dict(steps or {}))
    change.hset.append((keys.children(link.id), keys.child_field(link.path, link.branch),
                        report.to_json()))
    timer = timers.child_reported_timer(link.id, state.id, now)
    change.zadd.append(timer.entry)
    change.events.append(audit.event(audit.PARENT_TOLD, iso(now) or "", parent=link.id,
                                      step=link.path, branch=link.branch,
                                      status=status.value))
    return timer


def wake_parent(store: Store, scheduler: Scheduler, timer: timers.Timer | None) -> None:
    """Advance the parent now that the child's report is committed; the timer entry
    committed with it is dropped once the job is queued (it stays if this worker dies)."""
    if timer is None:
        return
    scheduler.enqueue_advance(timer.args[0])
    store.forget_timer(timer.member)


def nudge_parent(scheduler: Scheduler, state: ExecutionState) -> None:
    """A parallel branch parked on a timer: let its parent look again, since with
    ``count-waiting: false`` the branch no longer holds its slot. Best effort: a nudge
    that finds the parent busy is dropped, and the slot is then freed at its next look."""
    link = state.parent
    if link is not None and link.branch is not None:
        scheduler.enqueue_advance(link.id)


def awaited_children(state: ExecutionState) -> list[str]:
    """The children ``state`` is waiting on: a workflow.execute step's, a parallel step's
    branches that have not reported."""
    found = []
    for result in state.results.values():
        output = result.output
        if result.status is not StepStatus.WAITING or not isinstance(output, Mapping):
            continue
        if "executionId" in output and "workflowId" in output:
            found.append(str(output["executionId"]))
        elif isinstance(output.get("children"), Mapping):
            done = {*output.get("seen", ()), *output.get("timedOut", {})}
            found.extend(str(child) for index, child in output["children"].items()
                         if index not in done)
    return found


# -- the parent's side --------------------------------------------------------------------------

def start_child(store: Store, scheduler: Scheduler, workflow: Workflow, event: Any,
                link: ParentLink, child_id: str, now: datetime, *,
                requested_by: str | None, variables: Mapping[str, Any] | None = None) -> None:
    """Create the child execution ``child_id`` of ``workflow`` and enqueue its first job,
    as a run is started (its ``settings.timeout`` timer included, but for a parallel
    branch, which its parent's deadlines bound)."""
    state = ExecutionState(id=child_id, workflow=workflow.name, digest=workflow.digest,
                           status=ExecutionStatus.PENDING, started_at=iso(now) or "",
                           event=event, audit_head=audit.GENESIS, requested_by=requested_by,
                           variables=dict(variables or {}), parent=link)
    created = audit.event(
        audit.CREATED, state.started_at, workflow=workflow.name, digest=workflow.digest,
        eventSha256=hashlib.sha256(canonical(event).encode()).hexdigest(),
        requestedBy=requested_by, parentExecution=link.id, parentStep=link.path,
        branch=link.branch)
    new_timers = []
    if workflow.settings.timeout is not None and link.branch is None:
        new_timers.append(timers.run_timeout_timer(child_id, now + workflow.settings.timeout))
    store.create(state, workflow.text, [created],
                 enqueue=lambda pipe: scheduler.enqueue_advance(child_id, pipeline=pipe),
                 timers=[timer.entry for timer in new_timers])
    for timer in new_timers:
        scheduler.schedule(timer)


def park(seg: Walk, reports_seen: int, change: Change | None = None,
         wake_at: datetime | None = None) -> bool:
    """Park the parent in WAITING until a child reports (or ``wake_at``, a deadline), with
    ``change``; False (nothing written) when a report arrived since the parent counted
    ``reports_seen``: look again."""
    state = seg.state
    seg.writes.flush()
    change = change or Change()
    change.status, change.running = ExecutionStatus.WAITING, "remove"
    timer = timers.advance_timer(state.id, wake_at) if wake_at is not None else None
    if timer is not None:
        change.zadd.append(timer.entry)
    for _ in range(100):
        result = seg.r.store.commit(state, change,
                                    guard_status=(ExecutionStatus.RUNNING,),
                                    guard_lease=seg.writes.token,
                                    guard_hlen=(keys.children(state.id), reports_seen))
        if result.ok:
            if timer is not None:
                seg.r.scheduler.schedule(timer)
            raise Suspend
        if result.reason == "hlen":
            return False
        if result.reason != "head":
            raise ExecutionChanged
        state.audit_head = result.head
    raise ExecutionChanged


def run_call(seg: Walk, step: Step, path: str, prefix: str, frame: Frame,
             recorded: StepResult | None) -> None:
    """``workflow.execute`` / ``workflow.executeAsync`` at ``path``, on this pass."""
    if recorded is not None and recorded.status is StepStatus.COMPLETED:
        seg.expose(step, recorded)
        return
    awaited = step.type == "workflow.execute"
    child_id = (recorded.output or {}).get("executionId") if recorded is not None else None
    if child_id is None or not seg.r.store.exists(child_id):
        prepared = _prepare_call(seg, step, frame)
        if isinstance(prepared, str):
            seg.fail_unstarted(step, path, prefix, frame, prepared)
            return
        workflow, inputs = prepared
        now = seg.now()
        if recorded is None or child_id is None:
            child_id = str(uuid.uuid4())
            output = ({"workflowId": workflow.name, "executionId": child_id} if awaited
                      else async_output(workflow.name, child_id, iso(now)))
            recorded = StepResult(status=StepStatus.WAITING if awaited else StepStatus.RUNNING,
                                  started_at=iso(now), output=output)
            seg.record(step, path, recorded, audit.CHILD_STARTED, child=child_id,
                       workflow=workflow.name, awaited=awaited)
        link = ParentLink(id=seg.state.id, path=path, awaited=awaited,
                          depth=seg.state.depth + 1)
        start_child(seg.r.store, seg.r.scheduler, workflow, {"inputs": inputs}, link, child_id,
                    now, requested_by=seg.state.requested_by)
    assert recorded is not None
    if not awaited:
        done = recorded.evolve(status=StepStatus.COMPLETED, finished_at=iso(seg.now()))
        seg.record(step, path, done, audit.STEP_COMPLETED, buffer=True)
        return
    field = keys.child_field(path, None)
    while True:
        reports = seg.r.store.child_reports(seg.state.id)
        report = reports.get(field)
        if report is not None and report.id == child_id:
            break
        park(seg, len(reports))
    _finish_call(seg, step, path, prefix, frame, recorded, report)


def _finish_call(seg: Walk, step: Step, path: str, prefix: str, frame: Frame,
                 waiting: StepResult, report: ChildReport) -> None:
    now = iso(seg.now())
    finished = audit.event(audit.CHILD_FINISHED, now or "", step=path, child=report.id,
                           status=report.status.value)
    if report.status is ExecutionStatus.COMPLETED:
        done = waiting.evolve(status=StepStatus.COMPLETED, output=report.outputs,
                              finished_at=now)
        seg.record(step, path, done, audit.STEP_COMPLETED, unwritten=[finished],
                   child=report.id)
        return
    message = report.error or f"child execution {report.id} ended {report.status.value}"
    failed = waiting.evolve(status=StepStatus.FAILED, error=message, finished_at=now,
                            output=None)
    seg.record(step, path, failed, audit.STEP_FAILED, unwritten=[finished], error=message,
               child=report.id)
    seg.follow_on_failure(step, path, prefix, frame, failed)


def _prepare_call(seg: Walk, step: Step, frame: Frame) -> tuple[Workflow, dict[str, Any]] | str:
    """The workflow a call step names and the inputs it gives, or why it cannot start."""
    if seg.state.depth >= MAX_WORKFLOW_DEPTH:
        return (f"workflow composition depth limit ({MAX_WORKFLOW_DEPTH}) exceeded at step "
                f"{step.name!r} in workflow {seg.workflow.name!r}; refactor to reduce nesting")
    try:
        options = seg.options(step, frame)
    except TemplateError as exc:
        return f"with of step {step.name!r}: {exc}"
    name = str(options.get("workflow-id") or "")
    if name == seg.workflow.name:
        return (f"workflow {name!r} cannot call itself (self-referencing detected at step "
                f"{step.name!r})")
    find = seg.r.find_workflow
    if find is None:
        return f"step {step.name!r}: this worker has no workflow catalog to find {name!r} in"
    try:
        workflow = find(name)
    except SignoffError as exc:
        return f"workflow not found: {name!r} (referenced by step {step.name!r}): {exc}"
    if not workflow.enabled:
        return f"workflow {name!r} is disabled (referenced by step {step.name!r})"
    inputs = options.get("inputs") or {}
    if not isinstance(inputs, Mapping):
        return f"with.inputs of step {step.name!r} must be an object"
    problems = input_problems(workflow, {"inputs": inputs})
    if problems:
        listed = "; ".join(f"{p['input']}: {p['message']}" for p in problems)
        return f"the inputs step {step.name!r} gives workflow {name!r} are invalid: {listed}"
    return workflow, dict(inputs)
