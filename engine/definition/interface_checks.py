"""A workflow's interface checked: its triggers, the inputs a run takes, the outputs it
gives and the workflows it calls.

Inputs are declared in one place: the top-level list of Elastic 9.3/9.4, or a manual
trigger's ``inputs`` (9.5: a JSON Schema, or the legacy list); outputs as a list or a
JSON Schema. A scheduled trigger needs exactly one of ``every``, ``cron`` and ``rrule``.
A workflow may not call itself.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from engine.definition import templates
from engine.definition.model import Trigger
from engine.definition.problem_report import ProblemReport, line_col, render, suggest
from engine.definition.step_type_checks import check_patterns
from engine.definition.triggers import cron_problem, rrule_problem, timezone_problem
from engine.definition.yaml_positions import Position, YamlPath
from engine.errors import Problem

CALL_TYPES = ("workflow.execute", "workflow.executeAsync")  # steps that start another workflow


def trigger(report: ProblemReport, data: dict[str, Any], path: YamlPath,
            timezone: str) -> Trigger:
    """The trigger at ``path``, frozen (``timezone``: the workflow's), its problems reported."""
    options = data.get("with")
    if "inputs" in data and data.get("type") != "manual":
        report.problem((*path, "inputs"), f"key 'inputs' in {render(path)} only applies to "
                                          f"manual triggers, not {data.get('type')!r}", key=True)
    if data.get("type") == "scheduled" and isinstance(options, dict):
        given = [key for key in ("every", "cron", "rrule") if key in options]
        if len(given) != 1:
            report.problem((*path, "with"),
                           f"{render(path)}: a scheduled trigger needs exactly one of `every` "
                           "(e.g. 5m), `rrule` (e.g. {freq: DAILY, interval: 1, byhour: [9]}) "
                           "or `cron` (e.g. \"0 9 * * 1-5\")"
                           + ("" if not given else ", not both" if len(given) == 2
                              else ", not all three"))
        report.duration(options, "every", (*path, "with"))
        cron = options.get("cron")
        problem = cron_problem(cron) if isinstance(cron, str) else None
        if problem:
            report.problem((*path, "with", "cron"),
                           f"{render((*path, 'with', 'cron'))}: {problem}")
        zone = options.get("timezone")
        if isinstance(zone, str) and (problem := timezone_problem(zone)):
            report.problem((*path, "with", "timezone"),
                           f"{render((*path, 'with', 'timezone'))}: {problem}")
        rule = options.get("rrule")
        found = rrule_problem(rule) if isinstance(rule, dict) else None
        if found:
            key, why = found
            at = (*path, "with", "rrule") + ((key,) if key != "rrule" else ())
            report.problem(at, f"{render(at)}: {why}")
    return Trigger(type=str(data.get("type")),
                   with_=options if isinstance(options, dict) else {}, timezone=timezone)


def declared_inputs(report: ProblemReport, data: dict[str, Any]
                    ) -> tuple[tuple[dict[str, Any], ...], dict[str, Any] | None]:
    """The declared inputs: the top-level list (Elastic 9.3/9.4) or a manual trigger's
    ``inputs`` (9.5: a JSON Schema, or the legacy list), from one place only."""
    declared: list[tuple[YamlPath, Any]] = []
    if "inputs" in data:
        declared.append((("inputs",), data["inputs"]))
    for i, trigger_ in enumerate(data.get("triggers") or []):
        if isinstance(trigger_, dict) and trigger_.get("type") == "manual" \
                and "inputs" in trigger_:
            declared.append((("triggers", i, "inputs"), trigger_["inputs"]))
    if not declared:
        return (), None
    declared.sort(key=lambda found: line_col(report.doc, found[0]))
    for path, _ in declared[1:]:
        first = report.doc.locate_key(declared[0][0]).line
        report.problem(path, f"{render(path)}: inputs are already declared on line {first}; "
                             "declare them in one place (under the manual trigger, or the "
                             "top-level `inputs` of Elastic 9.3/9.4)", key=True)
    path, given = declared[0]
    if isinstance(given, list):
        return tuple(dict(item) for item in given if isinstance(item, dict)), None
    if not isinstance(given, dict):
        return (), None
    _check_inputs_schema(report, given, path)
    return (), dict(given)


def declared_outputs(report: ProblemReport, data: dict[str, Any]
                     ) -> tuple[tuple[dict[str, Any], ...], dict[str, Any] | None]:
    """The declared outputs: the legacy list (as inputs) or a JSON Schema."""
    given = data.get("outputs")
    if isinstance(given, list):
        return tuple(dict(item) for item in given if isinstance(item, dict)), None
    if not isinstance(given, dict):
        return (), None
    _check_inputs_schema(report, given, ("outputs",))
    return (), dict(given)


def called_workflows(report: ProblemReport) -> list[tuple[str, Position]]:
    """The ``with.workflow-id`` of every workflow.execute/executeAsync step written as
    plain text (a template is known only at run time), with where it is written."""
    called = []
    for path, step in report.step_paths.items():
        with_ = step.get("with")
        target = with_.get("workflow-id") if isinstance(with_, dict) else None
        if step.get("type") in CALL_TYPES and isinstance(target, str) \
                and not templates.has_template(target):
            called.append((target, report.doc.locate((*path, "with", "workflow-id"))))
    return called


def check_composition(report: ProblemReport, data: dict[str, Any]) -> None:
    """Report a workflow that calls itself."""
    name = data.get("name")
    for target, where in called_workflows(report):
        if target == name:
            report.problems.append(Problem(
                report.source, where.line, where.column,
                f"workflow {name!r} calls itself (with.workflow-id); a workflow cannot "
                "run itself as a child, as in Elastic"))


def _check_inputs_schema(report: ProblemReport, schema: dict[str, Any], path: YamlPath) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        detail = best_match(exc.context) if exc.context else exc
        report.problem((*path, *exc.absolute_path),
                       f"{render((*path, *exc.absolute_path))} is not valid in a JSON Schema: "
                       f"{detail.message}")
        return
    if schema.get("type", "object") != "object":
        report.problem((*path, "type"), f"{render(path)} must have `type: object`: a run's "
                                        "inputs are an object, one property per input")
    properties = schema.get("properties") or {}
    for j, name in enumerate(schema.get("required") or []):
        if name not in properties:
            hint = suggest(str(name), list(properties))
            report.problem((*path, "required", j),
                           f"{render(path)}.required names {name!r}, which is not one of its "
                           f"properties{hint}")
    check_patterns(report, schema, path)
