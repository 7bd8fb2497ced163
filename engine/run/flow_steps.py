"""Flow steps (``if``, ``switch``, ``foreach``, ``while``, ...) as a segment walks them.

A flow step's function (:attr:`engine.definition.step_types.StepType.flow`) decides, and
walks its children through :class:`FlowRun`, the runner's side of
:class:`engine.definition.step_types.FlowContext`. Its choices are recorded in its own
result as they are taken, so a replay walks the same branches and iterations (see
:mod:`engine.steps.loops`).

Loops run each iteration under the deadlines of :mod:`engine.run.loop_deadlines`, retry or
forgive a failed iteration by their ``iteration-on-failure``, and end early on
``loop.break``/``loop.continue`` (:class:`engine.run.walk.LoopExit`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from engine.definition.conditions import Condition
from engine.definition.model import FailurePolicy, Step
from engine.definition.step_types import StepType
from engine.errors import StepFailed
from engine.run.loop_deadlines import Deadline
from engine.run.next_step import holds_for_error
from engine.run.walk import Frame, LoopExit, RunFailed, Walk
from engine.state import audit
from engine.state.execution import StepResult, StepStatus, iso, parse_iso
from engine.state.store import Change


def run_flow(walk: Walk, spec: StepType, step: Step, path: str, prefix: str, frame: Frame,
             started: StepResult | None) -> None:
    """Run the flow step at ``path`` (``started``: its recorded start, on a replay) and
    record it completed, or failed and handled by its own ``on-failure``."""
    assert spec.flow is not None  # the registry refuses a flow step without one
    flow = FlowRun(walk, step, path, prefix, frame, started)
    try:
        try:
            spec.flow(flow)
        except StepFailed as exc:
            raise RunFailed(str(exc), step=path) from exc
    except LoopExit:
        _complete(walk, step, path, flow)  # a loop.break/continue ends it here
        raise
    except RunFailed as failure:
        if step.on_failure is None or failure.final:
            raise
        # Its own on-failure wraps the whole flow step, as in Kibana: recorded failed,
        # it is not walked again on a replay, and `continue` or `fallback` decide.
        base = flow.started or StepResult(status=StepStatus.RUNNING,
                                          started_at=iso(walk.now()))
        failed = base.evolve(status=StepStatus.FAILED, error=str(failure),
                             finished_at=iso(walk.now()))
        walk.record(step, path, failed, audit.STEP_FAILED, error=str(failure))
        walk.follow_on_failure(step, path, prefix, frame, failed)
        return
    _complete(walk, step, path, flow)


def _complete(walk: Walk, step: Step, path: str, flow: FlowRun) -> None:
    started = flow.started
    if started is not None and started.status is StepStatus.COMPLETED:
        walk.expose(step, started)  # a replay: its children are back in scope
        return
    started = started or _start(walk, step, path, {})
    done = started.evolve(status=StepStatus.COMPLETED, finished_at=iso(walk.now()))
    walk.record(step, path, done, audit.STEP_COMPLETED, buffer=True)


def _start(walk: Walk, step: Step, path: str, output: dict[str, Any]) -> StepResult:
    result = StepResult(status=StepStatus.RUNNING, output=output, started_at=iso(walk.now()))
    walk.record(step, path, result, audit.STEP_STARTED, buffer=True, output=output)
    return result


class FlowRun:
    """A flow step as its function sees it: the runner's side of :class:`FlowContext`."""

    def __init__(self, walk: Walk, step: Step, path: str, prefix: str, frame: Frame,
                 started: StepResult | None) -> None:
        self._walk = walk
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
            self.started = _start(self._walk, self._step, self._path, dict(decide()))
        output: Mapping[str, Any] = self.started.output
        return output

    def evaluate(self, expression: str) -> Any:
        return self._walk.evaluate(self._step, expression, self._frame)

    def holds(self, condition: Condition, scope: Mapping[str, Any] | None = None) -> bool:
        frame = {**self._frame, **scope} if scope else self._frame
        return self._walk.holds(condition, self._step, frame)

    def progress(self, update: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
        started = self.started
        assert started is not None  # a loop chooses first
        if update and started.status is not StepStatus.COMPLETED:
            started = self.started = started.evolve(output={**(started.output or {}), **update})
            self._walk.writes.commit(Change().step(self._path, started), buffer=True)
        output: Mapping[str, Any] = started.output or {}
        return output

    def exit_loop(self, how: str) -> None:
        loops = self._walk.loops
        assert loops  # `signoff validate` refuses a loop control outside any loop
        self.choose(lambda: {"navigateToNode": loops[-1]})  # what Kibana records
        raise LoopExit(how)

    def run_iteration(self, steps: tuple[Step, ...], *, index: int, prefix: str,
                      scope: Mapping[str, Any]) -> bool:
        walk = self._walk
        frame = {**self._frame, **scope}
        walk.loops.append(f"exit{self._step.type.capitalize()}_{self._step.name}")
        try:
            attempt = 1
            while True:
                # A retried iteration runs its steps again under new paths: loop[1]#2.check
                at = prefix if attempt == 1 else f"{prefix[:-1]}#{attempt}."
                try:
                    self._run_attempt(steps, index, attempt, at, frame)
                    return False
                except LoopExit as exit_:
                    return exit_.how == "break"
                except RunFailed as failure:
                    if not self._retry_iteration(failure, index, attempt, frame):
                        return self._iteration_failed(failure, at, frame)
                attempt += 1
        finally:
            walk.loops.pop()

    def _run_attempt(self, steps: tuple[Step, ...], index: int, attempt: int, prefix: str,
                     frame: Frame) -> None:
        walk = self._walk
        deadlines = self._iteration_deadlines(index, attempt)
        walk.deadlines.extend(deadlines)
        try:
            walk.run_steps(steps, prefix, frame)
        finally:
            del walk.deadlines[len(walk.deadlines) - len(deadlines):]

    def _retry_iteration(self, failure: RunFailed, index: int, attempt: int,
                         frame: Frame) -> bool:
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
        walk, started = self._walk, self.started
        assert started is not None  # a loop chooses first
        retried = dict(self.progress().get("retried") or {})
        if int(retried.get(str(index), 1)) > attempt:  # decided on an earlier pass
            if started.status is StepStatus.WAITING:  # and its delay is over: go on
                self.started = started.evolve(status=StepStatus.RUNNING, wake_at=None)
                walk.writes.commit(Change().step(self._path, self.started), buffer=True)
            return True
        if retry.condition is not None and not holds_for_error(
                retry.condition, str(failure), walk.scope_for(frame)):
            return False
        retried[str(index)] = attempt + 1
        self.progress({"retried": retried})
        now = walk.now()
        wake = now + retry.delay_before(attempt + 1, random.random())
        if wake > now:
            assert self.started is not None
            waiting = self.started.evolve(status=StepStatus.WAITING, wake_at=iso(wake))
            self.started = waiting
            walk.park_until(wake, Change(events=[walk.event(
                audit.STEP_RETRY, step=self._path, error=str(failure), iteration=index,
                attempt=attempt, retryAt=iso(wake))]).step(self._path, waiting))
        return True

    def _iteration_failed(self, failure: RunFailed, prefix: str, frame: Frame) -> bool:
        """The loop's ``iteration-on-failure`` for an iteration that failed the run: its
        fallback runs, or it goes on, or the failure stands. True when a loop.break ran."""
        policy = self._step.iteration_on_failure
        if policy is None or failure.final or failure.loop == self._path:
            raise failure
        if policy.fallback:
            try:
                self._walk.run_steps(policy.fallback, prefix, frame)
            except LoopExit as exit_:
                return exit_.how == "break"
            return False
        if policy.continue_ or policy.continue_if is not None and holds_for_error(
                policy.continue_if, str(failure), self._walk.scope_for(frame)):
            return False
        raise failure

    def _iteration_deadlines(self, index: int, attempt: int) -> list[Deadline]:
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
                                          "iterationStartedAt": iso(self._walk.now())})
            begun = parse_iso(recorded.get("iterationStartedAt")) or self._walk.now()
            deadlines.append(Deadline(
                begun + step.iteration_timeout,
                f"TimeoutError: iteration {index} of step {step.name!r} exceeded its "
                f"iteration-timeout of {_seconds(step.iteration_timeout)}"))
        loop_started = parse_iso(started.started_at)
        if step.timeout is not None and loop_started is not None:
            deadlines.append(Deadline(
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
            self._walk.run_steps(steps, prefix, frame)
        except RunFailed as failure:
            # A replay fails the same way and is caught the same way, so the run keeps
            # taking the same path.
            if on_failure is None or failure.final:
                raise
            if on_failure.fallback:
                self._walk.run_steps(on_failure.fallback, prefix, frame)
            elif not (on_failure.continue_ or on_failure.continue_if is not None and holds_for_error(
                    on_failure.continue_if, str(failure), self._walk.scope_for(frame))):
                raise


def _seconds(duration: timedelta) -> str:
    return f"{duration.total_seconds():g}s"
