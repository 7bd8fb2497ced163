"""Action steps (``http``, ``console``, ``data.set``, custom types, ``workflow.output``) as a
segment runs them: one attempt, its result or its failure, a retry or the step's
``on-failure``.

A step with effects outside the run has its start committed before it runs and its result
after, so a worker that dies mid-way leaves a start with no end in the trail and the step
is retried from there; a pure step's start and end are buffered and written together.
``workflow.output`` ends the run (:class:`engine.run.walk.RunEnded`) with the outputs it
emitted, if they are the ones the workflow declares.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, NoReturn

from engine.definition.model import Step
from engine.definition.outputs import output_problems
from engine.definition.step_types import StepContext
from engine.definition.templates import render_value
from engine.errors import StepFailed, TemplateError, WorkflowFailRequested
from engine.run import loop_deadlines
from engine.run.next_step import RunAction, retry_after
from engine.run.walk import Frame, RunEnded, RunFailed, Walk
from engine.state import audit
from engine.state.execution import ExecutionStatus, StepResult, StepStatus, dumps, iso
from engine.state.store import Change
from engine.steps.composition import OutputsEmitted

log = logging.getLogger(__name__)

_OUTPUT_STATUS = {"completed": ExecutionStatus.COMPLETED, "cancelled": ExecutionStatus.CANCELLED,
                  "failed": ExecutionStatus.FAILED}


def run_action(walk: Walk, action: RunAction, step: Step, path: str, prefix: str,
               frame: Frame, base_lease_ms: int) -> None:
    """Run attempt ``action.attempt`` of the action step at ``path`` and record what came of
    it (``base_lease_ms``: the lease a step without a timeout runs under)."""
    spec, attempt = action.spec, action.attempt
    assert spec.run is not None  # the registry refuses an action without one
    started_event = walk.event(audit.STEP_STARTED, step=path, attempt=attempt,
                               recovered=True if action.recovered else None)
    running = StepResult(status=StepStatus.RUNNING, started_at=iso(walk.now()),
                         attempts=attempt)
    # A pure step's start is written with its end; the start of one with effects first:
    # if it crashes mid-way, the trail shows it started and not finished, and it is
    # retried from here.
    unwritten = [started_event] if spec.pure else []
    if not spec.pure:
        if step.timeout is not None:  # the lease outlasts the step's own timeout
            walk.writes.lease_ms = int(step.timeout.total_seconds() * 1000) + base_lease_ms
        walk.writes.commit(Change(events=[started_event]).step(path, running))
    try:
        options = walk.options(step, frame, spec.raw_options)
        scope = walk.scope_for(frame)
        ctx = StepContext(options=options, execution_id=walk.state.id, step_name=step.name,
                          step_path=path, attempt=attempt, connector_id=step.connector_id,
                          timeout_seconds=loop_deadlines.action_timeout(
                              walk.deadlines, step.timeout, walk.now()),
                          egress=walk.r.egress, params=render_value(dict(step.params), scope),
                          connections=walk.r.connections,
                          render=lambda value, names: render_value(value, {**scope, **names}))
        output = spec.run(ctx)
        _check_size(walk, step, output)
    except WorkflowFailRequested as exc:
        _record_failure(walk, step, path, running, str(exc), unwritten)
        raise RunFailed(str(exc), step=path, final=True) from exc
    except OutputsEmitted as emitted:
        _emit_outputs(walk, step, path, prefix, frame, running, emitted, unwritten)
        return
    except (StepFailed, TemplateError) as exc:
        _fail_attempt(walk, step, path, prefix, frame, running, exc, unwritten)
        return
    except Exception as exc:  # a custom step's bug must not kill the worker loop
        log.exception("step %s of %s raised", path, walk.state.id)
        failure = StepFailed(f"{type(exc).__name__}: {exc}")
        _fail_attempt(walk, step, path, prefix, frame, running, failure, unwritten)
        return
    done = running.evolve(status=StepStatus.COMPLETED, output=_jsonable(output),
                          finished_at=iso(walk.now()), error=None)
    change = Change(events=[*unwritten, walk.event(audit.STEP_COMPLETED, step=path)]
                    ).step(path, done)
    if spec.sets_variables and isinstance(output, Mapping):
        walk.state.variables.update(output)
        change.set["v"] = dumps(walk.state.variables)
    walk.writes.lease_ms = base_lease_ms
    walk.writes.commit(change, buffer=spec.pure)
    walk.expose(step, done)


def _emit_outputs(walk: Walk, step: Step, path: str, prefix: str, frame: Frame,
                  running: StepResult, emitted: OutputsEmitted,
                  unwritten: list[dict[str, Any]]) -> NoReturn | None:
    """`workflow.output`: the run ends with these outputs, if they are the declared ones."""
    problems = output_problems(walk.workflow, emitted.values)
    if problems:
        listed = "; ".join(f"{p['output']}: {p['message']}" for p in problems)
        failure = StepFailed(f"the outputs of step {step.name!r} do not match the "
                             f"workflow's declared outputs: {listed}", retryable=False)
        _fail_attempt(walk, step, path, prefix, frame, running, failure, unwritten)
        return None
    values = _jsonable(emitted.values)
    done = running.evolve(status=StepStatus.COMPLETED, output=values,
                          finished_at=iso(walk.now()), error=None)
    walk.record(step, path, done, audit.STEP_COMPLETED, buffer=True, unwritten=unwritten)
    walk.state.outputs = values
    status = _OUTPUT_STATUS[emitted.status]
    error = (f"step {step.name!r} ended the run as {emitted.status}"
             if status is not ExecutionStatus.COMPLETED else None)
    raise RunEnded(status, error, path)


def _check_size(walk: Walk, step: Step, output: Any) -> None:
    """StepFailed when ``output`` is larger than the step's ``max-step-size`` (or the
    workflow's ``settings.max-step-size``), as JSON."""
    limit = step.max_step_size or walk.workflow.settings.max_step_size
    if limit is None:
        return
    size = len(json.dumps(_jsonable(output), default=str).encode("utf-8"))
    if size > limit:
        raise StepFailed(f"the output of step {step.name!r} is {size} bytes as JSON, more "
                         f"than its max-step-size of {limit} bytes", retryable=False)


def _fail_attempt(walk: Walk, step: Step, path: str, prefix: str, frame: Frame,
                  running: StepResult, exc: StepFailed | TemplateError,
                  unwritten: list[dict[str, Any]]) -> None:
    message = str(exc)
    retry = retry_after(step, running, message, getattr(exc, "retryable", False), walk.now(),
                        walk.scope_for(frame), random.random(),
                        service_asked=getattr(exc, "retry_after", None))
    if retry is None:
        failed = _record_failure(walk, step, path, running, message, unwritten,
                                 details=getattr(exc, "details", None))
        walk.follow_on_failure(step, path, prefix, frame, failed)
        return
    wake = loop_deadlines.within(walk.deadlines, retry.wake_at)
    if wake < retry.wake_at:
        retry = replace(retry, wake_at=wake, waiting=retry.waiting.evolve(wake_at=iso(wake)))
    change = Change(events=[*unwritten, walk.event(
        audit.STEP_RETRY, step=path, error=message, attempt=running.attempts,
        retryAt=iso(retry.wake_at))]).step(path, retry.waiting)
    if not retry.immediately:
        walk.park_until(retry.wake_at, change)
    walk.writes.commit(change)
    walk.run_step(step, path, prefix, frame)


def _record_failure(walk: Walk, step: Step, path: str, running: StepResult, message: str,
                    unwritten: list[dict[str, Any]], details: Any = None) -> StepResult:
    failed = running.evolve(status=StepStatus.FAILED, error=message,
                            output=_jsonable(details), finished_at=iso(walk.now()))
    walk.record(step, path, failed, audit.STEP_FAILED, unwritten=unwritten, error=message,
                attempt=running.attempts or None)
    return failed


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)
