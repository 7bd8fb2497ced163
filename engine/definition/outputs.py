"""A run's declared outputs: what ``workflow.output`` may emit.

A workflow declares its outputs at the top level, in the same two forms as its inputs
(:mod:`engine.definition.inputs`): the list of ``{name, type, required, ...}`` or a JSON
Schema. ``workflow.output`` checks the values it emits against them as a manual run's
inputs are checked (a default is ignored, as in Kibana); a workflow that declares none
may emit anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from engine.definition.inputs import input_problems
from engine.definition.model import Workflow


def declares_outputs(workflow: Workflow) -> bool:
    """Whether ``workflow`` has a top-level ``outputs``."""
    return bool(workflow.outputs) or workflow.outputs_schema is not None


def output_problems(workflow: Workflow, values: Mapping[str, Any]) -> list[dict[str, str]]:
    """What is wrong with ``values`` as ``workflow``'s outputs, one entry per output."""
    if not declares_outputs(workflow):
        return []
    # Defaults are for inputs: an output the step does not emit is missing, not defaulted.
    declared = tuple({k: v for k, v in spec.items() if k != "default"}
                     for spec in workflow.outputs)
    schema = workflow.outputs_schema
    if schema is not None and isinstance(schema.get("properties"), Mapping):
        schema = {**schema, "properties": {
            name: {k: v for k, v in prop.items() if k != "default"}
            if isinstance(prop, Mapping) else prop
            for name, prop in schema["properties"].items()}}
    shadow = replace(workflow, inputs=declared, inputs_schema=schema)
    return [{"output": problem["input"],
             "message": problem["message"].replace("is not an input of", "is not an output of")
             .replace("(it declares:", "(it declares outputs:")}
            for problem in input_problems(shadow, {"inputs": dict(values)})]
