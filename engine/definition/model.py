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


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    delay: timedelta
    strategy: str = "fixed"  # fixed | exponential

    def delay_before(self, attempt: int) -> timedelta:
        """Delay before attempt number ``attempt`` (2 is the first retry)."""
        if self.strategy == "exponential":
            return self.delay * (2 ** max(0, attempt - 2))
        return self.delay


@dataclass(frozen=True)
class FailurePolicy:
    retry: RetryPolicy | None = None
    continue_: bool = False
    fallback: tuple[Step, ...] = ()


@dataclass(frozen=True)
class SwitchCase:
    match: Any
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
    # flow control: `if`
    condition: Condition | None = None
    steps: tuple[Step, ...] = ()
    else_: tuple[Step, ...] = ()
    # flow control: `foreach` (an expression or template yielding a list)
    foreach: str | None = None
    # flow control: `switch`
    expression: str | None = None
    cases: tuple[SwitchCase, ...] = ()
    default: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Trigger:
    type: str  # manual | alert | webhook | scheduled
    with_: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    timeout: timedelta | None = None
    on_failure: FailurePolicy | None = None


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
    inputs: tuple[Mapping[str, Any], ...] = ()

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
                if step.on_failure:
                    walk(step.on_failure.fallback)

        walk(self.steps)
        if self.settings.on_failure:
            walk(self.settings.on_failure.fallback)
        return found

    def step(self, name: str) -> Step:
        for candidate in self.iter_steps():
            if candidate.name == name:
                return candidate
        raise KeyError(name)
