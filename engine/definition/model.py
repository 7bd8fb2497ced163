"""A workflow as frozen records: what the loader produces and the runner walks.

Nothing downstream of :mod:`engine.definition.loader` touches the raw YAML dicts. Step
options (``with``) stay plain JSON-like data because templates render them at run
time, but they are never mutated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.definition.conditions import Condition

@dataclass(frozen=True)
class Location:
    source: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column}"


JITTER = 0.25  # `jitter: true` adds up to this fraction of a retry's delay


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    delay: timedelta
    strategy: str = "fixed"  # fixed | exponential
    multiplier: float = 2.0  # exponential: each delay is the last one times this
    max_delay: timedelta | None = None  # exponential: no delay is longer
    jitter: bool = False
    condition: Condition | None = None  # retry only failures it holds for (`error` in scope)

    def delay_before(self, attempt: int, chance: float = 0.0) -> timedelta:
        """Delay before attempt number ``attempt`` (2 is the first retry); ``chance`` in
        [0, 1) picks the jitter."""
        delay = self.delay
        if self.strategy == "exponential":
            delay = self.delay * (self.multiplier ** max(0, attempt - 2))
            if self.max_delay is not None:
                delay = min(delay, self.max_delay)
        if self.jitter:
            delay += delay * JITTER * chance
        return delay


@dataclass(frozen=True)
class FailurePolicy:
    retry: RetryPolicy | None = None
    continue_: bool = False
    continue_if: Condition | None = None  # `continue` written as a condition
    fallback: tuple[Step, ...] = ()


# Kibana's cap of a loop that sets no `max-iterations` (spec/schema.ts), with `on-limit: continue`.
DEFAULT_LOOP_MAX_ITERATIONS = 2000


@dataclass(frozen=True)
class IterationLimit:
    """A loop's ``max-iterations``: at most ``limit`` iterations. At the cap, ``continue``
    ends the loop as done and ``fail`` fails the step; a bare number means ``continue``, as
    in Kibana."""

    limit: int
    on_limit: str = "continue"  # continue | fail


DEFAULT_ITERATION_LIMIT = IterationLimit(DEFAULT_LOOP_MAX_ITERATIONS)


@dataclass(frozen=True)
class SwitchCase:
    match: Any
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Branch:
    """A static branch of a ``parallel`` step: its name (its key in the output) and steps."""

    name: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Step:
    name: str
    type: str
    location: Location
    with_: Mapping[str, Any] = field(default_factory=dict)
    if_: Condition | None = None
    connector_id: str | None = None
    timeout: timedelta | None = None
    on_failure: FailurePolicy | None = None
    # the top-level keys its type declares (StepType.params_schema): `items`, `source`, ...
    params: Mapping[str, Any] = field(default_factory=dict)
    # flow control: `if` (and `while`, whose `condition` is checked after each iteration)
    condition: Condition | None = None
    steps: tuple[Step, ...] = ()
    else_: tuple[Step, ...] = ()
    # flow control: `foreach` (an expression or template yielding a list, or the list itself)
    # and the loop keys of `foreach` and `while`; a step of another type with `foreach` is
    # frozen as a `foreach` step wrapping it (:func:`engine.definition.loops.step_loop`)
    foreach: str | tuple[Any, ...] | None = None
    max_iterations: IterationLimit | None = None
    iteration_timeout: timedelta | None = None
    iteration_on_failure: FailurePolicy | None = None
    max_step_size: int | None = None  # bytes; a larger output fails the step
    # flow control: `switch`
    expression: str | None = None
    cases: tuple[SwitchCase, ...] = ()
    default: tuple[Step, ...] = ()
    # `parallel` with static branches (its dynamic fan-out uses `foreach` and `steps`)
    branches: tuple[Branch, ...] = ()


@dataclass(frozen=True)
class Trigger:
    type: str  # manual | alert | webhook | scheduled
    with_: Mapping[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"  # scheduled `cron`: the zone its times are in (settings.timezone)


@dataclass(frozen=True)
class Settings:
    timeout: timedelta | None = None
    on_failure: FailurePolicy | None = None
    timezone: str | None = None  # an IANA zone name
    max_step_size: int | None = None  # bytes; the default of every step's `max-step-size`
    concurrency: Mapping[str, Any] = field(default_factory=dict)  # engine.run.concurrency
    liquid: Mapping[str, Any] = field(default_factory=dict)  # accepted; Signoff's own limits apply


@dataclass(frozen=True)
class Workflow:
    name: str
    steps: tuple[Step, ...]
    source: str  # file path or "<string>"
    text: str  # the YAML exactly as loaded; stored by digest so a run resumes on its own definition
    digest: str  # sha256 of ``text``
    description: str = ""
    enabled: bool = True
    triggers: tuple[Trigger, ...] = ()
    settings: Settings = field(default_factory=Settings)
    consts: Mapping[str, Any] = field(default_factory=dict)
    # Declared inputs: the list form (top level, or a manual trigger's legacy list), or a
    # JSON Schema given under the manual trigger (``inputs_schema``); never both.
    inputs: tuple[Mapping[str, Any], ...] = ()
    inputs_schema: Mapping[str, Any] | None = None
    # Declared outputs (what `workflow.output` emits), in the same two forms as inputs.
    outputs: tuple[Mapping[str, Any], ...] = ()
    outputs_schema: Mapping[str, Any] | None = None
    tags: tuple[str, ...] = ()
    version: str | None = None

    def iter_steps(self) -> list[Step]:
        """Every step, nested ones included, in document order."""
        found: list[Step] = []

        def walk(steps: tuple[Step, ...]) -> None:
            for step in steps:
                found.append(step)
                walk(step.steps)
                walk(step.else_)
                for case in step.cases:
                    walk(case.steps)
                walk(step.default)
                for branch in step.branches:
                    walk(branch.steps)
                if step.on_failure:
                    walk(step.on_failure.fallback)
                if step.iteration_on_failure:
                    walk(step.iteration_on_failure.fallback)

        walk(self.steps)
        if self.settings.on_failure:
            walk(self.settings.on_failure.fallback)
        return found

    def step(self, name: str) -> Step:
        for candidate in self.iter_steps():
            if candidate.name == name:
                return candidate
        raise KeyError(name)
