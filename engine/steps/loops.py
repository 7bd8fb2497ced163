"""The ``while`` loop and the loop controls ``loop.break`` and ``loop.continue``.

``while`` is a do-while, as in Kibana: its first iteration always runs, and its
``condition`` (KQL, or a ``${{ }}`` template) is checked after each one, with
``while.iteration`` set to the index of the iteration it would start. A run is
replayed from the top, so each decision is recorded in the loop's output as it is
taken: ``iteration`` is the iteration in progress (every one before it went on), and
once the loop ends ``exitReason`` (``condition``, ``max-iterations`` or ``break``) and
``iterations`` say where it stopped. A resumed run (a review inside the body) thus
continues in the iteration it paused in, however the condition's inputs changed since.
"""

from __future__ import annotations

from engine.definition.model import DEFAULT_ITERATION_LIMIT
from engine.definition.step_types import FlowContext, flow_step_type
from engine.errors import StepFailed


@flow_step_type("while", step_keys=("condition", "steps"))
def run_while(flow: FlowContext) -> None:
    """Run `steps`, then again while `condition` holds, with `while.iteration` in scope, at
    most `max-iterations` times (Kibana's default: 2000, then the loop ends as done)."""
    step = flow.step
    condition = step.condition
    assert condition is not None  # the workflow schema requires it
    cap = step.max_iterations or DEFAULT_ITERATION_LIMIT
    flow.choose(lambda: {"iteration": 0})
    iteration = 0
    while True:
        if flow.run_iteration(step.steps, index=iteration, prefix=f"{flow.path}[{iteration}].",
                              scope={"while": {"iteration": iteration}}):
            reason = "break"
            break
        following = iteration + 1
        if following >= cap.limit:
            if cap.on_limit == "fail":
                raise StepFailed(f"while step {step.name!r} exceeded its max-iterations limit "
                                 f"of {cap.limit}: completed {following} iterations",
                                 retryable=False)
            reason = "max-iterations"
            break
        recorded = flow.progress()
        if recorded.get("iterations") == following:  # the loop ended here on an earlier pass
            reason = str(recorded.get("exitReason"))
            break
        if int(recorded.get("iteration", 0)) <= iteration:  # not decided on an earlier pass
            if not flow.holds(condition, {"while": {"iteration": following}}):
                reason = "condition"
                break
            flow.progress({"iteration": following})
        iteration = following
    flow.progress({"exitReason": reason, "iterations": iteration + 1})


@flow_step_type("loop.break", step_keys=())
def run_break(flow: FlowContext) -> None:
    """Leave the innermost enclosing foreach or while; the steps after the loop run next."""
    flow.exit_loop("break")


@flow_step_type("loop.continue", step_keys=())
def run_continue(flow: FlowContext) -> None:
    """Skip the rest of the current iteration of the innermost enclosing foreach or while."""
    flow.exit_loop("continue")
