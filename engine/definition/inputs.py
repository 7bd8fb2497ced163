"""A run's declared inputs: the values a run starts with, and what is wrong with those given.

A workflow declares its inputs in one of two forms (:class:`engine.definition.model.Workflow`):
the list of ``{name, type, default, required, options}`` (the top-level ``inputs`` of
Elastic 9.3/9.4, or the legacy list under the manual trigger), or a JSON Schema under the
manual trigger (Elastic 9.5), whose properties are the inputs. A run whose event's
``inputs`` break the declaration does not start; each problem names its input. A JSON
Schema is checked with the answer validator (:func:`engine.definition.answer_schema.answer_errors`),
so its patterns run in linear time on whatever a caller sends.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from engine.definition.answer_schema import answer_errors
from engine.definition.model import Workflow

# What each declared input `type` accepts, and how a value of another type is named.
_INPUT_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "choice": lambda v: isinstance(v, str),  # and one of its options, when it lists them
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)
                          or isinstance(v, float) and v.is_integer()),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list | tuple),
    "object": lambda v: isinstance(v, Mapping),
}


def input_values(workflow: Workflow, event: Any) -> dict[str, Any]:
    """The run's ``inputs``: the declared defaults, overridden by the event's ``inputs``."""
    values: dict[str, Any] = {}
    for spec in workflow.inputs:
        if "default" in spec:
            values[str(spec["name"])] = spec["default"]
    properties = (workflow.inputs_schema or {}).get("properties")
    for name, prop in (properties.items() if isinstance(properties, Mapping) else ()):
        if isinstance(prop, Mapping) and "default" in prop:
            values[str(name)] = prop["default"]
    if isinstance(event, Mapping) and isinstance(event.get("inputs"), Mapping):
        values.update(event["inputs"])
    return values


def input_problems(workflow: Workflow, event: Any) -> list[dict[str, str]]:
    """What is wrong with ``event``'s ``inputs`` for ``workflow``, one entry per input:
    undeclared, required and missing, of another type, not one of a choice's options, or
    (a JSON Schema declaration) any other way they break the schema."""
    given = event.get("inputs", {}) if isinstance(event, Mapping) else {}
    if not isinstance(given, Mapping):
        return [{"input": "inputs", "message": f"must be an object, not {_json_type(given)}"}]
    if workflow.inputs_schema is not None:
        return _schema_problems(workflow, workflow.inputs_schema, given)
    declared = {str(spec["name"]): spec for spec in workflow.inputs}
    problems = _undeclared(workflow, given, list(declared))
    for name, spec in declared.items():
        if name not in given:
            if spec.get("required") and "default" not in spec:
                problems.append({"input": name, "message": "is required"})
            continue
        value, type_ = given[name], str(spec["type"])
        options = spec.get("options") if type_ == "choice" else None
        if options and value not in options:
            problems.append({"input": name, "message": "must be one of "
                             f"{', '.join(json.dumps(o) for o in options)}, "
                             f"not {json.dumps(value)}"})
        elif not _INPUT_TYPES[type_](value):
            problems.append({"input": name, "message": f"must be {_ARTICLE.get(type_, 'a')} "
                             f"{type_}, not {_json_type(value)}"})
        elif type_ == "array" and not _within(len(value), spec):
            problems.append({"input": name, "message": f"has {len(value)} items; "
                             f"{_bounds(spec)}"})
    return problems


def _schema_problems(workflow: Workflow, schema: Mapping[str, Any],
                     given: Mapping[str, Any]) -> list[dict[str, str]]:
    properties = schema.get("properties")
    declared = list(properties) if isinstance(properties, Mapping) else []
    # An input nobody declared is refused as with the list form, unless the schema
    # itself says what extra properties may be.
    closed = "additionalProperties" not in schema and "patternProperties" not in schema \
        and "unevaluatedProperties" not in schema
    problems = _undeclared(workflow, given, declared) if closed else []
    # Defaults fill what the caller left out before the schema is applied, as at run time.
    values = {**{name: prop["default"] for name, prop in (properties or {}).items()
                 if isinstance(prop, Mapping) and "default" in prop}, **given}
    for error in answer_errors(schema, values):
        where = list(error.absolute_path)
        if error.validator == "required" and not where:
            missing = next((name for name in error.validator_value  # type: ignore[union-attr]
                            if name not in values and repr(name) in error.message), None)
            problems.append({"input": str(missing), "message": "is required"})
            continue
        name = str(where[0]) if where else "inputs"
        rest = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in where[1:])
        problems.append({"input": name, "message": f"{rest + ': ' if rest else ''}{error.message}"})
    return problems


def _undeclared(workflow: Workflow, given: Mapping[str, Any],
                declared: list[str]) -> list[dict[str, str]]:
    names = ", ".join(declared) or "none"
    return [{"input": str(name), "message": f"is not an input of workflow "
             f"{workflow.name!r} (it declares: {names})"}
            for name in given if name not in declared]


def _within(count: int, spec: Mapping[str, Any]) -> bool:
    low, high = spec.get("minItems"), spec.get("maxItems")
    return (not isinstance(low, int) or count >= low) and (not isinstance(high, int)
                                                           or count <= high)


def _bounds(spec: Mapping[str, Any]) -> str:
    low, high = spec.get("minItems"), spec.get("maxItems")
    if isinstance(low, int) and isinstance(high, int):
        return f"give {low} to {high}"
    return f"give at least {low}" if isinstance(low, int) else f"give at most {high}"


_ARTICLE = {"array": "an", "integer": "an", "object": "an"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list | tuple) else "an object"
