"""The runner's side of ``parallel``: each branch a child execution, the parent parked.

A branch is a child execution (:mod:`engine.run.children`) of the parent's own
definition, whose :class:`ParentLink` names the branch and carries the parent's scope as
it was when the branch started (the outputs of the steps before, ``variables``, and
``foreach`` for a fan-out). It runs only that branch's steps, on whichever worker takes
its job, so branches really run at the same time; its report to the parent carries its
output and its steps' entries (read as ``steps.<name>`` after a static parallel step).

The parallel step's own result is WAITING while branches run; its output then holds
what the step decided: the branches' keys, when each started and as which child, which
timed out, which reports it has read. Each pass reads the reports, asks
:func:`engine.steps.parallel.next_moves` what to do, commits the branches it starts
before creating them (a replay finds a started branch without its child and creates
it, under the same id), and parks until the next report or deadline. A branch that
times out is marked so, no longer waited for, and its execution is ended TIMED_OUT
(through the runner's ``end_execution``); a step it is running then finishes first, as
Elastic's cancellation is best effort too.

Costs: a branch's link holds a copy of the parent's step outputs as they were (one per
branch: a fan-out of 100 over large outputs stores them 100 times, for the branches' own
lifetime, like the rest of an execution); each pass of the parent reads its children
hash once (one field per branch that ended) and checks that its running branches exist
(at most ``concurrency.max`` of them).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from engine.definition.model import Step
from engine.definition.templates import render_value
from engine.errors import DurationError, TemplateError
from engine.run import children
from engine.run.walk import Frame, Walk
from engine.state import audit, keys
from engine.state.execution import (
    ChildReport,
    ExecutionStatus,
    ParentLink,
    StepResult,
    StepStatus,
    iso,
    parse_iso,
)
from engine.state.store import Change
from engine.steps import parallel
from engine.steps.parallel import Finished


def run_parallel(seg: Walk, step: Step, path: str, prefix: str, frame: Frame,
                 recorded: StepResult | None) -> None:
    """The ``parallel`` step at ``path``, on this pass."""
    if recorded is not None and recorded.status is StepStatus.COMPLETED:
        _expose_branch_steps(seg, step, path)
        seg.expose(step, recorded)
        return
    try:
        settings = parallel.settings_of(render_value(dict(step.params), seg.scope_for(frame)),
                                        step.timeout)
    except (TemplateError, DurationError) as exc:
        seg.fail_unstarted(step, path, prefix, frame, f"step {step.name!r}: {exc}")
        return
    if recorded is None:
        plan = _plan(seg, step, frame)
        if isinstance(plan, str):
            seg.fail_unstarted(step, path, prefix, frame, plan)
            return
        recorded = StepResult(status=StepStatus.WAITING, started_at=iso(seg.now()), output=plan)
        if not plan["keys"]:  # an empty fan-out completes at once
            done = recorded.evolve(status=StepStatus.COMPLETED, finished_at=recorded.started_at,
                                   output=parallel.aggregate([], None, {}, {}))
            seg.record(step, path, done, audit.STEP_COMPLETED, buffer=True)
            return
        seg.record(step, path, recorded, audit.STEP_STARTED, buffer=True,
                   branches=len(plan["keys"]))
    while True:
        before = recorded
        state = _copy(recorded.output)
        reports = seg.r.store.child_reports(seg.state.id)
        mine = _reports_for(path, state, reports)
        events = [_event(seg, audit.CHILD_FINISHED, step=path, branch=index,
                         child=report.id, status=report.status.value)
                  for index, report in sorted(mine.items()) if str(index) not in state["seen"]]
        state["seen"] = sorted({*state["seen"], *(str(i) for i in mine)}, key=int)
        started = {int(i): parse_iso(t) for i, t in state["started"].items()}
        # A branch marked timed out stays so, whatever its child reports later.
        finished = {index: _finished(report) for index, report in mine.items()}
        finished.update({int(i): Finished("timed_out", error="branch timed out",
                                          finished_at=parse_iso(t))
                         for i, t in state["timedOut"].items()})
        now = seg.now()
        moves = parallel.next_moves(len(state["keys"]), settings,
                                    {i: t for i, t in started.items() if t is not None},
                                    finished, parse_iso(state["t0"]) or now, now,
                                    _parked(seg, state, started, finished, settings))
        for index in moves.timed_out:
            state["timedOut"][str(index)] = iso(now)
            events.append(_event(seg, audit.STEP_FAILED, step=f"{path}#{index}",
                                 error="branch timed out", child=state["children"][str(index)]))
            finished[index] = Finished("timed_out", error="branch timed out", finished_at=now)
        if moves.timed_out:  # written before the children are told to stop
            recorded = recorded.evolve(output=state)
            seg.record(step, path, recorded, audit.STEP_STARTED, unwritten=events,
                       timedOut=list(moves.timed_out))
            events = []
            _stop(seg, [state["children"][str(i)] for i in moves.timed_out])
            continue
        if moves.done:
            _finish(seg, step, path, prefix, frame, recorded.evolve(output=state), settings,
                    started, finished, mine, events)
            return
        for index in moves.start:
            child_id = str(uuid.uuid4())
            state["started"][str(index)] = iso(now)
            state["children"][str(index)] = child_id
            events.append(_event(seg, audit.CHILD_STARTED, step=path, branch=index,
                                 child=child_id, key=state["keys"][index]))
        recorded = recorded.evolve(output=state)
        if moves.start:
            seg.record(step, path, recorded, audit.STEP_STARTED, unwritten=events,
                       started=list(moves.start))
            events = []
        _ensure_children(seg, step, path, frame, state, finished)
        if moves.start:
            continue  # look again: a branch may have ended already
        change = Change(events=events).step(path, recorded)
        children.park(seg, len(reports), change, moves.wake_at)  # raises once parked
        recorded = before  # a report came meanwhile: nothing was written, look again


def _plan(seg: Walk, step: Step, frame: Frame) -> dict[str, Any] | str:
    """The branches' keys (a fan-out's items, or the static branches' names)."""
    static = [branch.name for branch in step.branches] if step.branches else None
    if static is not None:
        keys_ = list(static)
    else:
        if isinstance(step.foreach, tuple):
            items: Any = list(step.foreach)
        else:
            try:
                items = seg.evaluate(step, step.foreach or "", frame)
            except Exception as exc:  # RunFailed: the expression failed
                return str(exc)
        if isinstance(items, Mapping):
            items = [{"key": k, "value": v} for k, v in items.items()]
        if not isinstance(items, list):
            return (f"foreach of step {step.name!r} gave {type(items).__name__}, not a list")
        if len(items) > parallel.MAX_ITEMS:
            return (f"foreach of step {step.name!r} has {len(items)} items; a parallel step "
                    f"fans out over at most {parallel.MAX_ITEMS}")
        keys_ = items
    return {"keys": keys_, "static": static, "started": {}, "children": {}, "timedOut": {},
            "seen": [], "t0": iso(seg.now())}


def _reports_for(path: str, state: Mapping[str, Any],
                 reports: Mapping[str, ChildReport]) -> dict[int, ChildReport]:
    mine = {}
    for index, child_id in state["children"].items():
        report = reports.get(keys.child_field(path, int(index)))
        if report is not None and report.id == child_id:
            mine[int(index)] = report
    return mine


def _finished(report: ChildReport) -> Finished:
    status = {ExecutionStatus.COMPLETED: "completed",
              ExecutionStatus.TIMED_OUT: "timed_out"}.get(report.status, "failed")
    error = report.error or (None if status == "completed"
                             else f"branch ended {report.status.value}")
    return Finished(status, output=report.outputs, error=error,
                    finished_at=parse_iso(report.finished_at))


def _parked(seg: Walk, state: Mapping[str, Any], started: Mapping[int, Any],
            finished: Mapping[int, Finished], settings: parallel.Settings) -> frozenset[int]:
    """Running branches parked on a timer (only asked when they free their slot)."""
    if settings.count_waiting:
        return frozenset()
    running = [i for i in started if i not in finished]
    return frozenset(i for i in running
                     if seg.r.store.status(state["children"][str(i)]) is ExecutionStatus.WAITING)


def _ensure_children(seg: Walk, step: Step, path: str, frame: Frame,
                     state: Mapping[str, Any], finished: Mapping[int, Finished]) -> None:
    """Create each started, unfinished branch's child that does not exist yet (all of a
    new wave; after a crash, those recorded as started whose child was never made)."""
    for index, child_id in state["children"].items():
        if int(index) in finished or seg.r.store.exists(child_id):
            continue
        item_scope: dict[str, Any] = dict(frame)
        if state["static"] is None:
            items = state["keys"]
            item_scope["foreach"] = {"item": items[int(index)], "index": int(index),
                                     "items": items, "total": len(items)}
        link = ParentLink(id=seg.state.id, path=path, depth=seg.state.depth, branch=int(index),
                          scope={"step": step.name, "steps": dict(seg.step_scope),
                                 "frame": item_scope})
        children.start_child(seg.r.store, seg.r.scheduler, seg.workflow, seg.state.event, link,
                             child_id, seg.now(), requested_by=seg.state.requested_by,
                             variables=seg.state.variables)


def _finish(seg: Walk, step: Step, path: str, prefix: str, frame: Frame,
            recorded: StepResult, settings: parallel.Settings, started: Mapping[int, Any],
            finished: Mapping[int, Finished], mine: Mapping[int, ChildReport],
            events: list[dict[str, Any]]) -> None:
    state = recorded.output
    output = parallel.aggregate(state["keys"], state["static"],
                                {i: t for i, t in started.items() if t is not None}, finished)
    _expose_reports(seg, step, mine)
    now = iso(seg.now())
    if output["status"] == "failed" and settings.fail_fast:
        message = (f"{output['failed']} of {output['total']} branches of step {step.name!r} "
                   "failed")
        failed = recorded.evolve(status=StepStatus.FAILED, output=output, error=message,
                                 finished_at=now)
        seg.record(step, path, failed, audit.STEP_FAILED, unwritten=events, error=message)
        seg.follow_on_failure(step, path, prefix, frame, failed)
        return
    done = recorded.evolve(status=StepStatus.COMPLETED, output=output, finished_at=now)
    seg.record(step, path, done, audit.STEP_COMPLETED, unwritten=events)


def _stop(seg: Walk, child_ids: list[str]) -> None:
    """Tell timed-out branches to stop: their executions end TIMED_OUT (their report is
    no longer read). Best effort, as in Elastic: a step already running finishes."""
    end = seg.r.end_execution
    if end is None:
        return
    for child_id in child_ids:
        end(child_id, "its parallel branch timed out")


def _copy(output: Mapping[str, Any]) -> dict[str, Any]:
    """The step's bookkeeping, its mappings and lists copied so a pass can change them."""
    return {key: dict(value) if isinstance(value, dict) else
            list(value) if isinstance(value, list) else value
            for key, value in output.items()}


def _expose_branch_steps(seg: Walk, step: Step, path: str) -> None:
    """A replay of a finished static parallel step puts its branches' steps back in scope."""
    if not step.branches:
        return
    reports = seg.r.store.child_reports(seg.state.id)
    mine = {int(field.rsplit("#", 1)[1]): report for field, report in reports.items()
            if field.rsplit("#", 1)[0] == path}
    _expose_reports(seg, step, mine)


def _expose_reports(seg: Walk, step: Step, mine: Mapping[int, ChildReport]) -> None:
    if not step.branches:
        return  # a fan-out's steps ran once per item: read them from results[]
    for _, report in sorted(mine.items()):
        seg.step_scope.update(report.steps)


def _event(seg: Walk, kind: str, **data: Any) -> dict[str, Any]:
    return audit.event(kind, iso(seg.now()) or "", **data)
