"""The flow-control steps: ``if``, ``foreach`` and ``switch`` (``while`` and the loop
controls are in :mod:`engine.steps.loops`).

Each walks its child steps through a :class:`FlowContext`. What it decides (the
branch, the items, the case) is recorded as its output on the first pass and read
back when the run is replayed, so a later pass takes the same way even if the
event or the variables it decided on have changed since.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.definition.model import DEFAULT_ITERATION_LIMIT, Step
from engine.definition.step_types import FlowContext, flow_step_type
from engine.errors import StepFailed


@flow_step_type("if", step_keys=("condition", "steps", "else"))
def run_if(flow: FlowContext) -> None:
    """Run `steps` when `condition` holds, else `else`; the output is the branch taken."""
    step = flow.step
    condition = step.condition
    assert condition is not None  # the workflow schema requires it
    choice = flow.choose(lambda: {"branch": "then" if flow.holds(condition) else "else"})
    flow.run_steps(step.steps if choice["branch"] == "then" else step.else_)


@flow_step_type("foreach", step_keys=("steps",))
def run_foreach(flow: FlowContext) -> None:
    """Run `steps` once per item of `foreach`, with `foreach.item`, `.index`, `.items` and
    `.total` in scope, for at most `max-iterations` items (Kibana's default: 2000); past the
    cap the loop ends (`on-limit: continue`) or fails (`fail`) after running that many."""
    step = flow.step
    items = flow.choose(lambda: {"items": _items(flow)})["items"]
    cap = step.max_iterations or DEFAULT_ITERATION_LIMIT
    for index, item in enumerate(items[:cap.limit]):
        broke = flow.run_iteration(step.steps, index=index, prefix=f"{flow.path}[{index}].",
                                   scope={"foreach": {"item": item, "index": index,
                                                      "items": items, "total": len(items)}})
        if broke:
            return
    if len(items) > cap.limit and cap.on_limit == "fail":
        raise StepFailed(f"foreach step {step.name!r} exceeded its max-iterations limit of "
                         f"{cap.limit}: processed {cap.limit} of {len(items)} items",
                         retryable=False)


@flow_step_type("switch", step_keys=("expression", "cases", "default"))
def run_switch(flow: FlowContext) -> None:
    """Run the first case whose `match` equals `expression`, else `default`."""
    step = flow.step
    choice = flow.choose(lambda: _case_for(step, flow.evaluate(step.expression or "")))
    chosen = choice["case"]
    flow.run_steps(step.default if chosen == "default" else step.cases[int(chosen)].steps)


def _items(flow: FlowContext) -> list[Any]:
    step = flow.step
    items = list(step.foreach) if isinstance(step.foreach, tuple) else flow.evaluate(
        step.foreach or "")
    if isinstance(items, Mapping):
        items = [{"key": k, "value": v} for k, v in items.items()]
    if not isinstance(items, list):
        raise StepFailed(f"foreach of step {flow.step.name!r} gave {type(items).__name__}, "
                         "not a list", retryable=False)
    return items


def _case_for(step: Step, value: Any) -> dict[str, Any]:
    """The index of the first case matching ``value`` ("default" when none does)."""
    chosen: int | str = "default"
    for index, case in enumerate(step.cases):
        if _matches(case.match, value):
            chosen = index
            break
    return {"case": chosen, "value": value}


def _matches(expected: Any, actual: Any) -> bool:
    if expected == actual:
        return True
    return str(expected).lower() == str(actual).lower() if expected is not None else False
