"""``data.set`` (set ``variables.*``), ``workflow.fail`` (end the run as FAILED), and the JSON
data steps ``data.parseJson`` and ``data.stringifyJson``.

The data steps take their source at the step's top level, as Elastic's do (``source:
"${{ steps.call.output.body }}"``); their errors are the data's, so retrying would not
help: they fail the step with ``retryable=False`` and ``on-failure`` continue or fallback
applies.
"""

from __future__ import annotations

import json
from typing import Any

from engine.definition.step_types import StepContext, step_type
from engine.errors import StepFailed, WorkflowFailRequested

MAX_JSON_SOURCE = 10 * 1024 * 1024  # characters: Kibana's data.parseJson refuses more (10 MB)

_SOURCE: dict[str, Any] = {
    "type": "object",
    "properties": {"source": {}},
    "required": ["source"],
}


@step_type("data.set", pure=True, sets_variables=True, options_schema={"type": "object"})
def data_set(ctx: StepContext) -> dict[str, Any]:
    """Set each key of ``with`` as ``variables.<key>``; the output is what was set."""
    return dict(ctx.options)


@step_type("workflow.fail", pure=True, options_schema={
    "type": "object",
    "properties": {"message": {"type": "string"}, "reason": {"type": "string"}},
    "additionalProperties": False,
})
def workflow_fail(ctx: StepContext) -> None:
    """End the run as FAILED with ``message`` (and ``reason``, a machine-readable code)."""
    message = str(ctx.options.get("message") or f"failed by step {ctx.step_name}")
    reason = ctx.options.get("reason")
    raise WorkflowFailRequested(f"{message} (reason: {reason})" if reason else message,
                                retryable=False)


@step_type("data.parseJson", pure=True, params_schema=_SOURCE,
           options_schema={"type": "object", "additionalProperties": False})
def data_parse_json(ctx: StepContext) -> Any:
    """Parse the JSON text ``source``; a value that is not text is the output as it is."""
    source = ctx.params.get("source")
    if source is None:
        raise StepFailed("source is null: give the JSON text to parse", retryable=False)
    if not isinstance(source, str):
        return source
    if len(source) > MAX_JSON_SOURCE:
        raise StepFailed(f"source is {len(source):,} characters long, more than the "
                         f"{MAX_JSON_SOURCE:,} a JSON text may have", retryable=False)
    try:
        return json.loads(source, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise StepFailed(f"Invalid JSON: {exc}", retryable=False) from exc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python accepts NaN and Infinity; JSON does not


@step_type("data.stringifyJson", pure=True, params_schema=_SOURCE, options_schema={
    "type": "object",
    "properties": {"pretty": {"type": "boolean"}},
    "additionalProperties": False,
})
def data_stringify_json(ctx: StepContext) -> str:
    """``source`` as JSON text; ``pretty: true`` indents it by two spaces."""
    source = ctx.params.get("source")
    try:
        if ctx.options.get("pretty"):
            return json.dumps(source, indent=2, ensure_ascii=False)
        return json.dumps(source, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise StepFailed(f"Cannot stringify source: {exc}", retryable=False) from exc
