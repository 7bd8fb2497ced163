"""Loops in a workflow definition: what Kibana's graph builder does to them, done at load.

A step of an ordinary type with a ``foreach`` key runs once per item. Kibana builds it as a
generated ``foreach`` step named ``foreach_<name>`` whose only child is the step itself;
:func:`step_loop` freezes it the same way, so the runner walks it like any loop and
``steps.<name>`` is the last item's result, ``steps.foreach_<name>`` the loop's.

``loop.break`` and ``loop.continue`` act on the innermost enclosing ``foreach`` or
``while``; :func:`misplaced_loop_controls` finds the ones that have none (an ``if`` or
``switch`` inside a loop's steps counts as inside it, and so do the ``on-failure``
fallbacks of steps inside it and the loop's own ``iteration-on-failure``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from engine.definition.model import Step

LOOP_TYPES = ("foreach", "while")
LOOP_CONTROLS = ("loop.break", "loop.continue")
# Types whose `foreach` key Kibana's graph builder never reads (it builds them before
# looking for one): a `foreach` on them would be silently ignored there.
FOREACH_IGNORED = ("if", "switch", "while", *LOOP_CONTROLS, "waitForInput", "waitForApproval")
# Types whose own `foreach` is theirs to read (a parallel step's dynamic fan-out): no loop
# is generated around them.
FOREACH_OWN = ("foreach", "parallel")
GENERATED_PREFIX = "foreach_"

Path = tuple[str | int, ...]


def step_loop(step: Step) -> Step:
    """The ``foreach`` step Kibana generates for ``step`` (an ordinary step with ``foreach``).

    The loop takes the keys that are about the loop: ``foreach``, ``if`` (evaluated once,
    before any item, as Kibana wraps the whole loop in it), ``max-iterations``,
    ``iteration-timeout`` and ``iteration-on-failure``; the step keeps the rest (``with``,
    ``timeout``, ``on-failure``, ...), which apply to each item's run."""
    inner = replace(step, foreach=None, if_=None, max_iterations=None,
                    iteration_timeout=None, iteration_on_failure=None)
    return Step(name=GENERATED_PREFIX + step.name, type="foreach", location=step.location,
                foreach=step.foreach, if_=step.if_, steps=(inner,),
                max_iterations=step.max_iterations, iteration_timeout=step.iteration_timeout,
                iteration_on_failure=step.iteration_on_failure)


def generated_loop_name(step: Any) -> str | None:
    """The name of the loop :func:`step_loop` makes of ``step`` (a step as written), if any."""
    if not isinstance(step, dict) or "foreach" not in step or not isinstance(step.get("name"), str):
        return None
    if step.get("type") in FOREACH_OWN or step.get("type") in FOREACH_IGNORED:
        return None
    return GENERATED_PREFIX + step["name"]


def misplaced_loop_controls(data: Any) -> Iterator[tuple[Path, str]]:
    """Each ``loop.break``/``loop.continue`` step outside any loop body, by its path in the
    document, with its type."""
    if not isinstance(data, dict):
        return
    yield from _walk(data.get("steps"), ("steps",), inside=False)
    settings = data.get("settings")
    fallback = settings.get("on-failure") if isinstance(settings, dict) else None
    if isinstance(fallback, dict):
        yield from _walk(fallback.get("fallback"), ("settings", "on-failure", "fallback"),
                         inside=False)


def _walk(items: Any, path: Path, *, inside: bool) -> Iterator[tuple[Path, str]]:
    if not isinstance(items, list):
        return
    for i, step in enumerate(items):
        if not isinstance(step, dict):
            continue
        here, type_ = (*path, i), step.get("type")
        if type_ in LOOP_CONTROLS and not inside:
            yield here, str(type_)
        body = inside or type_ in LOOP_TYPES
        for key in ("steps", "else", "default"):
            yield from _walk(step.get(key), (*here, key), inside=body if key == "steps"
                             else inside)
        cases = step.get("cases")
        for j, case in enumerate(cases if isinstance(cases, list) else []):
            if isinstance(case, dict):
                yield from _walk(case.get("steps"), (*here, "cases", j, "steps"), inside=inside)
        for policy, within in (("on-failure", inside), ("iteration-on-failure", body)):
            value = step.get(policy)
            if isinstance(value, dict):
                yield from _walk(value.get("fallback"), (*here, policy, "fallback"),
                                 inside=within)
