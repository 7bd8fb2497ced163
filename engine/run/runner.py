"""Advance one execution through its steps until it pauses or ends.

A run is replayed from the top on every segment: steps with a recorded result are
not run again (their output is put back in scope), so a worker that dies mid-run
leaves nothing to undo; the next worker re-runs only the step that was
interrupted. Steps are therefore at-least-once.

What to do with each step is decided by :func:`engine.run.next_step.next_step`, pure,
from the definition, the recorded results and the clock; a segment here does what it
says and commits through the store, each result with its audit events, atomically.
The results of pure steps (console, data.set, skips, the choices of flow steps) are
buffered and written with the next write that must happen anyway (a pause, a step with
effects, the end): a crash before it only makes them run again
(:mod:`engine.run.buffered_writes`).

The segment walks the steps and handles pauses (timers, reviews), failures and the end of
the run itself; it hands actions to :mod:`engine.run.actions`, flow steps and loops to
:mod:`engine.run.flow_steps`, child executions to :mod:`engine.run.children` and parallel
branches to :mod:`engine.run.branches`, which see it as a :class:`engine.run.walk.Walk`.
Inside a timed loop iteration (:mod:`engine.run.loop_deadlines`) every step boundary checks
its deadline: a step that would run, wait or wake after it fails in its place, and that
failure is recorded so a replay fails there too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn, assert_never

from engine.definition.conditions import Condition
from engine.definition.durations import parse_duration
from engine.definition.egress import DEFAULT_POLICY, EgressPolicy
from engine.definition.inputs import input_values
from engine.definition.model import Step, Workflow
from engine.definition.step_types import get_step_type
from engine.definition.templates import evaluate_expression, render_value
from engine.errors import DurationError, TemplateError
from engine.notify import Notifier
from engine.run import actions, branches, children, flow_steps, loop_deadlines, timers
from engine.run.buffered_writes import BufferedWrites, Deferred, ExecutionChanged
from engine.run.concurrency import Concurrency
from engine.run.loop_deadlines import Deadline
from engine.run.next_step import (
    AskReviewer,
    AwaitReviewer,
    FailRun,
    FinishWait,
    GoOn,
    HandleFailure,
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
    next_step,
    start_review,
    timers_due,
)
from engine.run.timers import Scheduler
from engine.run.walk import NO_FRAME, Frame, RunEnded, RunFailed, Suspend
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

log = logging.getLogger(__name__)

RUNNABLE = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.WAITING)

_END_EVENT = {ExecutionStatus.COMPLETED: audit.COMPLETED, ExecutionStatus.CANCELLED: audit.CANCELLED,
              ExecutionStatus.FAILED: audit.FAILED}


class Runner:
    """Advances executions; one instance per worker process."""

    def __init__(self, store: Store, scheduler: Scheduler, notifier: Notifier,
                 load_workflow: Callable[[str], Workflow],
                 clock: Callable[[], datetime] = utcnow, lease_ms: int = LEASE_MS,
                 egress: EgressPolicy = DEFAULT_POLICY,
                 find_workflow: Callable[[str], Workflow] | None = None,
                 end_execution: Callable[[str, str], object] | None = None,
                 connections: Mapping[str, Any] | None = None) -> None:
        self.store = store
        self.scheduler = scheduler
        self.notifier = notifier
        self.load_workflow = load_workflow  # digest -> Workflow
        self.clock = clock
        self.lease_ms = lease_ms
        self.egress = egress  # handed to every step: where http steps may connect
        self.find_workflow = find_workflow  # name -> Workflow (the catalog): workflow.execute
        self.end_execution = end_execution  # (id, reason): time out a parallel branch
        # SIGNOFF_CONNECTORS by connector id, handed to every action (StepContext.connection)
        self.connections: Mapping[str, Any] = dict(connections or {})
        self.concurrency = Concurrency(store, scheduler, load_workflow, clock, lease_ms)

    def advance(self, execution_id: str) -> ExecutionStatus | None:
        """Run the execution's next segment; returns its status afterwards (None if busy).
        Its lease and the run are taken here, in one round trip."""
        token, state = self.store.acquire_lease_and_load(execution_id, self.lease_ms)
        if token is None:
            return None  # another worker holds it; if that worker dies the sweeper re-enqueues
        segment = None
        try:
            if state.status not in RUNNABLE:
                self.store.forget_runnable(execution_id)
                return state.status
            workflow = self.load_workflow(state.digest)
            segment = _Segment(self, state, workflow,
                               BufferedWrites(self.store, state, token, self.lease_ms))
            return segment.run()
        finally:
            if segment is None or not segment.writes.released:
                self.store.release_lease(execution_id, token)

    def continue_decided(self, deferred: Deferred) -> ExecutionStatus:
        """Continue a run from a decision not yet written (a click's worker, which decided
        it): the segment's first write carries the decision with the pure steps after it,
        claiming the run's lease (:class:`engine.run.buffered_writes.Deferred`). Raises
        DecisionRaced, nothing written, when the run changed since the decider read it."""
        state = deferred.state
        workflow = self.load_workflow(state.digest)
        writes = BufferedWrites.deciding(self.store, deferred, self.lease_ms)
        segment = _Segment(self, state, workflow, writes)
        try:
            return segment.run()
        finally:
            if writes.deferred is None and not writes.released:
                self.store.release_lease(state.id, writes.token)


class _Segment:
    """One segment's worth of progress on one execution (an inbox task, or a timer's RQ
    job), holding its lease: the :class:`engine.run.walk.Walk` its step handlers see."""

    def __init__(self, runner: Runner, state: ExecutionState, workflow: Workflow,
                 writes: BufferedWrites) -> None:
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
        self.writes = writes
        self.loops: list[str] = []  # the loops the walk is in, innermost last (loop.break)
        self.deadlines: list[Deadline] = []  # of the iterations and loops the walk is in
        self.body, self.body_frame = self._body()

    def _body(self) -> tuple[tuple[Step, ...], Frame]:
        """The steps this run runs: all of them, or a parallel branch's (engine.run.branches),
        in the scope its parent had when it started the branch."""
        link = self.state.parent
        if link is None or link.branch is None:
            return self.workflow.steps, NO_FRAME
        scope = link.scope or {}
        self.step_scope.update(scope.get("steps") or {})
        step = self.workflow.step(str(scope.get("step")))
        steps = step.branches[link.branch].steps if step.branches else step.steps
        return steps, scope.get("frame") or NO_FRAME

    # -- the segment -------------------------------------------------------------------------

    def run(self) -> ExecutionStatus:
        state = self.state
        try:
            if state.status is ExecutionStatus.PENDING:
                self._mark_running(audit.STARTED, guard=ExecutionStatus.PENDING)
            elif state.status is ExecutionStatus.WAITING:
                self._wake_timers()
            try:
                self.run_steps(self.body, "", self.body_frame)
            except RunFailed as failure:
                if self.body is self.workflow.steps:  # a branch is not the whole run
                    self._run_workflow_fallback()
                self._finish(ExecutionStatus.FAILED, audit.FAILED, error=str(failure),
                             step=failure.step)
                return state.status
            except RunEnded as ended:
                self._finish(ended.status, _END_EVENT[ended.status], error=ended.error,
                             step=ended.step)
                return state.status
            self._finish(ExecutionStatus.COMPLETED, audit.COMPLETED)
        except Suspend:
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
                                  events=[self.event(kind, **data)]),
                           guard=(guard,), buffer=True)

    def _finish(self, status: ExecutionStatus, kind: str, *, error: str | None = None,
                step: str | None = None) -> None:
        finished = iso(self.now())
        assert finished is not None
        change = Change(status=status, running="remove", set={"t1": finished},
                        events=[self.event(kind, error=error, step=step)])
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

    def run_steps(self, steps: tuple[Step, ...], prefix: str, frame: Frame) -> None:
        for step in steps:
            self.run_step(step, prefix + step.name, prefix, frame)

    def run_step(self, step: Step, path: str, prefix: str, frame: Frame) -> None:
        decision = next_step(step, path, get_step_type(step.type), self.state.results.get(path),
                             self.scope_for(frame), self.now())
        expired = (loop_deadlines.expired(self.deadlines, self.now())
                   if _starts_work(decision) else None)
        if expired is not None:
            self._time_out(step, path, expired)
        match decision:
            case UseRecorded(result):
                self.expose(step, result)
            case HandleFailure(result):
                self.expose(step, result)
                timed_out = result.output.get("loopDeadline") if isinstance(result.output,
                                                                            Mapping) else None
                if isinstance(timed_out, Mapping):  # its loop's deadline, not its own failure
                    raise RunFailed(result.error or "timed out", step=path,
                                    loop=timed_out.get("loop"))
                self.follow_on_failure(step, path, prefix, frame, result)
            case Skip(result):
                self.record(step, path, result, audit.STEP_SKIPPED, buffer=True)
            case FailRun(message, failed_step):
                raise RunFailed(message, step=failed_step)
            case SuspendUntil(wake_at):
                self._suspend_until(wake_at)
            case AwaitReviewer():
                raise Suspend
            case AskReviewer():
                self._ask_reviewer(step, path, prefix, frame)
            case StartWait():
                self._start_wait(step, path, prefix, frame)
            case FinishWait(result):
                self.record(step, path, result, audit.STEP_COMPLETED)
            case RunAction():
                actions.run_action(self, decision, step, path, prefix, frame, self.base_lease_ms)
            case RunFlow(spec, started):
                flow_steps.run_flow(self, spec, step, path, prefix, frame, started)
            case RunChildren(spec, recorded):
                run = branches.run_parallel if step.type == "parallel" else children.run_call
                run(self, step, path, prefix, frame, recorded)
            case _:
                assert_never(decision)

    def record(self, step: Step, path: str, result: StepResult, kind: str, *,
               buffer: bool = False, unwritten: Sequence[dict[str, Any]] = (),
               **data: Any) -> None:
        """Commit ``result`` for the step at ``path`` with its audit event (after the
        ``unwritten`` ones), and expose it."""
        events = [*unwritten, self.event(kind, step=path, **data)]
        self.writes.commit(Change(events=events).step(path, result), buffer=buffer)
        self.expose(step, result)

    def expose(self, step: Step, result: StepResult) -> None:
        self.step_scope[step.name] = result.scope_entry()

    def scope_for(self, frame: Frame) -> dict[str, Any]:
        return {**self.scope, **frame} if frame else self.scope

    def options(self, step: Step, frame: Frame, raw: tuple[str, ...] = ()) -> dict[str, Any]:
        """The step's ``with``, its templates rendered but for the ``raw`` keys."""
        scope = self.scope_for(frame)
        return {key: value if key in raw else render_value(value, scope)
                for key, value in step.with_.items()}

    def holds(self, condition: Condition, step: Step, frame: Frame) -> bool:
        holds = condition_holds(condition, step, self.scope_for(frame))
        if isinstance(holds, FailRun):
            raise RunFailed(holds.message, step=holds.step)
        return holds

    def evaluate(self, step: Step, expression: str, frame: Frame) -> Any:
        try:
            return evaluate_expression(expression, self.scope_for(frame))
        except TemplateError as exc:
            raise RunFailed(f"expression of step {step.name!r} failed: {exc}",
                            step=step.name) from exc

    def _suspend_until(self, wake: datetime) -> NoReturn:
        """Let go; the scheduler advances the run again at ``wake``. What is buffered is
        written first: a segment acts only after it writes (a decision it carries may be
        refused; should the worker die in between, the sweep hands the run on)."""
        self.writes.flush()
        self.r.scheduler.advance_at(self.state.id, wake)
        raise Suspend

    def park_until(self, wake: datetime, change: Change) -> NoReturn:
        """Commit ``change`` with the run parked in WAITING and a timer to wake it; let go."""
        timer = timers.advance_timer(self.state.id, wake)
        change.status, change.running = ExecutionStatus.WAITING, "remove"
        change.zadd.append(timer.entry)
        self.writes.commit(change, guard=(ExecutionStatus.RUNNING,))
        self.r.scheduler.schedule(timer)
        children.nudge_parent(self.r.scheduler, self.state)
        raise Suspend

    def _time_out(self, step: Step, path: str, deadline: Deadline) -> NoReturn:
        """The step at ``path`` is reached (or woken) after its iteration's or loop's
        deadline: it fails with the deadline's message, past its own ``on-failure``."""
        now = iso(self.now())
        recorded = self.state.results.get(path)
        failed = StepResult(status=StepStatus.FAILED, error=deadline.message,
                            output={"loopDeadline": {"loop": deadline.loop}},
                            started_at=recorded.started_at if recorded else now, finished_at=now,
                            attempts=recorded.attempts if recorded else 0)
        self.record(step, path, failed, audit.STEP_FAILED, error=deadline.message)
        raise RunFailed(deadline.message, step=path, loop=deadline.loop)

    # -- failures ----------------------------------------------------------------------------

    def follow_on_failure(self, step: Step, path: str, prefix: str, frame: Frame,
                          failed: StepResult) -> None:
        outcome = after_failure(step, path, failed, self.scope_for(frame))
        match outcome:
            case GoOn():
                pass
            case RunFallback(fallback):
                self.run_steps(fallback, prefix, frame)
            case FailRun(message, failed_step):
                raise RunFailed(message, step=failed_step)
            case _:
                assert_never(outcome)

    def _run_workflow_fallback(self) -> None:
        policy = self.workflow.settings.on_failure
        if policy is None or not policy.fallback:
            return
        try:
            self.run_steps(policy.fallback, "", NO_FRAME)
        except RunFailed as exc:
            log.warning("workflow fallback of %s failed: %s", self.state.id, exc)

    def fail_unstarted(self, step: Step, path: str, prefix: str, frame: Frame,
                       message: str) -> None:
        """A timer or human step whose options do not render (a template error, a duration
        that is not one) fails for good, as an action's would: its on-failure decides."""
        now = iso(self.now())
        failed = StepResult(status=StepStatus.FAILED, error=message, started_at=now,
                            finished_at=now)
        self.record(step, path, failed, audit.STEP_FAILED, error=message)
        self.follow_on_failure(step, path, prefix, frame, failed)

    # -- timers ------------------------------------------------------------------------------

    def _start_wait(self, step: Step, path: str, prefix: str, frame: Frame) -> None:
        try:
            options = self.options(step, frame)
            wake = loop_deadlines.within(self.deadlines,
                                         self.now() + parse_duration(options["duration"]))
        except (TemplateError, DurationError) as exc:
            self.fail_unstarted(step, path, prefix, frame, f"with.duration: {exc}")
            return
        waiting = StepResult(status=StepStatus.WAITING, started_at=iso(self.now()),
                             wake_at=iso(wake))
        self.park_until(wake, Change(events=[self.event(audit.TIMER_SET, step=path,
                                                        wakeAt=iso(wake))]).step(path, waiting))

    # -- humans ------------------------------------------------------------------------------

    def _ask_reviewer(self, step: Step, path: str, prefix: str, frame: Frame) -> None:
        now = self.now()
        try:
            options = self.options(step, frame)
            review = start_review(step, path, options, self.state.id, now, self._run_deadline())
        except (TemplateError, DurationError) as exc:
            self.fail_unstarted(step, path, prefix, frame, str(exc))
            return
        review = loop_deadlines.review_within(self.deadlines, review, self.state.id, path)
        waiting = review.waiting
        change = Change(
            set={"w": waiting.to_json()}, status=ExecutionStatus.WAITING_FOR_INPUT,
            waiting="add", waiting_score=epoch_ms(now), running="remove",
            events=[self.event(audit.WAITING_FOR_INPUT, step=path, message=waiting.message,
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
        raise Suspend

    def _run_deadline(self) -> datetime | None:
        timeout = self.workflow.settings.timeout
        started = parse_iso(self.state.started_at)
        return started + timeout if timeout is not None and started is not None else None

    # -- writing -----------------------------------------------------------------------------

    def event(self, kind: str, **data: Any) -> dict[str, Any]:
        return audit.event(kind, iso(self.now()) or "", **data)


def _starts_work(decision: object) -> bool:
    """Whether ``decision`` runs, waits on or starts something (not a replay or a skip)."""
    if isinstance(decision, RunFlow):
        return decision.started is None
    return isinstance(decision, RunAction | StartWait | FinishWait | AskReviewer | SuspendUntil)
