"""``console``: write a message to the execution log."""

from __future__ import annotations

from engine.definition.step_types import StepContext, step_type


@step_type("console", pure=True, options_schema={
    "type": "object",
    "properties": {"message": {}},
    "required": ["message"],
    "additionalProperties": False,
})
def console(ctx: StepContext) -> object:
    """Log ``message`` (rendered); the output is the message."""
    message = ctx.options.get("message")
    ctx.log(message if isinstance(message, str) else repr(message))
    return message
