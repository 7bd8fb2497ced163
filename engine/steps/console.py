"""``console``: a message as the step's output.

The rendered ``message`` becomes the step's output: it shows in the execution (the
status, the API) and later steps read it as ``steps.<name>.output``. The text also
goes to the worker's log, tagged with the execution and the step.
"""

from __future__ import annotations

from engine.definition.step_types import StepContext, step_type


@step_type("console", pure=True, options_schema={
    "type": "object",
    "properties": {"message": {}},
    "required": ["message"],
    "additionalProperties": False,
})
def console(ctx: StepContext) -> object:
    """Show ``message`` (rendered) as the step's output; its text also goes to the worker's log."""
    message = ctx.options.get("message")
    ctx.log(message if isinstance(message, str) else repr(message))
    return message
