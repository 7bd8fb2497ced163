"""``wait``: a durable sleep. The runner parks the run in WAITING and an RQ scheduled job wakes it."""

from __future__ import annotations

from engine.definition.durations import DURATION_PATTERN
from engine.definition.step_types import StepKind, StepType, register_step_type

register_step_type(StepType(
    name="wait", kind=StepKind.TIMER, run=None,
    options_schema={
        "type": "object",
        "properties": {"duration": {"type": "string", "pattern": DURATION_PATTERN}},
        "required": ["duration"],
        "additionalProperties": False,
    },
    description="Pause the run for `duration`, durably (no process sleeps).",
))
