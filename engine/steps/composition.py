"""Elastic's composition steps: ``workflow.execute``, ``workflow.executeAsync`` and
``workflow.output``.

``workflow.execute`` and ``workflow.executeAsync`` start a child execution of another
workflow, found by name in the worker's catalog: an ordinary execution with its own job,
lease, timers and audit trail, linked to its parent. The runner does that
(:mod:`engine.run.children`); this module registers the types, their options and the
outputs' shapes. ``workflow.output`` ends the run with its outputs
(:class:`OutputsEmitted`), checked against the workflow's declared ``outputs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.definition.step_types import StepContext, StepKind, StepType, register_step_type, step_type

MAX_WORKFLOW_DEPTH = 10  # Kibana's MAX_WORKFLOW_DEPTH: a run this deep in calls calls no more

OUTPUT_STATUSES = ("completed", "cancelled", "failed")

_CALL_OPTIONS: Mapping[str, Any] = {
    "type": "object",
    "required": ["workflow-id"],
    "properties": {"workflow-id": {"type": "string", "minLength": 1},
                   "inputs": {"type": "object"}},
    "additionalProperties": False,
}

for _name, _doc in (("workflow.execute", "Run another workflow as a child and wait for its "
                                         "outputs."),
                    ("workflow.executeAsync", "Start another workflow as a child, without "
                                              "waiting for it.")):
    register_step_type(StepType(name=_name, kind=StepKind.CHILDREN, run=None,
                                options_schema=_CALL_OPTIONS, description=_doc))


class OutputsEmitted(Exception):  # noqa: N818 - not an error: the run ends here, by design
    """Raised by ``workflow.output``: the run ends with ``status`` and these ``values``."""

    def __init__(self, status: str, values: Mapping[str, Any]) -> None:
        self.status = status
        self.values = dict(values)
        super().__init__(f"workflow.output: {status}")


@step_type("workflow.output", pure=True, options_schema={"type": "object"},
           params_schema={"type": "object", "properties": {
               "status": {"enum": list(OUTPUT_STATUSES)}}})
def workflow_output(ctx: StepContext) -> None:
    """End the run with `with` as its outputs, and `status` (completed by default)."""
    raise OutputsEmitted(str(ctx.params.get("status") or "completed"), ctx.options)


def async_output(workflow_id: str, execution_id: str, started_at: str | None) -> dict[str, Any]:
    """A ``workflow.executeAsync`` step's output, in Kibana's shape."""
    output: dict[str, Any] = {"workflowId": workflow_id, "executionId": execution_id,
                              "awaited": False, "status": "pending"}
    if started_at:
        output["startedAt"] = started_at
    return output
