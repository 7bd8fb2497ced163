"""Advance one execution through its steps until it pauses or ends.

A run is replayed from the top on every segment: steps with a recorded result are
not run again (their output is put back in scope), so a worker that dies mid-run
leaves nothing to undo; the next worker re-runs only the step that was
interrupted. Steps are therefore at-least-once.

What to do with each step is decided by :func:`engine.run.next_step.next_step`, pure,
from the definition, the recorded results and the clock; a segment here does what it
says and commits through the store, each result with its audit events, atomically.
A step with effects outside the run has its start committed before it runs and its
result after. The results of pure steps (console, data.set, skips, the choices of
flow steps) are buffered and written with the next write that must happen anyway
(a pause, a step with effects, the end): a crash before it only makes them run again
(:mod:`engine.run.buffered_writes`).

Loops (``foreach``, ``while``) record their decisions in their own result as they take
them (see :mod:`engine.steps.loops`), so a replay walks the same iterations. An iteration's
deadline (``iteration-timeout``, or the loop's ``timeout``) is checked at every step
boundary inside it: a step that would run, wait or wake after it fails in its place, and
that failure is recorded so a replay fails there too.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NoReturn, assert_never

from engine.definition.conditions import Condition
from engine.definition.durations import parse_duration
from engine.definition.egress import DEFAULT_POLICY, EgressPolicy
from engine.definition.inputs import input_values
from engine.definition.model import FailurePolicy, Step, Workflow
from engine.definition.outputs import output_problems
from engine.definition.step_types import StepContext, StepType, get_step_type
from engine.definition.templates import evaluate_expression, render_value
from engine.errors import DurationError, StepFailed, TemplateError, WorkflowFailRequested
from engine.notify import Notifier
from engine.run import branches, children, timers
from engine.run.buffered_writes import BufferedWrites, ExecutionChanged
from engine.run.concurrency import Concurrency
from engine.run.next_step import (
    AskReviewer,
    AwaitReviewer,
    FailRun,
    FinishWait,
    GoOn,
    HandleFailure,
    ReviewStart,
    RunAction,
    RunChildren,
    RunFallback,
    RunFlow,
    Skip,
    StartWait,
    SuspendUntil,
    UseRecorded,
    after_failure,
    condition_holds,
    holds_for_error,
    next_step,
    retry_after,
    start_review,
    timers_due,
)
from engine.run.timers import Scheduler
from engine.state import audit
from engine.state.execution import (
    LEASE_MS,
    ExecutionState,
    ExecutionStatus,
    StepResult,
    StepStatus,
    dumps,
    epoch_ms,
    iso,
    parse_iso,
    review_request,
    utcnow,
)
from engine.state.store import Change, Store
from engine.steps.composition import OutputsEmitted

log = logging.getLogger(__name__)

RUNNABLE = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.WAITING)


class _Suspend(Exception):
    """The run pauses here (input, a timer or a retry delay); a later job resumes it."""


class _RunFailed(Exception):
    def __init__(self, message: str, step: str | None = None, *, final: bool = False,
                 loop: str | None = None) -> None:
        self.step = step
        self.final = final  # `workflow.fail`: no loop's `iteration-on-failure` catches it
        self.loop = loop  # the loop (its path) whose own `timeout` expired: not its iterations'
        super().__init__(message)


class _LoopExit(Exception):
    """A ``loop.break`` (``how="break"``) or ``loop.continue`` left the current iteration."""

    def __init__(self, how: str) -> None:
        self.how = how
        super().__init__(how)


@dataclass(frozen=True)
class _Deadline:
    """When the iteration (or the whole loop, ``loop`` its path) a step runs in times out."""

    at: datetime
    message: str
    loop: str | None = None

class _RunEnded(Exception):
    """``workflow.output`` ended the run with ``status`` (its outputs are on the state)."""

    def __init__(self, status: ExecutionStatus, error: str | None, step: str) -> None:
        self.status = status
        self.error = error
        self.step = step
        super().__init__(error or status.value)


_OUTPUT_STATUS = {"completed": ExecutionStatus.COMPLETED, "cancelled": ExecutionStatus.CANCELLED,
                  "failed": ExecutionStatus.FAILED}
_END_EVENT = {ExecutionStatus.COMPLETED: audit.COMPLETED, ExecutionStatus.CANCELLED: audit.CANCELLED,
              ExecutionStatus.FAILED: audit.FAILED}


# What enclosing flow steps add to the scope of their children (``foreach``).
_Frame = Mapping[str, Any]
_NO_FRAME: _Frame = {}


class Runner:
    """Advances executions; one instance per worker process."""

    def __init__(self, store: Store, scheduler: Scheduler, notifier: Notifier,
                 load_workflow: Callable[[str], Workflow],
                 clock: Callable[[], datetime] = utcnow, lease_ms: int = LEASE_MS,
                 egress: EgressPolicy = DEFAULT_POLICY,
                 find_workflow: Callable[[str], Workflow] | None = None,
                 end_execution: Callable[[str, str], object] | None = None) -> None:
        self.store = store
        self.scheduler = scheduler
        self.notifier = notifier
        self.load_workflow = load_workflow  # digest -> Workflow
        self.clock = clock
        self.lease_ms = lease_ms
        self.egress = egress  # handed to every step: where http steps may connect
        self.find_workflow = find_workflow  # name -> Workflow (the catalog): workflow.execute
        self.end_execution = end_execution  # (id, reason): time out a parallel branch
        self.concurrency = Concurrency(store, scheduler, load_workflow, clock, lease_ms)

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
            if segment is None or not segment.writes.released:
                self.store.release_lease(execution_id, token)


class _Segment:
    """One job's worth of progress on one execution, holding its lease."""

    def __init__(self, runner: Runner, state: ExecutionState, workflow: Workflow,
                 token: str) -> None:
        self.r = runner
        self.state = state
        self.workflow = workflow
        self.now = runner.clock
        self.step_scope: dict[str, Any] = {}
        self.scope: dict[str, Any] = {
            "event": state.event,
            "inputs": input_values(workflow, state.event),
            "consts": dict(workflow.consts),
            "variables": state.variables,
            "steps": self.step_scope,
            "execution": {"id": state.id, "startedAt": state.started_at},
            "workflow": {"name": workflow.name},
        }
        self.base_lease_ms = runner.lease_ms
        self.writes = BufferedWrites(runner.store, state, token, runner.lease_ms)
        self.loops: list[str] = []  # the loops the walk is in, innermost last (loop.break)
        self.deadlines: list[_Deadline] = []  # of the iterations and loops the walk is in
        self.body, self.body_frame = self._body()

    def _body(self) -> tuple[tuple[Step, ...], _Frame]:
        """The steps this run runs: all of them, or a parallel branch's (engine.run.branches),
        in the scope its parent had when it started the branch."""
        link = self.state.parent
        if link is None or link.branch is None:
            return self.workflow.steps, _NO_FRAME
        scope = link.scope or {}
        self.step_scope.update(scope.get("steps") or {})
        step = self.workflow.step(str(scope.get("step")))
        steps = step.branches[link.branch].steps if step.branches else step.steps
        return steps, scope.get("frame") or _NO_FRAME

    # -- the segment -------------------------------------------------------------------------

    def run(self) -> ExecutionStatus:
        state = self.state
        try:
            if state.status is ExecutionStatus.PENDING:
                self._mark_running(audit.STARTED, guard=ExecutionStatus.PENDING)
            elif state.status is ExecutionStatus.WAITING:
                self._wake_timers()
            try:
                self._run_steps(self.body, "", self.body_frame)
            except _RunFailed as failure:
                if self.body is self.workflow.steps:  # a branch is not the whole run
                    self._run_workflow_fallback()
                self._finish(ExecutionStatus.FAILED, audit.FAILED, error=str(failure),
                             step=failure.step)
                return state.status
            except _RunEnded as ended:
                self._finish(ended.status, _END_EVENT[ended.status], error=ended.error,
                             step=ended.step)
                return state.status
            self._finish(ExecutionStatus.COMPLETED, audit.COMPLETED)
        except _Suspend:
            self.writes.flush()
        except ExecutionChanged:
            pass
        return state.status

    def _wake_timers(self) -> None:
        due = timers_due(self.state.results, self.now())
        if isinstance(due, SuspendUntil):
            self._suspend_until(due.wake_at)
        for path in due.paths:
            self._mark_running(audit.TIMER_FIRED, guard=ExecutionStatus.WAITING, step=path)
        if not due.paths:  # parked for child executions (engine.run.children): look again
            self._mark_running(audit.WOKEN, guard=ExecutionStatus.WAITING)

    def _mark_running(self, kind: str, *, guard: ExecutionStatus, **data: Any) -> None:
        self.writes.commit(Change(status=ExecutionStatus.RUNNING, running="add",
                                  running_score=epoch_ms(self.now()) + self.base_lease_ms,
                                  events=[self._event(kind, **data)]),
                           guard=(guard,), buffer=True)

    def _finish(self, status: ExecutionStatus, kind: str, *, error: str | None = None,
                step: str | None = None) -> None:
        finished = iso(self.now())
        assert finished is not None
        change = Change(status=status, running="remove", set={"t1": finished},
                        events=[self._event(kind, error=error, step=step)])
        if error:
            change.set["err"] = error
        if self.state.outputs is not None:
            change.set["out"] = dumps(self.state.outputs)
        parent_timer = children.report_end(
            change, self.state, status, self.now(), outputs=self._run_outputs(), error=error,
            steps={s.name: self.step_scope[s.name] for s in self.body if s.name in self.step_scope}
            if self.body is not self.workflow.steps else None)
        self.writes.commit(change, guard=(ExecutionStatus.RUNNING,), release=True)
        self.state.finished_at = finished
        children.wake_parent(self.r.store, self.r.scheduler, parent_timer)
        self.r.concurrency.ended(self.state, self.workflow)  # its slot goes to the next run

    def _run_outputs(self) -> Any:
        """What the run gives its caller: what `workflow.output` emitted, else (as Kibana)
        the output of the last top-level step that ran."""
        if self.state.outputs is not None:
            return self.state.outputs
        for step in reversed(self.body):
            entry = self.step_scope.get(step.name)
            if entry is not None and entry.get("status") == StepStatus.COMPLETED.value:
                return entry.get("output")
        return None

    # -- walking -----------------------------------------------------------------------------

    def _run_steps(self, steps: tuple[Step, ...], prefix: str, frame: _Frame) -> None:
        for step in steps:
            self._run_step(step, prefix + step.name, prefix, frame)

    def _run_step(self, step: Step, path: str, prefix: str, frame: _Frame) -> None:
        decision = next_step(step, path, get_step_type(step.type), self.state.results.get(path),
                             self._scope(frame), self.now())
        expired = self._expired_deadline() if _starts_work(decision) else None
        if expired is not None:
            self._time_out(step, path, expired)
        match decision:
            case UseRecorded(result):
                self._expose(step, result)
            case HandleFailure(result):
                self._expose(step, result)
                timed_out = result.output.get("loopDeadline") if isinstance(result.output,
                                                                            Mapping) else None
                if isinstance(timed_out, Mapping):  # its loop's deadline, not its own failure
                    raise _RunFailed(result.error or "timed out", step=path,
                                     loop=timed_out.get("loop"))
                self._after_failure(step, path, prefix, frame, result)
            case Skip(result):
                self._record(step, path, result, audit.STEP_SKIPPED, buffer=True)
            case FailRun(message, failed_step):
                raise _RunFailed(message, step=failed_step)
            case SuspendUntil(wake_at):
                self._suspend_until(wake_at)
            case AwaitReviewer():
                raise _Suspend
            case AskReviewer():
                self._ask_reviewer(step, path, prefix, frame)
            case StartWait():
                self._start_wait(step, path, prefix, frame)
            case FinishWait(result):
                self._record(step, path, result, audit.STEP_COMPLETED)
            case RunAction():
                self._run_action(decision, step, path, prefix, frame)
            case RunFlow(spec, started):
                self._run_flow(spec, step, path, prefix, frame, started)
            case RunChildren(spec, recorded):
                run = branches.run_parallel if step.type == "parallel" else children.run_call
                run(self, step, path, prefix, frame, recorded)
            case _:
                assert_never(decision)

    def _record(self, step: Step, path: str, result: StepResult, kind: str, *,
                buffer: bool = False, unwritten: Sequence[dict[str, Any]] = (),
                **data: Any) -> None:
        """Commit ``result`` for the step at ``path`` with its audit event (after the
        ``unwritten`` ones), and expose it."""
        events = [*unwritten, self._event(kind, step=path, **data)]
        self.writes.commit(Change(events=events).step(path, result), buffer=buffer)
        self._expose(step, result)

    def _expose(self, step: Step, result: StepResult) -> None:
        self.step_scope[step.name] = result.scope_entry()

    def _scope(self, frame: _Frame) -> dict[str, Any]:
        return {**self.scope, **frame} if frame else self.scope

    def _options(self, step: Step, frame: _Frame, raw: tuple[str, ...] = ()) -> dict[str, Any]:
        """The step's ``with``, its templates rendered but for the ``raw`` keys."""
        scope = self._scope(frame)
        return {key: value if key in raw else render_value(value, scope)
                for key, value in step.with_.items()}

    def _holds(self, condition: Condition, step: Step, frame: _Frame) -> bool:
        holds = condition_holds(condition, step, self._scope(frame))
        if isinstance(holds, FailRun):
            raise _RunFailed(holds.message, step=holds.step)
        return holds

    def _evaluate(self, step: Step, expression: str, frame: _Frame) -> Any:
        try:
            return evaluate_expression(expression, self._scope(frame))
        except TemplateError as exc:
            raise _RunFailed(f"expression of step {step.name!r} failed: {exc}",
                             step=step.name) from exc

    def _suspend_until(self, wake: datetime) -> NoReturn:
        """Let go; the scheduler advances the run again at ``wake``."""
        self.r.scheduler.advance_at(self.state.id, wake)
        raise _Suspend

    def _park_until(self, wake: datetime, change: Change) -> NoReturn:
        """Commit ``change`` with the run parked in WAITING and a timer to wake it; let go."""
        timer = timers.advance_timer(self.state.id, wake)
        change.status, change.running = ExecutionStatus.WAITING, "remove"
        change.zadd.append(timer.entry)
        self.writes.commit(change, guard=(ExecutionStatus.RUNNING,))
        self.r.scheduler.schedule(timer)
        children.nudge_parent(self.r.scheduler, self.state)
        raise _Suspend

    # -- flow control ------------------------------------------------------------------------

    def _run_flow(self, spec: StepType, step: Step, path: str, prefix: str, frame: _Frame,
                  started: StepResult | None) -> None:
        assert spec.flow is not None  # the registry refuses a flow step without one
        flow = _FlowRun(self, step, path, prefix, frame, started)
        try:
            try:
                spec.flow(flow)
            except StepFailed as exc:
                raise _RunFailed(str(exc), step=path) from exc
        except _LoopExit:
            self._complete_flow(step, path, flow)  # a loop.break/continue ends it here
            raise
        except _RunFailed as failure:
            if step.on_failure is None or failure.final:
                raise
            # Its own on-failure wraps the whole flow step, as in Kibana: recorded failed,
            # it is not walked again on a replay, and `continue` or `fallback` decide.
            base = flow.started or StepResult(status=StepStatus.RUNNING,
                                              started_at=iso(self.now()))
            failed = base.evolve(status=StepStatus.FAILED, error=str(failure),
                                 finished_at=iso(self.now()))
            self._record(step, path, failed, audit.STEP_FAILED, error=str(failure))
            self._after_failure(step, path, prefix, frame, failed)
            return
        self._complete_flow(step, path, flow)

    def _complete_flow(self, step: Step, path: str, flow: _FlowRun) -> None:
        started = flow.started
        if started is not None and started.status is StepStatus.COMPLETED:
            self._expose(step, started)  # a replay: its children are back in scope
            return
        started = started or self._start_flow(step, path, {})
        done = started.evolve(status=StepStatus.COMPLETED, finished_at=iso(self.now()))
        self._record(step, path, done, audit.STEP_COMPLETED, buffer=True)

    # -- loop deadlines ----------------------------------------------------------------------

    def _expired_deadline(self) -> _Deadline | None:
        if not self.deadlines:
            return None
        first = min(self.deadlines, key=lambda deadline: deadline.at)
        return first if self.now() >= first.at else None

    def _time_out(self, step: Step, path: str, deadline: _Deadline) -> NoReturn:
        """The step at ``path`` is reached (or woken) after its iteration's or loop's
        deadline: it fails with the deadline's message, past its own ``on-failure``."""
        now = iso(self.now())
        recorded = self.state.results.get(path)
        failed = StepResult(status=StepStatus.FAILED, error=deadline.message,
                            output={"loopDeadline": {"loop": deadline.loop}},
                            started_at=recorded.started_at if recorded else now, finished_at=now,
                            attempts=recorded.attempts if recorded else 0)
        self._record(step, path, failed, audit.STEP_FAILED, error=deadline.message)
        raise _RunFailed(deadline.message, step=path, loop=deadline.loop)

    def _review_within_deadline(self, review: ReviewStart, path: str) -> ReviewStart:
        """A review asked inside a timed iteration (or loop) is due at its deadline, if that
        is sooner than its own: a timer then applies the step's ``on-timeout``."""
        if not self.deadlines:
            return review
        deadline = min(deadline.at for deadline in self.deadlines)
        due = parse_iso(review.waiting.due_at)
        if due is not None and due <= deadline:
            return review
        return replace(review, waiting=replace(review.waiting, due_at=iso(deadline)),
                       timers=(*review.timers, timers.step_timeout_timer(self.state.id, path,
                                                                         deadline)))

    def _within_deadline(self, wake: datetime) -> datetime:
        """``wake``, or the deadline of the iteration the walk is in when that is sooner: a
        timer or a retry's delay inside it wakes the run then, to time the iteration out."""
        if not self.deadlines:
            return wake
        return min(wake, *(deadline.at for deadline in self.deadlines))

    def _start_flow(self, step: Step, path: str, output: dict[str, Any]) -> StepResult:
        result = StepResult(status=StepStatus.RUNNING, output=output, started_at=iso(self.now()))
        self._record(step, path, result, audit.STEP_STARTED, buffer=True, output=output)
        return result

    # -- actions -----------------------------------------------------------------------------

    def _run_action(self, action: RunAction, step: Step, path: str, prefix: str,
                    frame: _Frame) -> None:
        spec, attempt = action.spec, action.attempt
        assert spec.run is not None  # the registry refuses an action without one
        started_event = self._event(audit.STEP_STARTED, step=path, attempt=attempt,
                                    recovered=True if action.recovered else None)
        running = StepResult(status=StepStatus.RUNNING, started_at=iso(self.now()),
                             attempts=attempt)
        # A pure step's start is written with its end; the start of one with effects first:
        # if it crashes mid-way, the trail shows it started and not finished, and it is
        # retried from here.
        unwritten = [started_event] if spec.pure else []
        if not spec.pure:
            if step.timeout is not None:  # the lease outlasts the step's own timeout
                self.writes.lease_ms = int(step.timeout.total_seconds() * 1000) + self.base_lease_ms
            self.writes.commit(Change(events=[started_event]).step(path, running))
        try:
            options = self._options(step, frame, spec.raw_options)
            scope = self._scope(frame)
            ctx = StepContext(options=options, execution_id=self.state.id, step_name=step.name,
                              step_path=path, attempt=attempt, connector_id=step.connector_id,
                              timeout_seconds=self._action_timeout(step), egress=self.r.egress,
                              params=render_value(dict(step.params), scope),
                              render=lambda value, names: render_value(value, {**scope, **names}))
            output = spec.run(ctx)
            self._check_size(step, output)
        except WorkflowFailRequested as exc:
            self._record_failure(step, path, running, str(exc), unwritten)
            raise _RunFailed(str(exc), step=path, final=True) from exc
        except OutputsEmitted as emitted:
            self._emit_outputs(step, path, prefix, frame, running, emitted, unwritten)
            return
        except (StepFailed, TemplateError) as exc:
            self._fail_attempt(step, path, prefix, frame, running, exc, unwritten)
            return
        except Exception as exc:  # a custom step's bug must not kill the worker loop
            log.exception("step %s of %s raised", path, self.state.id)
            failure = StepFailed(f"{type(exc).__name__}: {exc}")
            self._fail_attempt(step, path, prefix, frame, running, failure, unwritten)
            return
        done = running.evolve(status=StepStatus.COMPLETED, output=_jsonable(output),
                              finished_at=iso(self.now()), error=None)
        change = Change(events=[*unwritten, self._event(audit.STEP_COMPLETED, step=path)]
                        ).step(path, done)
        if spec.sets_variables and isinstance(output, Mapping):
            self.state.variables.update(output)
            change.set["v"] = dumps(self.state.variables)
        self.writes.lease_ms = self.base_lease_ms
        self.writes.commit(change, buffer=spec.pure)
        self._expose(step, done)

    def _action_timeout(self, step: Step) -> float | None:
        """The step's ``timeout``, or the time left to its iteration's deadline if shorter."""
        limits = [step.timeout] if step.timeout is not None else []
        if self.deadlines:
            limits.append(self._within_deadline(self.now() + timedelta(days=366)) - self.now())
        return max(0.001, min(limits).total_seconds()) if limits else None

    def _emit_outputs(self, step: Step, path: str, prefix: str, frame: _Frame,
                      running: StepResult, emitted: OutputsEmitted,
                      unwritten: list[dict[str, Any]]) -> NoReturn | None:
        """`workflow.output`: the run ends with these outputs, if they are the declared ones."""
        problems = output_problems(self.workflow, emitted.values)
        if problems:
            listed = "; ".join(f"{p['output']}: {p['message']}" for p in problems)
            failure = StepFailed(f"the outputs of step {step.name!r} do not match the "
                                 f"workflow's declared outputs: {listed}", retryable=False)
            self._fail_attempt(step, path, prefix, frame, running, failure, unwritten)
            return None
        values = _jsonable(emitted.values)
        done = running.evolve(status=StepStatus.COMPLETED, output=values,
                              finished_at=iso(self.now()), error=None)
        self._record(step, path, done, audit.STEP_COMPLETED, buffer=True, unwritten=unwritten)
        self.state.outputs = values
        status = _OUTPUT_STATUS[emitted.status]
        error = (f"step {step.name!r} ended the run as {emitted.status}"
                 if status is not ExecutionStatus.COMPLETED else None)
        raise _RunEnded(status, error, path)

    def _check_size(self, step: Step, output: Any) -> None:
        """StepFailed when ``output`` is larger than the step's ``max-step-size`` (or the
        workflow's ``settings.max-step-size``), as JSON."""
        limit = step.max_step_size or self.workflow.settings.max_step_size
        if limit is None:
            return
        size = len(json.dumps(_jsonable(output), default=str).encode("utf-8"))
        if size > limit:
            raise StepFailed(f"the output of step {step.name!r} is {size} bytes as JSON, more "
                             f"than its max-step-size of {limit} bytes", retryable=False)

    def _fail_attempt(self, step: Step, path: str, prefix: str, frame: _Frame,
                      running: StepResult, exc: StepFailed | TemplateError,
                      unwritten: list[dict[str, Any]]) -> None:
        message = str(exc)
        retry = retry_after(step, running, message, getattr(exc, "retryable", False), self.now(),
                            self._scope(frame), random.random())
        if retry is None:
            failed = self._record_failure(step, path, running, message, unwritten,
                                          details=getattr(exc, "details", None))
            self._after_failure(step, path, prefix, frame, failed)
            return
        if self._within_deadline(retry.wake_at) < retry.wake_at:
            wake = self._within_deadline(retry.wake_at)
            retry = replace(retry, wake_at=wake, waiting=retry.waiting.evolve(wake_at=iso(wake)))
        change = Change(events=[*unwritten, self._event(
            audit.STEP_RETRY, step=path, error=message, attempt=running.attempts,
            retryAt=iso(retry.wake_at))]).step(path, retry.waiting)
        if not retry.immediately:
            self._park_until(retry.wake_at, change)
        self.writes.commit(change)
        self._run_step(step, path, prefix, frame)

    def _record_failure(self, step: Step, path: str, running: StepResult, message: str,
                        unwritten: list[dict[str, Any]], details: Any = None) -> StepResult:
        failed = running.evolve(status=StepStatus.FAILED, error=message,
                                output=_jsonable(details), finished_at=iso(self.now()))
        self._record(step, path, failed, audit.STEP_FAILED, unwritten=unwritten, error=message,
                     attempt=running.attempts or None)
        return failed

    def _after_failure(self, step: Step, path: str, prefix: str, frame: _Frame,
                       failed: StepResult) -> None:
        outcome = after_failure(step, path, failed, self._scope(frame))
        match outcome:
            case GoOn():
                pass
            case RunFallback(fallback):
                self._run_steps(fallback, prefix, frame)
            case FailRun(message, failed_step):
                raise _RunFailed(message, step=failed_step)
            case _:
                assert_never(outcome)

    def _run_workflow_fallback(self) -> None:
        policy = self.workflow.settings.on_failure
        if policy is None or not policy.fallback:
            return
        try:
            self._run_steps(policy.fallback, "", _NO_FRAME)
        except _RunFailed as exc:
            log.warning("workflow fallback of %s failed: %s", self.state.id, exc)

    # -- timers ------------------------------------------------------------------------------

    def _start_wait(self, step: Step, path: str, prefix: str, frame: _Frame) -> None:
        try:
            options = self._options(step, frame)
            wake = self._within_deadline(self.now() + parse_duration(options["duration"]))
        except (TemplateError, DurationError) as exc:
            self._fail_unstarted(step, path, prefix, frame, f"with.duration: {exc}")
            return
        waiting = StepResult(status=StepStatus.WAITING, started_at=iso(self.now()),
                             wake_at=iso(wake))
        self._park_until(wake, Change(events=[self._event(audit.TIMER_SET, step=path,
                                                          wakeAt=iso(wake))]).step(path, waiting))

    # -- humans ------------------------------------------------------------------------------

    def _ask_reviewer(self, step: Step, path: str, prefix: str, frame: _Frame) -> None:
        now = self.now()
        try:
            options = self._options(step, frame)
            review = start_review(step, path, options, self.state.id, now, self._run_deadline())
        except (TemplateError, DurationError) as exc:
            self._fail_unstarted(step, path, prefix, frame, str(exc))
            return
        review = self._review_within_deadline(review, path)
        waiting = review.waiting
        change = Change(
            set={"w": waiting.to_json()}, status=ExecutionStatus.WAITING_FOR_INPUT,
            waiting="add", waiting_score=epoch_ms(now), running="remove",
            events=[self._event(audit.WAITING_FOR_INPUT, step=path, message=waiting.message,
                                sha256=waiting.message_sha256, dueAt=waiting.due_at,
                                slaDueAt=waiting.level_due,
                                approvers=list(waiting.approvers) or None)],
            zadd=[timer.entry for timer in review.timers],  # a timer is never lost with its worker
        ).step(path, review.result)
        self.writes.commit(change, guard=(ExecutionStatus.RUNNING,), release=True)
        self.state.waiting = waiting
        for timer in review.timers:
            self.r.scheduler.schedule(timer)
        try:
            self.r.notifier.review_waiting(review_request(self.state, waiting))
        except Exception:  # the review stays listed and can be redelivered
            log.exception("notifier failed for %s", self.state.id)
        raise _Suspend

    def _fail_unstarted(self, step: Step, path: str, prefix: str, frame: _Frame,
                        message: str) -> None:
        """A timer or human step whose options do not render (a template error, a duration
        that is not one) fails for good, as an action's would: its on-failure decides."""
        now = iso(self.now())
        failed = StepResult(status=StepStatus.FAILED, error=message, started_at=now,
                            finished_at=now)
        self._record(step, path, failed, audit.STEP_FAILED, error=message)
        self._after_failure(step, path, prefix, frame, failed)

    def _run_deadline(self) -> datetime | None:
        timeout = self.workflow.settings.timeout
        started = parse_iso(self.state.started_at)
        return started + timeout if timeout is not None and started is not None else None

    # -- writing -----------------------------------------------------------------------------

    def _event(self, kind: str, **data: Any) -> dict[str, Any]:
        return audit.event(kind, iso(self.now()) or "", **data)


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

    def holds(self, condition: Condition, scope: Mapping[str, Any] | None = None) -> bool:
        frame = {**self._frame, **scope} if scope else self._frame
        return self._segment._holds(condition, self._step, frame)

    def progress(self, update: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
        started = self.started
        assert started is not None  # a loop chooses first
        if update and started.status is not StepStatus.COMPLETED:
            started = self.started = started.evolve(output={**(started.output or {}), **update})
            self._segment.writes.commit(Change().step(self._path, started), buffer=True)
        output: Mapping[str, Any] = started.output or {}
        return output

    def exit_loop(self, how: str) -> None:
        loops = self._segment.loops
        assert loops  # `signoff validate` refuses a loop control outside any loop
        self.choose(lambda: {"navigateToNode": loops[-1]})  # what Kibana records
        raise _LoopExit(how)

    def run_iteration(self, steps: tuple[Step, ...], *, index: int, prefix: str,
                      scope: Mapping[str, Any]) -> bool:
        segment = self._segment
        frame = {**self._frame, **scope}
        segment.loops.append(f"exit{self._step.type.capitalize()}_{self._step.name}")
        try:
            attempt = 1
            while True:
                # A retried iteration runs its steps again under new paths: loop[1]#2.check
                at = prefix if attempt == 1 else f"{prefix[:-1]}#{attempt}."
                try:
                    self._run_attempt(steps, index, attempt, at, frame)
                    return False
                except _LoopExit as exit_:
                    return exit_.how == "break"
                except _RunFailed as failure:
                    if not self._retry_iteration(failure, index, attempt, frame):
                        return self._iteration_failed(failure, at, frame)
                attempt += 1
        finally:
            segment.loops.pop()

    def _run_attempt(self, steps: tuple[Step, ...], index: int, attempt: int, prefix: str,
                     frame: _Frame) -> None:
        segment = self._segment
        deadlines = self._iteration_deadlines(index, attempt)
        segment.deadlines.extend(deadlines)
        try:
            segment._run_steps(steps, prefix, frame)
        finally:
            del segment.deadlines[len(segment.deadlines) - len(deadlines):]

    def _retry_iteration(self, failure: _RunFailed, index: int, attempt: int,
                         frame: _Frame) -> bool:
        """Whether ``iteration-on-failure.retry`` runs iteration ``index`` again after its
        attempt ``attempt`` failed. The decision is recorded in the loop's output
        (``retried``: the last attempt of each iteration retried); a delay parks the run
        with the loop's record WAITING, as a step's retry does, and a replay after it goes
        straight on to the next attempt."""
        policy = self._step.iteration_on_failure
        retry = policy.retry if policy is not None else None
        if retry is None or failure.final or failure.loop == self._path \
                or attempt >= retry.max_attempts:
            return False
        segment, started = self._segment, self.started
        assert started is not None  # a loop chooses first
        retried = dict(self.progress().get("retried") or {})
        if int(retried.get(str(index), 1)) > attempt:  # decided on an earlier pass
            if started.status is StepStatus.WAITING:  # and its delay is over: go on
                self.started = started.evolve(status=StepStatus.RUNNING, wake_at=None)
                segment.writes.commit(Change().step(self._path, self.started), buffer=True)
            return True
        if retry.condition is not None and not holds_for_error(
                retry.condition, str(failure), segment._scope(frame)):
            return False
        retried[str(index)] = attempt + 1
        self.progress({"retried": retried})
        now = segment.now()
        wake = now + retry.delay_before(attempt + 1, random.random())
        if wake > now:
            assert self.started is not None
            waiting = self.started.evolve(status=StepStatus.WAITING, wake_at=iso(wake))
            self.started = waiting
            segment._park_until(wake, Change(events=[segment._event(
                audit.STEP_RETRY, step=self._path, error=str(failure), iteration=index,
                attempt=attempt, retryAt=iso(wake))]).step(self._path, waiting))
        return True

    def _iteration_failed(self, failure: _RunFailed, prefix: str, frame: _Frame) -> bool:
        """The loop's ``iteration-on-failure`` for an iteration that failed the run: its
        fallback runs, or it goes on, or the failure stands. True when a loop.break ran."""
        policy = self._step.iteration_on_failure
        if policy is None or failure.final or failure.loop == self._path:
            raise failure
        if policy.fallback:
            try:
                self._segment._run_steps(policy.fallback, prefix, frame)
            except _LoopExit as exit_:
                return exit_.how == "break"
            return False
        if policy.continue_ or policy.continue_if is not None and holds_for_error(
                policy.continue_if, str(failure), self._segment._scope(frame)):
            return False
        raise failure

    def _iteration_deadlines(self, index: int, attempt: int) -> list[_Deadline]:
        """The deadlines attempt ``attempt`` of iteration ``index`` runs under: its
        ``iteration-timeout`` (from its start, recorded by the first pass that enters it),
        the loop's ``timeout``. One that finished on an earlier pass has none: it replays."""
        started = self.started
        assert started is not None  # a loop chooses first
        step = self._step
        recorded = started.output if isinstance(started.output, Mapping) else {}
        timed = recorded.get("timedIteration")
        timed = tuple(timed) if isinstance(timed, list) else (-1, 0)
        if started.status is StepStatus.COMPLETED or timed > (index, attempt):
            return []
        deadlines = []
        if step.iteration_timeout is not None:
            if timed != (index, attempt):
                recorded = self.progress({"timedIteration": [index, attempt],
                                          "iterationStartedAt": iso(self._segment.now())})
            begun = parse_iso(recorded.get("iterationStartedAt")) or self._segment.now()
            deadlines.append(_Deadline(
                begun + step.iteration_timeout,
                f"TimeoutError: iteration {index} of step {step.name!r} exceeded its "
                f"iteration-timeout of {_seconds(step.iteration_timeout)}"))
        loop_started = parse_iso(started.started_at)
        if step.timeout is not None and loop_started is not None:
            deadlines.append(_Deadline(
                loop_started + step.timeout,
                f"TimeoutError: step {step.name!r} exceeded its timeout of "
                f"{_seconds(step.timeout)}", loop=self._path))
        return deadlines

    def run_steps(self, steps: tuple[Step, ...], *, prefix: str | None = None,
                  scope: Mapping[str, Any] | None = None,
                  on_failure: FailurePolicy | None = None) -> None:
        frame = {**self._frame, **scope} if scope else self._frame
        prefix = self._prefix if prefix is None else prefix
        try:
            self._segment._run_steps(steps, prefix, frame)
        except _RunFailed as failure:
            # A replay fails the same way and is caught the same way, so the run keeps
            # taking the same path.
            if on_failure is None or failure.final:
                raise
            if on_failure.fallback:
                self._segment._run_steps(on_failure.fallback, prefix, frame)
            elif not (on_failure.continue_ or on_failure.continue_if is not None and holds_for_error(
                    on_failure.continue_if, str(failure), self._segment._scope(frame))):
                raise


def _starts_work(decision: object) -> bool:
    """Whether ``decision`` runs, waits on or starts something (not a replay or a skip)."""
    if isinstance(decision, RunFlow):
        return decision.started is None
    return isinstance(decision, RunAction | StartWait | FinishWait | AskReviewer | SuspendUntil)


def _seconds(duration: timedelta) -> str:
    return f"{duration.total_seconds():g}s"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)
