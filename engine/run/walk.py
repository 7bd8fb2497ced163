"""A segment's walk as its step handlers see it, and the signals that stop it.

:mod:`engine.run.runner` walks a run's steps, one segment (one job, one lease) at a time,
and hands each step to the handler of its kind: actions (:mod:`engine.run.actions`), flow
steps (:mod:`engine.run.flow_steps`), child executions (:mod:`engine.run.children`) and
parallel branches (:mod:`engine.run.branches`). They call back into the segment through
:class:`Walk` and stop it by raising::

    Suspend      the run pauses here (input, a timer, a retry's delay, children); a later job resumes it
    RunFailed    the run fails here, unless an on-failure on the way up catches it
    RunEnded     workflow.output ended the run with a status
    LoopExit     loop.break or loop.continue left the current iteration
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn, Protocol

from engine.definition.conditions import Condition
from engine.definition.egress import EgressPolicy
from engine.definition.model import Step, Workflow
from engine.run.buffered_writes import BufferedWrites
from engine.run.loop_deadlines import Deadline
from engine.run.timers import Scheduler
from engine.state.execution import ExecutionState, ExecutionStatus, StepResult
from engine.state.store import Change, Store

# What enclosing flow steps add to the scope of their children (``foreach``).
Frame = Mapping[str, Any]
NO_FRAME: Frame = {}


class Suspend(Exception):
    """The run pauses here (input, a timer or a retry delay); a later job resumes it."""


class RunFailed(Exception):
    """The run fails at ``step``, unless an on-failure policy on the way up catches it."""

    def __init__(self, message: str, step: str | None = None, *, final: bool = False,
                 loop: str | None = None) -> None:
        self.step = step
        self.final = final  # `workflow.fail`: no loop's `iteration-on-failure` catches it
        self.loop = loop  # the loop (its path) whose own `timeout` expired: not its iterations'
        super().__init__(message)


class RunEnded(Exception):
    """``workflow.output`` ended the run with ``status`` (its outputs are on the state)."""

    def __init__(self, status: ExecutionStatus, error: str | None, step: str) -> None:
        self.status = status
        self.error = error
        self.step = step
        super().__init__(error or status.value)


class LoopExit(Exception):
    """A ``loop.break`` (``how="break"``) or ``loop.continue`` left the current iteration."""

    def __init__(self, how: str) -> None:
        self.how = how
        super().__init__(how)


class Services(Protocol):
    """What a walk uses of the :class:`engine.run.runner.Runner` it runs in."""

    @property
    def store(self) -> Store: ...

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def egress(self) -> EgressPolicy: ...

    @property
    def find_workflow(self) -> Callable[[str], Workflow] | None: ...

    @property
    def end_execution(self) -> Callable[[str, str], object] | None: ...

    @property
    def connections(self) -> Mapping[str, Any]: ...


class Walk(Protocol):
    """One segment's walk through a run's steps, holding its lease."""

    state: ExecutionState
    workflow: Workflow
    writes: BufferedWrites
    step_scope: dict[str, Any]  # `steps` in templates: what each step has exposed
    loops: list[str]  # the loops the walk is in, innermost last (loop.break)
    deadlines: list[Deadline]  # of the iterations and loops the walk is in

    @property
    def r(self) -> Services: ...

    def now(self) -> datetime: ...

    def run_steps(self, steps: tuple[Step, ...], prefix: str, frame: Frame) -> None:
        """Walk ``steps``, their paths under ``prefix``, in the scope ``frame`` adds."""

    def run_step(self, step: Step, path: str, prefix: str, frame: Frame) -> None:
        """Walk one step: replay its recorded result or do what it asks next."""

    def record(self, step: Step, path: str, result: StepResult, kind: str, *,
               buffer: bool = False, unwritten: Sequence[dict[str, Any]] = (),
               **data: Any) -> None:
        """Commit ``result`` for the step at ``path`` with its audit event (after the
        ``unwritten`` ones), and expose it."""

    def expose(self, step: Step, result: StepResult) -> None:
        """Put ``result`` in scope as ``steps.<name>``."""

    def scope_for(self, frame: Frame) -> dict[str, Any]:
        """The templates' scope, with what ``frame`` adds."""

    def options(self, step: Step, frame: Frame, raw: tuple[str, ...] = ()) -> dict[str, Any]:
        """The step's ``with``, its templates rendered but for the ``raw`` keys."""

    def evaluate(self, step: Step, expression: str, frame: Frame) -> Any:
        """``expression``'s value in the step's scope; RunFailed when it fails."""

    def holds(self, condition: Condition, step: Step, frame: Frame) -> bool:
        """Whether ``condition`` holds in the step's scope; RunFailed when it fails."""

    def park_until(self, wake: datetime, change: Change) -> NoReturn:
        """Commit ``change`` with the run parked in WAITING and a timer to wake it; let go."""

    def fail_unstarted(self, step: Step, path: str, prefix: str, frame: Frame,
                       message: str) -> None:
        """Fail a step whose options do not render, for good: its on-failure decides."""

    def follow_on_failure(self, step: Step, path: str, prefix: str, frame: Frame,
                          failed: StepResult) -> None:
        """Apply the failed step's ``on-failure`` (or the default): go on, run its fallback,
        or fail the run."""

    def event(self, kind: str, **data: Any) -> dict[str, Any]:
        """An audit event of ``kind`` at the walk's clock."""
