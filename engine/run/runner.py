"""Advance one execution through its steps until it pauses or ends.

A run is replayed from the top on every segment: steps with a recorded result are
not run again (their output is put back in scope), so a worker that dies mid-run
leaves nothing to undo; the next worker re-runs only the step that was
interrupted. Steps are therefore at-least-once. Each step's result is committed
to Redis (with its audit events, atomically) before the next step starts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from engine.definition.conditions import Condition
from engine.definition.model import Step, Workflow
from engine.definition.step_types import StepContext, StepKind, StepType, get_step_type
from engine.definition.templates import evaluate_expression, render_value
from engine.errors import StepFailed, TemplateError, WorkflowFailRequested
from engine.notify import Notifier
from engine.run import escalation, timers
from engine.run.timers import Scheduler
from engine.state import audit
from engine.state.execution import (
    LEASE_MS,
    ExecutionState,
    ExecutionStatus,
    StepResult,
    StepStatus,
    Waiting,
    dumps,
    epoch_ms,
    iso,
    parse_iso,
    review_request,
    utcnow,
)
from engine.state.store import Change, Store
from engine.steps.human import input_schema

log = logging.getLogger(__name__)

RUNNABLE = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.WAITING)


class _Suspend(Exception):
    """The run pauses here (input, a timer or a retry delay); a later job resumes it."""


class _Stop(Exception):
    """Someone else changed the run (cancelled, timed out): this worker lets go."""


class _RunFailed(Exception):
    def __init__(self, message: str, step: str | None = None) -> None:
        self.step = step
        super().__init__(message)


# What enclosing flow steps add to the scope of their children (``foreach``).
_Frame = Mapping[str, Any]
_NO_FRAME: _Frame = {}


class Runner:
    """Advances executions; one instance per worker process."""

    def __init__(self, store: Store, scheduler: Scheduler, notifier: Notifier,
                 load_workflow: Callable[[str], Workflow],
                 clock: Callable[[], datetime] = utcnow, lease_ms: int = LEASE_MS) -> None:
        self.store = store
        self.scheduler = scheduler
        self.notifier = notifier
        self.load_workflow = load_workflow  # digest -> Workflow
        self.clock = clock
        self.lease_ms = lease_ms

    def advance(self, execution_id: str) -> ExecutionStatus | None:
        """Run the execution's next segment; returns its status afterwards (None if busy)."""
        token, state = self.store.acquire_lease_and_load(execution_id, self.lease_ms)
        if token is None:
            return None  # another worker holds it; if that worker dies the sweeper re-enqueues
        segment = None
        try:
            if state.status not in RUNNABLE:
                self.store.forget_runnable(execution_id)
                return state.status
            workflow = self.load_workflow(state.digest)
            segment = _Segment(self, state, workflow, token)
            return segment.run()
        finally:
            if segment is None or not segment.released:
                self.store.release_lease(execution_id, token)


class _Segment:
    """One job's worth of progress on one execution, holding its lease."""

    def __init__(self, runner: Runner, state: ExecutionState, workflow: Workflow,
                 token: str) -> None:
        self.r = runner
        self.state = state
        self.workflow = workflow
        self.token = token
        self.now = runner.clock
        self.step_scope: dict[str, Any] = {}
        self.scope: dict[str, Any] = {
            "event": state.event,
            "inputs": _inputs(workflow, state.event),
            "consts": dict(workflow.consts),
            "variables": state.variables,
            "steps": self.step_scope,
            "execution": {"id": state.id, "startedAt": state.started_at},
            "workflow": {"name": workflow.name},
        }
        self.base_lease_ms = runner.lease_ms
        self.lease_ms = runner.lease_ms
        # Results of pure steps (no effect outside the run) are buffered and written with
        # the next write that must happen anyway: a crash only makes them run again.
        self.pending: Change | None = None
        self.pending_guard: tuple[ExecutionStatus, ...] | None = None
        self.released = False

    # -- the segment -------------------------------------------------------------------------

    def run(self) -> ExecutionStatus:
        state = self.state
        try:
            if state.status is ExecutionStatus.PENDING:
                self._commit(Change(status=ExecutionStatus.RUNNING, running="add",
                                    running_score=epoch_ms(self.now()) + self.base_lease_ms,
                                    events=[self._event(audit.STARTED)]),
                             guard=(ExecutionStatus.PENDING,), buffer=True)
            elif state.status is ExecutionStatus.WAITING:
                self._wake_if_due()
            try:
                self._run_steps(self.workflow.steps, "", _NO_FRAME)
            except _RunFailed as failure:
                self._run_workflow_fallback()
                self._finish(ExecutionStatus.FAILED, audit.FAILED, error=str(failure),
                             step=failure.step)
                return state.status
            self._finish(ExecutionStatus.COMPLETED, audit.COMPLETED)
        except _Suspend:
            self.flush()
        except _Stop:
            pass
        return state.status

    def _wake_if_due(self) -> None:
        due = [(path, res) for path, res in self.state.results.items()
               if res.status is StepStatus.WAITING and res.wake_at]
        for path, res in due:
            wake = parse_iso(res.wake_at)
            assert wake is not None
            if self.now() < wake:
                # RQ's scheduler can fire up to a second early: never act before the deadline.
                self.r.scheduler.advance_at(self.state.id, wake)
                raise _Suspend
            self._commit(Change(status=ExecutionStatus.RUNNING, running="add",
                                running_score=epoch_ms(self.now()) + self.base_lease_ms,
                                events=[self._event(audit.TIMER_FIRED, step=path)]),
                         guard=(ExecutionStatus.WAITING,), buffer=True)

    def _finish(self, status: ExecutionStatus, kind: str, *, error: str | None = None,
                step: str | None = None) -> None:
        finished = iso(self.now())
        assert finished is not None
        change = Change(status=status, running="remove", set={"t1": finished},
                        events=[self._event(kind, error=error, step=step)])
        if error:
            change.set["err"] = error
        self._commit(change, guard=(ExecutionStatus.RUNNING,), release=True)
        self.state.finished_at = finished

    # -- walking -----------------------------------------------------------------------------

    def _run_steps(self, steps: tuple[Step, ...], prefix: str, frame: _Frame) -> None:
        for step in steps:
            self._run_step(step, prefix + step.name, prefix, frame)

    def _run_step(self, step: Step, path: str, prefix: str, frame: _Frame) -> None:
        recorded = self.state.results.get(path)
        if recorded is not None and recorded.status in (StepStatus.COMPLETED, StepStatus.SKIPPED):
            self._expose(step, recorded)
            return
        if recorded is not None and recorded.status is StepStatus.FAILED:
            self._expose(step, recorded)
            self._handle_failure(step, path, prefix, frame, recorded.error or "failed")
            return
        if recorded is None and step.if_ is not None and not self._holds(step.if_, step, frame):
            skipped = StepResult(status=StepStatus.SKIPPED, finished_at=iso(self.now()))
            self._commit(Change(events=[self._event(audit.STEP_SKIPPED, step=path)]
                                ).step(path, skipped), buffer=True)
            self._expose(step, skipped)
            return
        spec = get_step_type(step.type)
        if spec is None:
            raise _RunFailed(f"step type {step.type!r} is not installed on this worker",
                             step=path)
        if spec.kind is StepKind.FLOW:
            self._run_flow(spec, step, path, prefix, frame, recorded)
        elif spec.kind is StepKind.HUMAN:
            self._run_human(step, path, recorded, frame)
        elif spec.kind is StepKind.TIMER:
            self._run_wait(step, path, recorded, frame)
        elif spec.kind is StepKind.ACTION:
            self._run_action(step, path, prefix, frame, recorded)
        else:  # never step over a step silently
            raise _RunFailed(f"step type {step.type!r} has kind {spec.kind.value!r}, "
                             "which this runner does not run", step=path)

    def _expose(self, step: Step, result: StepResult) -> None:
        self.step_scope[step.name] = result.scope_entry()

    def _scope(self, frame: _Frame) -> dict[str, Any]:
        return {**self.scope, **frame} if frame else self.scope

    def _holds(self, condition: Condition, step: Step, frame: _Frame) -> bool:
        try:
            return condition.evaluate(self._scope(frame))
        except TemplateError as exc:
            raise _RunFailed(f"condition of step {step.name!r} failed: {exc}",
                             step=step.name) from exc

    # -- flow control ------------------------------------------------------------------------

    def _run_flow(self, spec: StepType, step: Step, path: str, prefix: str, frame: _Frame,
                  recorded: StepResult | None) -> None:
        assert spec.flow is not None  # the registry refuses a flow step without one
        flow = _FlowRun(self, step, path, prefix, frame, recorded)
        try:
            spec.flow(flow)
        except StepFailed as exc:
            raise _RunFailed(str(exc), step=path) from exc
        self._complete_flow(step, path, flow.started or self._start_flow(step, path, {}))

    def _evaluate(self, step: Step, expression: str, frame: _Frame) -> Any:
        try:
            return evaluate_expression(expression, self._scope(frame))
        except TemplateError as exc:
            raise _RunFailed(f"expression of step {step.name!r} failed: {exc}",
                             step=step.name) from exc

    def _start_flow(self, step: Step, path: str, output: dict[str, Any]) -> StepResult:
        result = StepResult(status=StepStatus.RUNNING, output=output, started_at=iso(self.now()))
        self._commit(Change(events=[self._event(audit.STEP_STARTED, step=path, output=output)]
                            ).step(path, result), buffer=True)
        self._expose(step, result)
        return result

    def _complete_flow(self, step: Step, path: str, started: StepResult) -> None:
        done = started.evolve(status=StepStatus.COMPLETED, finished_at=iso(self.now()))
        self._commit(Change(events=[self._event(audit.STEP_COMPLETED, step=path)]
                            ).step(path, done), buffer=True)
        self._expose(step, done)

    # -- actions -----------------------------------------------------------------------------

    def _run_action(self, step: Step, path: str, prefix: str, frame: _Frame,
                    recorded: StepResult | None) -> None:
        spec = get_step_type(step.type)
        assert spec is not None and spec.run is not None
        attempts = recorded.attempts if recorded else 0
        if recorded is not None and recorded.status is StepStatus.WAITING:
            wake = parse_iso(recorded.wake_at)
            if wake and self.now() < wake:
                self.r.scheduler.advance_at(self.state.id, wake)
                raise _Suspend
        attempt = attempts + 1
        started_at = iso(self.now())
        started_event = self._event(audit.STEP_STARTED, step=path, attempt=attempt,
                                    recovered=True if (recorded is not None and
                                                       recorded.status is StepStatus.RUNNING)
                                    else None)
        running = StepResult(status=StepStatus.RUNNING, started_at=started_at, attempts=attempt)
        if not spec.pure:
            # Record the start first: a step with side effects that crashes mid-way shows
            # in the trail as started and not finished, and is retried from here.
            if step.timeout is not None:
                self.lease_ms = int(step.timeout.total_seconds() * 1000) + self.base_lease_ms
            self._commit(Change(events=[started_event]).step(path, running),
                         lease_ms=self.lease_ms)
        scope = self._scope(frame)
        try:
            options = render_value(dict(step.with_), scope)
            ctx = StepContext(options=options, execution_id=self.state.id, step_name=step.name,
                              step_path=path, attempt=attempt, connector_id=step.connector_id,
                              timeout_seconds=step.timeout.total_seconds() if step.timeout
                              else None)
            output = spec.run(ctx)
        except WorkflowFailRequested as exc:
            self._record_failure(step, path, running, str(exc), [started_event] if spec.pure
                                 else [])
            raise _RunFailed(str(exc), step=path) from exc
        except (StepFailed, TemplateError) as exc:
            self._fail_attempt(step, path, prefix, frame, running, exc,
                               [started_event] if spec.pure else [])
            return
        except Exception as exc:  # a custom step's bug must not kill the worker loop
            log.exception("step %s of %s raised", path, self.state.id)
            failure = StepFailed(f"{type(exc).__name__}: {exc}")
            self._fail_attempt(step, path, prefix, frame, running, failure,
                               [started_event] if spec.pure else [])
            return
        done = running.evolve(status=StepStatus.COMPLETED, output=_jsonable(output),
                              finished_at=iso(self.now()), error=None)
        events = [started_event] if spec.pure else []
        events.append(self._event(audit.STEP_COMPLETED, step=path))
        change = Change(events=events).step(path, done)
        if spec.sets_variables and isinstance(output, Mapping):
            self.state.variables.update(output)
            change.set["v"] = dumps(self.state.variables)
        self.lease_ms = self.base_lease_ms
        self._commit(change, lease_ms=self.lease_ms, buffer=spec.pure)
        self._expose(step, done)

    def _fail_attempt(self, step: Step, path: str, prefix: str, frame: _Frame,
                      running: StepResult, exc: StepFailed | TemplateError,
                      pending_events: list[dict[str, Any]]) -> None:
        message = str(exc)
        retryable = getattr(exc, "retryable", False)
        policy = (step.on_failure.retry if step.on_failure else None)
        if retryable and policy and running.attempts < policy.max_attempts:
            delay = policy.delay_before(running.attempts + 1)
            wake = self.now() + delay
            waiting = running.evolve(status=StepStatus.WAITING, error=message, wake_at=iso(wake))
            events = [*pending_events, self._event(audit.STEP_RETRY, step=path, error=message,
                                                   attempt=running.attempts,
                                                   retryAt=iso(wake))]
            if delay <= timedelta(0):
                self._commit(Change(events=events).step(path, waiting))
                self.state.results[path] = waiting
                self._run_step(step, path, prefix, frame)
                return
            timer = timers.advance_timer(self.state.id, wake)
            self._commit(Change(events=events, status=ExecutionStatus.WAITING, running="remove",
                                zadd=[timer.entry]).step(path, waiting),
                         guard=(ExecutionStatus.RUNNING,))
            self.r.scheduler.schedule(timer)
            raise _Suspend
        failed = self._record_failure(step, path, running, message, pending_events,
                                      details=getattr(exc, "details", None))
        self.state.results[path] = failed
        self._handle_failure(step, path, prefix, frame, message)

    def _record_failure(self, step: Step, path: str, running: StepResult, message: str,
                        pending_events: list[dict[str, Any]], details: Any = None) -> StepResult:
        failed = running.evolve(status=StepStatus.FAILED, error=message,
                                output=_jsonable(details), finished_at=iso(self.now()))
        self._commit(Change(events=[*pending_events, self._event(
            audit.STEP_FAILED, step=path, error=message, attempt=running.attempts or None)]
        ).step(path, failed))
        self._expose(step, failed)
        return failed

    def _handle_failure(self, step: Step, path: str, prefix: str, frame: _Frame,
                        message: str) -> None:
        """A step failed for good: continue, run its fallback, or fail the run."""
        policy = step.on_failure
        timeout_outcome = (self.state.results.get(path) or StepResult(StepStatus.FAILED)).output
        if isinstance(timeout_outcome, Mapping) and timeout_outcome.get("onTimeout") == "continue":
            return
        if policy is not None and policy.fallback:
            self._run_steps(policy.fallback, prefix, frame)
            return
        if policy is not None and policy.continue_:
            return
        raise _RunFailed(f"step {path!r} failed: {message}", step=path)

    def _run_workflow_fallback(self) -> None:
        policy = self.workflow.settings.on_failure
        if policy is None or not policy.fallback:
            return
        try:
            self._run_steps(policy.fallback, "", _NO_FRAME)
        except _RunFailed as exc:
            log.warning("workflow fallback of %s failed: %s", self.state.id, exc)

    # -- timers ------------------------------------------------------------------------------

    def _run_wait(self, step: Step, path: str, recorded: StepResult | None,
                  frame: _Frame) -> None:
        if recorded is not None and recorded.status is StepStatus.WAITING:
            wake = parse_iso(recorded.wake_at)
            assert wake is not None
            if self.now() < wake:
                self.r.scheduler.advance_at(self.state.id, wake)
                raise _Suspend
            done = recorded.evolve(status=StepStatus.COMPLETED, finished_at=iso(self.now()))
            self._commit(Change(events=[self._event(audit.STEP_COMPLETED, step=path)]
                                ).step(path, done))
            self._expose(step, done)
            return
        from engine.definition.durations import parse_duration

        options = render_value(dict(step.with_), self._scope(frame))
        wake = self.now() + parse_duration(options["duration"])
        waiting = StepResult(status=StepStatus.WAITING, started_at=iso(self.now()),
                             wake_at=iso(wake))
        timer = timers.advance_timer(self.state.id, wake)
        self._commit(Change(status=ExecutionStatus.WAITING, running="remove",
                            events=[self._event(audit.TIMER_SET, step=path, wakeAt=iso(wake))],
                            zadd=[timer.entry]).step(path, waiting),
                     guard=(ExecutionStatus.RUNNING,))
        self.r.scheduler.schedule(timer)
        raise _Suspend

    # -- humans ------------------------------------------------------------------------------

    def _run_human(self, step: Step, path: str, recorded: StepResult | None,
                   frame: _Frame) -> None:
        if recorded is not None and recorded.status is StepStatus.WAITING_FOR_INPUT:
            raise _Suspend
        options = render_value(dict(step.with_), self._scope(frame))
        message = str(options.get("message") or "")
        digest = hashlib.sha256(message.encode()).hexdigest()
        now = self.now()
        due = self._due(step, now)
        first = escalation.levels(options)[0]
        level_due = now + first.sla if first.sla is not None else None
        remind_at = escalation.remind_time(options, now, level_due)
        waiting = Waiting(step=step.name, path=path, step_type=step.type, message=message,
                          message_sha256=digest, schema=input_schema(step.type, options),
                          since=iso(now) or "", approvers=first.approvers, due_at=iso(due),
                          options={k: v for k, v in options.items()
                                   if k not in ("message", "schema")},
                          level_due=iso(level_due), first_due=iso(level_due),
                          remind_at=iso(remind_at))
        result = StepResult(status=StepStatus.WAITING_FOR_INPUT, started_at=iso(now))
        new_timers = []
        if step.timeout is not None:
            new_timers.append(timers.step_timeout_timer(self.state.id, path, now + step.timeout))
        if level_due is not None:
            new_timers.append(timers.review_timer(self.state.id, path, 0, "sla", level_due))
        if remind_at is not None:
            new_timers.append(timers.review_timer(self.state.id, path, 0, "remind", remind_at))
        change = Change(
            set={"w": waiting.to_json()}, status=ExecutionStatus.WAITING_FOR_INPUT,
            waiting="add", waiting_score=epoch_ms(now), running="remove",
            events=[self._event(audit.WAITING_FOR_INPUT, step=path, message=message,
                                sha256=digest, dueAt=iso(due), slaDueAt=iso(level_due),
                                approvers=list(first.approvers) or None)],
            zadd=[timer.entry for timer in new_timers],  # a timer is never lost with its worker
        ).step(path, result)
        self._commit(change, guard=(ExecutionStatus.RUNNING,), release=True)
        self.state.waiting = waiting
        for timer in new_timers:
            self.r.scheduler.schedule(timer)
        try:
            self.r.notifier.review_waiting(review_request(self.state, waiting))
        except Exception:  # the review stays listed and can be redelivered
            log.exception("notifier failed for %s", self.state.id)
        raise _Suspend

    def _due(self, step: Step, now: datetime) -> datetime | None:
        deadlines = []
        if step.timeout is not None:
            deadlines.append(now + step.timeout)
        if self.workflow.settings.timeout is not None:
            started = parse_iso(self.state.started_at)
            assert started is not None
            deadlines.append(started + self.workflow.settings.timeout)
        return min(deadlines) if deadlines else None

    # -- writing -----------------------------------------------------------------------------

    def _event(self, kind: str, **data: Any) -> dict[str, Any]:
        return audit.event(kind, iso(self.now()) or "", **data)

    def _commit(self, change: Change, *, guard: tuple[ExecutionStatus, ...] = (
                    ExecutionStatus.RUNNING,), lease_ms: int | None = None,
                release: bool = False, buffer: bool = False) -> None:
        for name, value in change.set.items():
            if name.startswith("s:"):
                self.state.results[name[2:]] = StepResult.from_json(value)
        if change.status is not None:
            self.state.status = change.status
        if self.pending is not None:
            change = _merge(self.pending, change)
            guard = self.pending_guard or guard
            self.pending = self.pending_guard = None
        if buffer:
            self.pending, self.pending_guard = change, guard
            return
        for _ in range(100):
            result = self.r.store.commit(self.state, change, guard_status=guard,
                                         guard_lease=self.token,
                                         lease_ttl_ms=lease_ms or self.lease_ms,
                                         release_lease=release)
            if result.ok:
                self.released = release
                return
            if result.reason == "head":  # someone appended to the trail: extend the new head
                self.state.audit_head = result.head
                continue
            log.info("execution %s changed under us (%s, now %s): letting go",
                     self.state.id, result.reason, result.status)
            raise _Stop
        raise _Stop

    def flush(self) -> None:
        if self.pending is not None:
            self._commit(Change())


class _FlowRun:
    """A flow step as its function sees it: the runner's side of :class:`FlowContext`."""

    def __init__(self, segment: _Segment, step: Step, path: str, prefix: str, frame: _Frame,
                 started: StepResult | None) -> None:
        self._segment = segment
        self._step = step
        self._path = path
        self._prefix = prefix
        self._frame = frame
        self.started = started

    @property
    def step(self) -> Step:
        return self._step

    @property
    def path(self) -> str:
        return self._path

    def choose(self, decide: Callable[[], Mapping[str, Any]]) -> Mapping[str, Any]:
        if self.started is None:
            self.started = self._segment._start_flow(self._step, self._path, dict(decide()))
        output: Mapping[str, Any] = self.started.output
        return output

    def evaluate(self, expression: str) -> Any:
        return self._segment._evaluate(self._step, expression, self._frame)

    def holds(self, condition: Condition) -> bool:
        return self._segment._holds(condition, self._step, self._frame)

    def run_steps(self, steps: tuple[Step, ...], *, prefix: str | None = None,
                  scope: Mapping[str, Any] | None = None) -> None:
        frame = {**self._frame, **scope} if scope else self._frame
        self._segment._run_steps(steps, self._prefix if prefix is None else prefix, frame)


def _merge(first: Change, then: Change) -> Change:
    """One change with the effect of ``first`` followed by ``then``."""
    merged = Change(set={**first.set, **then.set},
                    delete=[d for d in first.delete if d not in then.set] + then.delete,
                    status=then.status or first.status, events=first.events + then.events,
                    waiting=then.waiting or first.waiting,
                    waiting_score=then.waiting_score if then.waiting else first.waiting_score,
                    running=then.running or first.running,
                    running_score=then.running_score if then.running else first.running_score,
                    zadd=first.zadd + then.zadd, zrem=first.zrem + then.zrem)
    for name in then.delete:
        merged.set.pop(name, None)
    return merged


def _inputs(workflow: Workflow, event: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for spec in workflow.inputs:
        if "default" in spec:
            values[str(spec["name"])] = spec["default"]
    if isinstance(event, Mapping) and isinstance(event.get("inputs"), Mapping):
        values.update(event["inputs"])
    return values


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)
