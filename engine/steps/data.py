"""``data.set`` (set ``variables.*``) and ``workflow.fail`` (end the run as FAILED)."""

from __future__ import annotations

from typing import Any

from engine.definition.step_types import StepContext, step_type
from engine.errors import WorkflowFailRequested


@step_type("data.set", pure=True, sets_variables=True, options_schema={"type": "object"})
def data_set(ctx: StepContext) -> dict[str, Any]:
    """Set each key of ``with`` as ``variables.<key>``; the output is what was set."""
    return dict(ctx.options)


@step_type("workflow.fail", pure=True, options_schema={
    "type": "object",
    "properties": {"message": {"type": "string"}},
    "additionalProperties": False,
})
def workflow_fail(ctx: StepContext) -> None:
    """End the run as FAILED with ``message``."""
    raise WorkflowFailRequested(str(ctx.options.get("message") or f"failed by step {ctx.step_name}"),
                                retryable=False)
