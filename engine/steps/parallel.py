"""Elastic's ``parallel`` step: branches that run at the same time, as child executions.

Two forms, exactly one per step: a dynamic fan-out (``foreach`` and ``steps``: one branch
per item, at most :data:`MAX_ITEMS`) and static branches (``branches``: at least two,
named uniquely). ``concurrency`` caps how many run at once (a number, or ``{max,
count-waiting}``; ``max`` at most :data:`MAX_CONCURRENCY`, default :data:`DEFAULT_CONCURRENCY`);
``mode`` is ``fail-fast`` (default: after a failure no branch starts, those not started
are ``skipped``, and the step fails with its output still readable) or ``settled``;
``branch-timeout`` bounds each branch and ``timeout`` the whole step.

A branch body is a straight line of steps, as Elastic enforces when a workflow is saved:
no flow control, no human steps, no step-level ``on-failure`` or ``timeout``
(:func:`check_parallel`, run by ``signoff validate``).

Each branch runs as a child execution of the same definition that runs only that
branch's steps, in the parent's scope (:mod:`engine.run.children`). What to start, what
timed out and when the step is done are decided here, without I/O (:func:`next_moves`),
and so is the output's shape (:func:`aggregate`, the docs' "Read the results").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.definition.durations import parse_duration
from engine.definition.step_types import StepKind, StepType, get_step_type, register_step_type
from engine.errors import DurationError

MAX_ITEMS = 100  # a dynamic fan-out's longest list
MAX_CONCURRENCY = 20
DEFAULT_CONCURRENCY = 5
MIN_BRANCHES = 2
MODES = ("fail-fast", "settled")

_PARAMS: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "concurrency": {"oneOf": [
            {"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY},
            {"type": "object", "additionalProperties": False, "properties": {
                "max": {"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY},
                "count-waiting": {"type": "boolean"}}}]},
        "mode": {"enum": list(MODES)},
        "branch-timeout": {"type": "string"},
    },
}

_NOT_IN_BODY = {
    StepKind.FLOW: "nested flow control cannot run in a parallel branch: branch before or "
                   "after the parallel step, or move the body into a child workflow called "
                   "with workflow.execute",
    StepKind.HUMAN: "a human step cannot run in a parallel branch: pause before or after "
                    "the parallel step",
}


def check_parallel(data: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str, bool]]:
    """What Elastic refuses when a parallel step is saved (each at its key or value)."""
    dynamic = "foreach" in data or "steps" in data
    if "branches" in data and dynamic:
        key = "foreach" if "foreach" in data else "steps"
        yield (key,), (f"a parallel step takes either `branches` or `foreach` with `steps`, "
                       f"not both: remove `{key}` or `branches`"), True
    elif dynamic and not ("foreach" in data and "steps" in data):
        missing = "steps" if "foreach" in data else "foreach"
        yield (), f"a dynamic parallel step needs `{missing}` too (`foreach` with `steps`)", False
    elif not dynamic and "branches" not in data:
        yield (), ("a parallel step needs `branches` (at least two), or `foreach` with "
                   "`steps`"), False
    for key in ("if", "on-failure"):
        if key in data:
            yield (key,), (f"a parallel step does not take `{key}`: use mode: settled and "
                           "act on its results in a following step"), True
    branches = data.get("branches")
    if isinstance(branches, list):
        if len(branches) < MIN_BRANCHES:
            yield ("branches",), (f"a parallel step needs at least {MIN_BRANCHES} branches; "
                                  "for one, write its steps in sequence"), False
        seen: set[str] = set()
        for j, branch in enumerate(branches):
            name = branch.get("name") if isinstance(branch, dict) else None
            if isinstance(name, str) and name in seen:
                yield ("branches", j, "name"), (f"branch name {name!r} is already used in "
                                                "this step; each is its key in the output"), False
            if isinstance(name, str):
                seen.add(name)
            body = branch.get("steps") if isinstance(branch, dict) else None
            yield from _body_problems(body, ("branches", j, "steps"))
    yield from _body_problems(data.get("steps"), ("steps",))
    foreach = data.get("foreach")
    if isinstance(foreach, list) and len(foreach) > MAX_ITEMS:
        yield ("foreach",), (f"a dynamic parallel step fans out over at most {MAX_ITEMS} "
                             f"items, not {len(foreach)}"), False
    if isinstance(data.get("branch-timeout"), str):
        try:
            parse_duration(data["branch-timeout"])
        except DurationError as exc:
            yield ("branch-timeout",), f"branch-timeout: {exc}", False


def _body_problems(body: Any, where: tuple[str | int, ...]
                   ) -> Iterable[tuple[tuple[str | int, ...], str, bool]]:
    for k, step in enumerate(body if isinstance(body, list) else []):
        if not isinstance(step, dict):
            continue
        spec = get_step_type(step["type"]) if isinstance(step.get("type"), str) else None
        if spec is not None and spec.kind in _NOT_IN_BODY:
            yield (*where, k, "type"), f"{spec.name!r}: {_NOT_IN_BODY[spec.kind]}", False
        if "on-failure" in step:
            yield (*where, k, "on-failure"), ("a step in a parallel branch cannot have "
                                              "on-failure: use mode: settled, then handle "
                                              "failures after the parallel step"), True
        if "timeout" in step:
            yield (*where, k, "timeout"), ("a step in a parallel branch cannot have a "
                                           "timeout: set branch-timeout on the parallel "
                                           "step"), True


register_step_type(StepType(
    name="parallel", kind=StepKind.CHILDREN, run=None,
    options_schema={"type": "object", "additionalProperties": False},
    description="Run branches at the same time, each as a child execution; output: "
                "results[], total, succeeded, failed, status (and branches by name).",
    step_keys=("steps", "branches"), params_schema=_PARAMS,
    check_shape=check_parallel))


# -- running ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """A parallel step's knobs, as rendered."""

    max: int = DEFAULT_CONCURRENCY
    count_waiting: bool = True
    fail_fast: bool = True
    branch_timeout: timedelta | None = None
    timeout: timedelta | None = None


def settings_of(params: Mapping[str, Any], timeout: timedelta | None) -> Settings:
    """The step's ``concurrency``, ``mode`` and timeouts; DurationError for a bad one."""
    given = params.get("concurrency")
    limit, count_waiting = DEFAULT_CONCURRENCY, True
    if isinstance(given, int) and not isinstance(given, bool):
        limit = given
    elif isinstance(given, Mapping):
        limit = int(given.get("max", DEFAULT_CONCURRENCY))
        count_waiting = given.get("count-waiting", True) is not False
    raw = params.get("branch-timeout")
    return Settings(max=max(1, min(limit, MAX_CONCURRENCY)), count_waiting=count_waiting,
                    fail_fast=params.get("mode", "fail-fast") != "settled",
                    branch_timeout=parse_duration(raw) if raw else None, timeout=timeout)


@dataclass(frozen=True)
class Finished:
    """A branch that reached a terminal state, as its child reported it (or timed out)."""

    status: str  # completed | failed | timed_out
    output: Any = None
    error: str | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class Moves:
    """What the step does on this pass: start branches, mark timed-out ones, wait (until
    ``wake_at``, the next deadline, if any), or finish."""

    start: tuple[int, ...]
    timed_out: tuple[int, ...]
    done: bool
    wake_at: datetime | None


def next_moves(total: int, settings: Settings, started: Mapping[int, datetime],
               finished: Mapping[int, Finished], step_started: datetime, now: datetime,
               waiting: frozenset[int] = frozenset()) -> Moves:
    """Which branches to start now, which have timed out, and whether the step is done.

    ``started``: when each started branch started; ``finished``: those that ended;
    ``waiting``: running branches parked on a timer (they free their slot when
    ``count-waiting`` is false)."""
    deadline = step_started + settings.timeout if settings.timeout is not None else None
    timed_out, running, deadlines = [], [], []
    for index, began in started.items():
        if index in finished:
            continue
        ends = [d for d in (deadline, began + settings.branch_timeout
                            if settings.branch_timeout is not None else None) if d is not None]
        if ends and now >= min(ends):
            timed_out.append(index)
        else:
            running.append(index)
            deadlines.extend(ends)
    failed = any(f.status != "completed" for f in finished.values()) or bool(timed_out)
    step_over = deadline is not None and now >= deadline
    start: list[int] = []
    if not (settings.fail_fast and failed) and not step_over:
        busy = [i for i in running if settings.count_waiting or i not in waiting]
        free = settings.max - len(busy)
        start = [i for i in range(total) if i not in started][:max(0, free)]
    if start and deadline is not None:
        deadlines.append(deadline)
    done = not running and not start
    return Moves(tuple(start), tuple(sorted(timed_out)), done,
                 min(deadlines) if deadlines and not done else None)


def aggregate(keys: Sequence[Any], static: Sequence[str] | None,
              started: Mapping[int, datetime], finished: Mapping[int, Finished]
              ) -> dict[str, Any]:
    """The step's output, as Elastic's docs show it: ``results`` index-aligned with the
    branches, the counts, the status, and ``branches`` by name for static branches."""
    results = []
    for index, key in enumerate(keys):
        entry: dict[str, Any] = {"index": index, "key": key}
        end = finished.get(index)
        began = started.get(index)
        entry["status"] = end.status if end is not None else "skipped"
        if began is not None:
            entry["startedAt"] = _ms(began)
        if end is not None and end.finished_at is not None:
            entry["finishedAt"] = _ms(end.finished_at)
            if began is not None:
                entry["durationMs"] = _ms(end.finished_at) - _ms(began)
        if end is not None and end.status == "completed":
            entry["output"] = end.output
        elif end is not None:
            entry["error"] = {"message": end.error or end.status}
        results.append(entry)
    failed = sum(1 for r in results if r["status"] in ("failed", "timed_out"))
    output: dict[str, Any] = {
        "results": results, "total": len(keys),
        "succeeded": sum(1 for r in results if r["status"] == "completed"), "failed": failed,
        "status": "failed" if failed else "completed"}
    if static is not None:
        output["branches"] = {name: {"status": r["status"], "output": r.get("output"),
                                     "error": r.get("error")}
                              for name, r in zip(static, results, strict=True)}
    return output


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
