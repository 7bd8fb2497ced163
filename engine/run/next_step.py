"""What happens next with one step of a run, decided without I/O.

The runner (:mod:`engine.run.runner`) replays a run from the top on every segment. For
each step it asks :func:`next_step`, from the step's definition, its registered type,
its recorded result and the clock, and gets back one small frozen record saying what
to do; the runner does it and commits through the store. When an attempt fails,
:func:`retry_after` says whether and when it is tried again; when a step has failed
for good, :func:`after_failure` says whether the run goes on. A run parked on a timer
asks :func:`timers_due` whether it may wake, and a human step reached gets its review
from :func:`start_review`.

Nothing here reads or writes Redis, RQ or the store, so every rule is tested on its
own, without them (``tests/engine/test_next_step.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, assert_never

from engine.definition.conditions import Condition
from engine.definition.model import Step
from engine.definition.step_types import StepKind, StepType
from engine.errors import ConditionError, TemplateError
from engine.run import escalation, timers
from engine.state.execution import StepResult, StepStatus, Waiting, iso, parse_iso
from engine.steps.human import DEFAULT_TIMEOUTS, input_schema

# -- what to do with a step -------------------------------------------------------------------


@dataclass(frozen=True)
class UseRecorded:
    """The step finished on an earlier pass (completed or skipped): its result goes back in
    scope."""

    result: StepResult


@dataclass(frozen=True)
class HandleFailure:
    """The step failed for good on an earlier pass: its result goes back in scope, then
    :func:`after_failure` decides."""

    result: StepResult


@dataclass(frozen=True)
class Skip:
    """The step's ``if:`` does not hold: it is recorded as ``result``, skipped."""

    result: StepResult


@dataclass(frozen=True)
class FailRun:
    """The run cannot go on; ``step`` is the step its failure names."""

    message: str
    step: str


@dataclass(frozen=True)
class SuspendUntil:
    """The step waits on a timer that is not due: be woken at ``wake_at`` and let go.

    RQ's scheduler can fire up to a second early, so a wake-up is never acted on before
    its deadline."""

    wake_at: datetime


@dataclass(frozen=True)
class AwaitReviewer:
    """A human step already asked: let go until the reviewer's answer resumes the run."""


@dataclass(frozen=True)
class AskReviewer:
    """A human step reached: ask for a review and let go."""


@dataclass(frozen=True)
class StartWait:
    """A timer step reached: set its timer and let go."""


@dataclass(frozen=True)
class FinishWait:
    """A timer step whose time has come completes as ``result``."""

    result: StepResult


@dataclass(frozen=True)
class RunAction:
    """Run an action's function, attempt number ``attempt``."""

    spec: StepType
    attempt: int
    recovered: bool  # the previous attempt started and never finished: its worker died


@dataclass(frozen=True)
class RunFlow:
    """Run a flow step's function; ``started`` records its choice after the first pass.

    A flow step that completed on an earlier pass runs again too: its function replays
    its children, whose recorded results go back in scope, and nothing is recorded."""

    spec: StepType
    started: StepResult | None


@dataclass(frozen=True)
class RunChildren:
    """A step that starts child executions (workflow.execute, parallel): start them, or read
    what they reported (:mod:`engine.run.children`); ``recorded`` is what an earlier pass
    recorded. A completed one runs again too: a parallel step puts its branches' steps
    back in scope."""

    spec: StepType
    recorded: StepResult | None


NextStep = (UseRecorded | HandleFailure | Skip | FailRun | SuspendUntil | AwaitReviewer
            | AskReviewer | StartWait | FinishWait | RunAction | RunFlow | RunChildren)


def next_step(step: Step, path: str, spec: StepType | None, recorded: StepResult | None,
              scope: Mapping[str, Any], now: datetime) -> NextStep:
    """What to do with ``step`` (its instance at ``path``) on this pass of the run.

    ``spec`` is its registered type (None when it is not installed here), ``recorded``
    what an earlier pass recorded for it, ``scope`` what its ``if:`` sees."""
    if recorded is not None and recorded.status in (StepStatus.COMPLETED, StepStatus.SKIPPED):
        if recorded.status is StepStatus.COMPLETED and spec is not None \
                and spec.kind is StepKind.FLOW:
            return RunFlow(spec, recorded)  # its children's results go back in scope too
        if recorded.status is StepStatus.COMPLETED and spec is not None \
                and spec.kind is StepKind.CHILDREN:
            return RunChildren(spec, recorded)
        return UseRecorded(recorded)
    if recorded is not None and recorded.status is StepStatus.FAILED:
        return HandleFailure(recorded)
    if recorded is None and step.if_ is not None:
        holds = condition_holds(step.if_, step, scope)
        if isinstance(holds, FailRun):
            return holds
        if not holds:
            return Skip(StepResult(status=StepStatus.SKIPPED, finished_at=iso(now)))
    if spec is None:
        return FailRun(f"step type {step.type!r} is not installed on this worker", step=path)
    waiting = recorded if recorded is not None and recorded.status is StepStatus.WAITING else None
    kind = spec.kind
    if kind is StepKind.FLOW:
        return RunFlow(spec, recorded)
    if kind is StepKind.CHILDREN:
        return RunChildren(spec, recorded)
    if kind is StepKind.HUMAN:
        if recorded is not None and recorded.status is StepStatus.WAITING_FOR_INPUT:
            return AwaitReviewer()
        return AskReviewer()
    if kind is StepKind.TIMER:
        if waiting is None:
            return StartWait()
        not_due = _not_due(waiting, now)
        if not_due is not None:
            return not_due
        return FinishWait(waiting.evolve(status=StepStatus.COMPLETED, finished_at=iso(now)))
    if kind is StepKind.ACTION:
        not_due = _not_due(waiting, now) if waiting is not None else None
        if not_due is not None:
            return not_due  # a retry's delay
        return RunAction(spec, attempt=(recorded.attempts if recorded else 0) + 1,
                         recovered=recorded is not None and recorded.status is StepStatus.RUNNING)
    assert_never(kind)


def condition_holds(condition: Condition, step: Step, scope: Mapping[str, Any]) -> bool | FailRun:
    """Whether ``condition`` of ``step`` holds; FailRun when it cannot be evaluated.

    A condition with ``{{ }}`` inside is rendered against ``scope`` and parsed here, as
    Elastic does: a template that fails, or a rendered text that is not KQL, fails the run.
    """
    try:
        return condition.evaluate(scope)
    except (TemplateError, ConditionError) as exc:
        return FailRun(f"condition of step {step.name!r} failed: {exc}", step=step.name)


def _not_due(waiting: StepResult, now: datetime) -> SuspendUntil | None:
    wake = parse_iso(waiting.wake_at)
    return SuspendUntil(wake) if wake is not None and now < wake else None


# -- a run parked on a timer ------------------------------------------------------------------


@dataclass(frozen=True)
class TimersFired:
    """Every timer the run waited on is due: the steps at ``paths`` wake."""

    paths: tuple[str, ...]


def timers_due(results: Mapping[str, StepResult], now: datetime) -> SuspendUntil | TimersFired:
    """Whether a run parked in WAITING may wake: only when every timer it waits on is due."""
    fired = []
    for path, result in results.items():
        if result.status is StepStatus.WAITING and result.wake_at:
            not_due = _not_due(result, now)
            if not_due is not None:
                return not_due
            fired.append(path)
    return TimersFired(tuple(fired))


# -- failures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    """Try the step again at ``wake_at``; until then it is recorded as ``waiting``."""

    waiting: StepResult
    wake_at: datetime
    immediately: bool  # no delay: tried again in this pass, with no timer


# The longest a service's Retry-After delays a retry: a hostile or broken answer cannot
# park a run for days.
MAX_SERVICE_RETRY_AFTER = timedelta(hours=1)


def retry_after(step: Step, running: StepResult, message: str, retryable: bool,
                now: datetime, scope: Mapping[str, Any] | None = None,
                chance: float = 0.0, service_asked: float | None = None) -> Retry | None:
    """The retry of the attempt ``running`` that failed with ``message``, or None when
    ``on-failure.retry`` allows no more, its ``condition`` does not hold for the error
    (read as ``error.message`` in ``scope``), or the failure is not ``retryable``.
    ``chance`` in [0, 1) picks the retry's jitter; ``service_asked`` (seconds, a 429's
    Retry-After) is waited at least, up to :data:`MAX_SERVICE_RETRY_AFTER`."""
    policy = step.on_failure.retry if step.on_failure else None
    if not retryable or policy is None or running.attempts >= policy.max_attempts:
        return None
    if policy.condition is not None and not holds_for_error(policy.condition, message, scope):
        return None
    delay = policy.delay_before(running.attempts + 1, chance)
    if service_asked is not None and service_asked > 0:
        delay = max(delay, min(timedelta(seconds=service_asked), MAX_SERVICE_RETRY_AFTER))
    wake = now + delay
    waiting = running.evolve(status=StepStatus.WAITING, error=message, wake_at=iso(wake))
    return Retry(waiting, wake, immediately=delay <= timedelta(0))


def holds_for_error(condition: Condition, message: str | None,
                     scope: Mapping[str, Any] | None) -> bool:
    """Whether ``condition`` holds with the failure as ``error``; one that cannot be
    evaluated does not hold."""
    try:
        return condition.evaluate({**(scope or {}), "error": {"message": message or ""}})
    except TemplateError:
        return False


@dataclass(frozen=True)
class GoOn:
    """The failure does not stop the run: the next step runs."""


@dataclass(frozen=True)
class RunFallback:
    """Run the step's ``on-failure.fallback`` steps, then go on."""

    steps: tuple[Step, ...]


def after_failure(step: Step, path: str, failed: StepResult,
                  scope: Mapping[str, Any] | None = None) -> GoOn | RunFallback | FailRun:
    """What the failure for good of ``step`` (its instance at ``path``, recorded as
    ``failed``) means for the run: its ``on-timeout`` and ``on-failure`` say (a
    ``continue`` written as a condition is evaluated in ``scope``, the failure as
    ``error``)."""
    outcome = failed.output
    if isinstance(outcome, Mapping) and outcome.get("onTimeout") == "continue":
        return GoOn()
    policy = step.on_failure
    if policy is not None and policy.fallback:
        return RunFallback(policy.fallback)
    if policy is not None and (policy.continue_ or policy.continue_if is not None
                               and holds_for_error(policy.continue_if, failed.error, scope)):
        return GoOn()
    return FailRun(f"step {path!r} failed: {failed.error or 'failed'}", step=path)


# -- a human step reached ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewStart:
    """What asking for a review records: what the run waits for, the step's result, and
    the timers set with it (the step's timeout, the first SLA, the reminder)."""

    waiting: Waiting
    result: StepResult
    timers: tuple[timers.Timer, ...]


def start_review(step: Step, path: str, options: Mapping[str, Any], execution_id: str,
                 now: datetime, run_deadline: datetime | None) -> ReviewStart:
    """The review a human ``step`` (its instance at ``path``, ``options`` rendered) asks for
    at ``now``; it is due at the step's timeout (Kibana's default for its type when it sets
    none) or ``run_deadline``, whichever is first."""
    message = str(options.get("message") or "")
    timeout = step.timeout if step.timeout is not None else DEFAULT_TIMEOUTS.get(step.type)
    deadlines = [d for d in (now + timeout if timeout is not None else None,
                             run_deadline) if d is not None]
    first = escalation.levels(options)[0]
    level_due = now + first.sla if first.sla is not None else None
    remind_at = escalation.remind_time(options, now, level_due)
    waiting = Waiting(step=step.name, path=path, step_type=step.type, message=message,
                      message_sha256=hashlib.sha256(message.encode()).hexdigest(),
                      schema=input_schema(step.type, dict(options)), since=iso(now) or "",
                      approvers=first.approvers, due_at=iso(min(deadlines) if deadlines else None),
                      options={k: v for k, v in options.items() if k not in ("message", "schema")},
                      level_due=iso(level_due), first_due=iso(level_due), remind_at=iso(remind_at))
    set_timers = []
    if timeout is not None:
        set_timers.append(timers.step_timeout_timer(execution_id, path, now + timeout))
    if level_due is not None:
        set_timers.append(timers.review_timer(execution_id, path, 0, "sla", level_due))
    if remind_at is not None:
        set_timers.append(timers.review_timer(execution_id, path, 0, "remind", remind_at))
    return ReviewStart(waiting, StepResult(status=StepStatus.WAITING_FOR_INPUT, started_at=iso(now)),
                       tuple(set_timers))
