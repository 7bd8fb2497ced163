"""A step checked against its type: the keys, options and answer schemas the type allows.

The type's registration (:mod:`engine.definition.step_types`) says what it takes: its
params and options as JSON Schemas, its own checks, its kind. A human step's answer
schema must also be one a review form can show (plug-ins add checks through the
``signoff.schema_checks`` entry-point group) and its patterns ones RE2 runs in linear time.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from engine.definition import templates
from engine.definition.answer_schema import LINEAR_TIME, pattern_problems
from engine.definition.problem_report import ProblemReport, render
from engine.definition.step_types import StepKind, get_step_type, registered_step_types
from engine.definition.yaml_positions import YamlPath

_INDIVIDUAL = re.compile(r"^(?:[UW][A-Z0-9]+|[^@\s]+@[^@\s]+)$")  # a user id or an e-mail


def check_type(report: ProblemReport, type_: str, data: dict[str, Any], path: YamlPath,
               options: Any, params: dict[str, Any]) -> None:
    """Report what the step at ``path`` has that its type ``type_`` does not allow."""
    for key, owners in _flow_keys().items():
        if key in data and type_ not in owners:
            report.problem((*path, key), f"key {key!r} {report.context(path)} only applies to "
                                         f"steps of type {' or '.join(owners)}, not {type_!r}",
                           key=True)
    spec = get_step_type(type_)
    if spec is None:
        known = sorted(registered_step_types())
        close = difflib.get_close_matches(type_, known, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        report.problem((*path, "type"),
                       f"unknown step type {type_!r} {report.context(path)}{hint}; known types: "
                       f"{', '.join(known)}. Custom step types register through the "
                       "`signoff.steps` entry point group")
        return
    if spec.params_schema is not None:
        for error in Draft202012Validator(spec.params_schema).iter_errors(params):
            report.schema_problem(error, path)
    if spec.check_shape is not None:
        for where, message, at_key in spec.check_shape(data):
            report.problem((*path, *where), f"{render((*path, *where))}: {message}",
                           key=at_key)
    if spec.kind is StepKind.FLOW or not isinstance(options, dict):
        return
    for error in Draft202012Validator(spec.options_schema).iter_errors(options):
        report.schema_problem(error, (*path, "with"))
    if spec.check is not None:
        for where, message in spec.check(options, params):
            report.problem((*path, *where), f"{render((*path, *where))}: {message}")
    if spec.kind is StepKind.HUMAN:
        _check_human(report, type_, options, (*path, "with"))


def _check_human(report: ProblemReport, type_: str, options: dict[str, Any],
                 path: YamlPath) -> None:
    schema = options.get("schema")
    if type_ == "waitForInput" and isinstance(schema, dict):
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            # "not valid under any of the given schemas" says little; its best branch says more
            detail = best_match(exc.context) if exc.context else exc
            report.problem((*path, "schema", *exc.absolute_path),
                           f"{render((*path, 'schema', *exc.absolute_path))} is not valid in a "
                           f"JSON Schema: {detail.message}")
        else:
            if schema.get("type") != "object":
                report.problem((*path, "schema"),
                               f"{render((*path, 'schema'))} must have `type: object`: the "
                               "reviewer's answer becomes the step's output, an object")
            check_patterns(report, schema, (*path, "schema"))
            for check in _schema_checks():
                for reason in check(schema):
                    report.problem((*path, "schema"),
                                   f"{render((*path, 'schema'))} cannot be shown as a "
                                   f"review form: {reason}")
    approvers, required = options.get("approvers"), options.get("approvals-required")
    if (isinstance(required, int) and isinstance(approvers, list) and approvers
            and all(isinstance(a, str) and _INDIVIDUAL.match(a) for a in approvers)
            and required > len(set(approvers))):
        report.problem((*path, "approvals-required"),
                       f"approvals-required is {required} but only {len(set(approvers))} "
                       "approver(s) are listed, so it can never be met; list more approvers, "
                       "add a user group (S…), or lower approvals-required")


def check_patterns(report: ProblemReport, schema: dict[str, Any], path: YamlPath) -> None:
    """Report the ``pattern``s of a JSON Schema at ``path`` that RE2 cannot run."""
    for where, pattern, why in pattern_problems(schema):
        at = (*path, *where)
        if not pattern:
            report.problem(at, f"{render(at[:-1])}: {why}", key=True)
        elif templates.has_template(pattern):
            continue  # known at run time, when a pattern RE2 refuses fails the answer
        elif where[-1] == "patternProperties":
            report.problem((*at, pattern), f"{render(at)} key {pattern!r} cannot be used: "
                           f"{why}. {LINEAR_TIME}", key=True)
        else:
            report.problem(at, f"{render(at)} {pattern!r} cannot be used: {why}. "
                           f"{LINEAR_TIME}")


def mark_markdown(type_: object, options: Any) -> Any:
    """A human step's ``message`` as a MarkdownTemplate: values it interpolates are escaped."""
    if not isinstance(type_, str) or not isinstance(options, dict):
        return options
    spec = get_step_type(type_)
    message = options.get("message")
    if spec is None or spec.kind is not StepKind.HUMAN:
        return options
    marked = {"message": templates.MarkdownTemplate(message)} if isinstance(message, str) else {}
    return {**options, **marked, **_channel_messages(options)}


def _channel_messages(options: dict[str, Any]) -> dict[str, Any]:
    """``with.channels`` with each channel's ``message`` a ChannelTemplate (escaped values,
    Elastic's ``context.hitl`` links filled in when the notification is posted)."""
    channels = options.get("channels")
    if not isinstance(channels, dict):
        return {}
    return {"channels": {
        key: {**channel, "message": templates.ChannelTemplate(channel["message"])}
        if isinstance(channel, dict) and isinstance(channel.get("message"), str) else channel
        for key, channel in channels.items()}}


@functools.cache
def _schema_checks() -> tuple[Callable[[Mapping[str, Any]], list[str]], ...]:
    """Checks plug-ins add for answer schemas (the bot: what a Slack modal can express),
    from the ``signoff.schema_checks`` entry-point group."""
    return tuple(ep.load() for ep in entry_points(group="signoff.schema_checks"))


def _flow_keys() -> dict[str, tuple[str, ...]]:
    """Each key that only some flow step types read, with those types in registry order."""
    owners: dict[str, tuple[str, ...]] = {}
    for name, spec in registered_step_types().items():
        for key in spec.step_keys:
            owners[key] = (*owners.get(key, ()), name)
    return owners


def check_human_options(report: ProblemReport, type_: str, options: Mapping[str, Any],
                        path: YamlPath) -> None:
    """Report what ``signoff validate`` finds wrong in a human step's options written at
    ``path`` outside a workflow (a policy rule's review options): the type's option
    schema and the human step's own checks."""
    spec = get_step_type(type_)
    if spec is None or spec.kind is not StepKind.HUMAN:
        raise ValueError(f"{type_!r} is not a human step type")
    for error in Draft202012Validator(spec.options_schema).iter_errors(dict(options)):
        report.schema_problem(error, path)
    _check_human(report, type_, dict(options), path)
