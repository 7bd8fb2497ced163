"""Check one workflow document and freeze it: the passes behind :mod:`engine.definition.loader`.

The document is read with positions (:mod:`engine.definition.yaml_positions`), validated against
the JSON Schema shipped as ``engine/definition/workflow_schema.json``, then checked for what a
schema cannot say (step types and their options, unique names, references between
steps, conditions, templates, durations) while it is frozen into
:mod:`engine.definition.model` records. Every problem is kept, each at its line and column.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from importlib.metadata import entry_points
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import SchemaError, best_match

from engine.definition import templates
from engine.definition.answer_schema import LINEAR_TIME, pattern_problems
from engine.definition.conditions import (
    Condition,
    Constant,
    evaluate_template_condition,
    is_template_condition,
    parse_condition,
)
from engine.definition.durations import DURATION_PATTERN, parse_duration
from engine.definition.model import (
    FailurePolicy,
    IterationLimit,
    Location,
    RetryPolicy,
    Settings,
    Step,
    SwitchCase,
    Trigger,
    Workflow,
)
from engine.definition.step_types import StepKind, get_step_type, registered_step_types
from engine.definition.triggers import cron_problem, rrule_problem, timezone_problem
from engine.definition.yaml_positions import (
    Position,
    PositionedDocument,
    YamlPath,
    YamlSyntaxError,
    load_with_positions,
)
from engine.errors import ConditionError, DurationError, Problem, TemplateError

DEFAULT_RETRY_DELAY = timedelta(seconds=1)

_INDIVIDUAL = re.compile(r"^(?:[UW][A-Z0-9]+|[^@\s]+@[^@\s]+)$")  # a user id or an e-mail
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_BYTE_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)\s*$", re.IGNORECASE)
_BYTES = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
_JSON_TYPES = {"string": "a string", "object": "a mapping", "array": "a list", "null": "null",
               "integer": "an integer", "number": "a number", "boolean": "true or false"}


@dataclass(frozen=True)
class TemplateCondition(Condition):
    """An ``if``/``condition`` written as one ``${{ ... }}`` template, evaluated as Elastic
    does (:func:`engine.definition.conditions.evaluate_template_condition`): a boolean as
    it is, a string read as KQL, undefined false; another value, a string that is not KQL
    or a filter failing on the value raises, and the runner fails the step.
    """

    def __post_init__(self) -> None:
        templates.compile_template(self.text)
        object.__setattr__(self, "query", Constant(True))

    def evaluate(self, scope: Mapping[str, Any], *, now: datetime | None = None) -> bool:
        return evaluate_template_condition(self.text, scope, now=now)

    @property
    def references(self) -> frozenset[str]:
        return frozenset(templates.references(self.text))


@functools.cache
def _workflow_validator() -> Draft202012Validator:
    schema = resources.files("engine.definition").joinpath("workflow_schema.json").read_text("utf-8")
    return Draft202012Validator(json.loads(schema))


@dataclass(frozen=True)
class _Scope:
    """Who is asking, and whose output it may read."""

    name: str
    visible: frozenset[str]  # steps that ran before this one
    ancestors: tuple[str, ...]  # enclosing steps, outermost first


class Analysis:
    """One workflow document, checked and frozen by :meth:`run`."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.problems: list[Problem] = []
        self.doc = PositionedDocument(data=None, text=text)
        self.step_paths: dict[YamlPath, dict[str, Any]] = {}
        self.step_names: dict[str, YamlPath] = {}  # first occurrence of each name
        self.declared_name: str | None = None
        self.name_position: Position | None = None

    def sorted_problems(self) -> list[Problem]:
        """Every problem found, once each, in file order."""
        return sorted(set(self.problems), key=lambda p: (p.line, p.column, p.message))

    def run(self) -> Workflow | None:
        """Check the document: the frozen workflow, or None when there are problems."""
        try:
            self.doc = load_with_positions(self.text)
        except YamlSyntaxError as exc:
            self.problems.append(Problem(self.source, exc.line, exc.column,
                                         f"YAML syntax error: {exc}"))
            return None
        data = self.doc.data
        if data is None:
            self._problem((), "the file is empty; a workflow needs at least `name` and `steps`")
            return None
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            self.declared_name = data["name"]
            self.name_position = self.doc.locate(("name",))
        self._collect_steps(data)
        for duplicate in self.doc.duplicates:
            key = duplicate.path[-1]
            self.problems.append(Problem(
                self.source, duplicate.position.line, duplicate.position.column,
                f"duplicate key {key!r} {self._context(duplicate.path[:-1])} (first on line "
                f"{duplicate.first.line}); YAML keeps only the last one, so remove one of them"))
        for error in _workflow_validator().iter_errors(data):
            self._schema_problem(error, ())
        if not isinstance(data, dict):
            return None
        workflow = self._freeze(data)
        return None if self.problems else workflow

    # -- problems -------------------------------------------------------------------

    def _problem(self, path: YamlPath, message: str, *, key: bool = False) -> None:
        where = self.doc.locate_key(path) if key else self.doc.locate(path)
        self.problems.append(Problem(self.source, where.line, where.column, message))

    def _problem_in_scalar(self, path: YamlPath, offset: int, message: str) -> None:
        line, column = self.doc.locate_in_scalar(path, max(offset, 0))
        self.problems.append(Problem(self.source, line, column, message))

    def _step_at(self, path: YamlPath) -> tuple[YamlPath, dict[str, Any]] | None:
        for end in range(len(path), 0, -1):
            step = self.step_paths.get(path[:end])
            if step is not None:
                return path[:end], step
        return None

    def _context(self, path: YamlPath) -> str:
        if path in self.step_paths:
            return f"in step {_step_label(path, self.step_paths[path])}"
        if path and path[-1] == "with" and path[:-1] in self.step_paths:
            step = self.step_paths[path[:-1]]
            return f"in `with` of step {_step_label(path[:-1], step)} (type {step.get('type')!r})"
        return f"in {_render(path)}" if path else "at the top level"

    def _schema_problem(self, error: ValidationError, base: YamlPath) -> None:
        path = (*base, *error.absolute_path)
        where, value, kind = _render(path) or "the workflow", error.instance, error.validator
        expected_value: Any = error.validator_value  # the stubs allow "unset"; errors always set it
        schema: Any = error.schema
        if base and isinstance(value, str) and templates.has_template(value):
            return  # a templated option is only known at run time
        owner = self._step_at(path)
        owner_name = owner[1].get("name") if owner else None
        in_step = f" (step {owner_name!r})" if isinstance(owner_name, str) else ""
        if kind == "required" and isinstance(value, dict):
            missing = [p for p in expected_value
                       if p not in value and repr(p) in error.message]
            for prop in missing[:1]:
                self._problem(path, f"{_render((*path, prop))} is required{in_step}")
        elif kind == "additionalProperties" and isinstance(value, dict):
            if path in self.step_paths and _custom_type(value.get("type")):
                return  # a plug-in's step: keys Signoff does not read are that type's business
            allowed = [*schema.get("properties", {}), *self._param_keys(path)]
            patterns = list(schema.get("patternProperties", {}))
            for key in value:
                if key in allowed or any(re.search(p, str(key)) for p in patterns):
                    continue
                hint = _suggest(str(key), allowed) or f"; allowed keys: {', '.join(allowed)}"
                self._problem((*path, key), f"unknown key {key!r} {self._context(path)}{hint}",
                              key=True)
        elif kind == "type":
            expected = expected_value
            names = [_JSON_TYPES.get(str(t), str(t))
                     for t in (expected if isinstance(expected, list) else [expected])]
            self._problem(path,
                          f"{where} must be {' or '.join(names)}, not {_kind(value)}{in_step}")
        elif kind == "enum":
            choices = ", ".join(repr(c) for c in expected_value)
            hint = _suggest(str(value), [str(c) for c in expected_value])
            self._problem(path, f"{where} must be one of {choices}, not {value!r}{hint}{in_step}")
        elif kind in ("oneOf", "anyOf") and error.context:
            # Say what is wrong in the branch of the value's own type (a mapping where a
            # number or a mapping may go is judged as a mapping).
            fitting = [e for e in error.context if e.validator != "type" or e.relative_path]
            self._schema_problem(best_match(fitting or error.context), base)
        elif kind == "pattern" and path[-1:] == ("max-step-size",):
            self._problem(path, f"{where}: {value!r} is not a byte size; write a number and a "
                                f"unit: b, kb, mb or gb (e.g. 512kb, 10mb){in_step}")
        elif kind == "pattern" and error.validator_value == DURATION_PATTERN:
            self._problem(path, f"{where}: {_duration_message(value)}{in_step}")
        elif kind == "pattern" and path[-1:] == ("name",):
            self._problem(path, f"{where} {value!r} is not a valid name: start with a letter or "
                                "'_' and use only letters, digits, '_' and '-'")
        elif kind in ("minItems", "minLength", "minProperties") and error.validator_value == 1:
            self._problem(path, f"{where} must not be empty{in_step}")
        elif kind == "minimum":
            self._problem(path, f"{where} must be at least {error.validator_value}, "
                                f"not {value!r}{in_step}")
        else:
            self._problem(path, f"{where}: {error.message}{in_step}")

    def _param_keys(self, path: YamlPath) -> list[str]:
        """The top-level keys the type of the step at ``path`` declares (none if not a step)."""
        step = self.step_paths.get(path)
        spec = get_step_type(step["type"]) if step and isinstance(step.get("type"), str) else None
        return sorted(spec.param_keys) if spec else []

    # -- steps, names and references -------------------------------------------------

    def _collect_steps(self, data: Any) -> None:
        found: list[tuple[YamlPath, dict[str, Any]]] = []

        def walk(items: Any, path: YamlPath) -> None:
            if not isinstance(items, list):
                return
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    found.append(((*path, i), item))
                    for nested_path, nested in _nested_step_lists(item, (*path, i)):
                        walk(nested, nested_path)

        if isinstance(data, dict):
            walk(data.get("steps"), ("steps",))
            walk(_get(data, "settings", "on-failure", "fallback"),
                 ("settings", "on-failure", "fallback"))
        self.step_paths = dict(found)
        for path, step in sorted(found, key=lambda f: _line_col(self.doc, f[0])):
            name = step.get("name")
            if not isinstance(name, str):
                continue
            first = self.step_names.setdefault(name, path)
            if first != path:
                self._problem((*path, "name"),
                              f"step name {name!r} is already used by the step on line "
                              f"{self.doc.locate(first).line}; names must be unique in the whole "
                              "workflow, nested steps included, since outputs are read as "
                              f"steps.{name}")

    def _check_references(self, found: Iterable[str], path: YamlPath, scope: _Scope,
                          text: str = "") -> None:
        targets = sorted({ref.split(".")[1] for ref in found
                          if ref.startswith("steps.") and len(ref.split(".")) > 1})
        for target in targets:
            if target in scope.visible:
                continue
            me = repr(scope.name)
            if target == scope.name:
                message = f"step {me} reads its own output (steps.{target})"
            elif target not in self.step_names:
                hint = _suggest(target, list(self.step_names))
                message = f"step {me} reads steps.{target}, but no step is named {target!r}{hint}"
                self._problem_in_scalar(path, text.find(f"steps.{target}"), message)
                continue
            elif target in scope.ancestors:
                message = (f"step {me} reads steps.{target}, which contains it and has not "
                           "finished when it runs")
            else:
                line = self.doc.locate(self.step_names[target]).line
                message = (f"step {me} reads steps.{target} (line {line}), which does not run "
                           "before it")
            self._problem_in_scalar(path, text.find(f"steps.{target}"),
                                    message + "; a step can only read the output of steps that "
                                    "ran before it: earlier steps in its list or before its "
                                    "enclosing if/foreach/switch")

    # -- freezing -------------------------------------------------------------------

    def _freeze(self, data: dict[str, Any]) -> Workflow | None:
        steps = self._steps(data.get("steps"), ("steps",), frozenset(), ())
        settings = Settings()
        raw_settings = data.get("settings")
        if isinstance(raw_settings, dict):
            everything = frozenset(self.step_names)  # a workflow fallback may follow any step
            timezone = raw_settings.get("timezone")
            if isinstance(timezone, str) and (problem := timezone_problem(timezone)):
                self._problem(("settings", "timezone"), f"settings.timezone: {problem}")
            settings = Settings(
                timeout=self._duration(raw_settings, "timeout", ("settings",)),
                on_failure=self._failure_policy(raw_settings.get("on-failure"),
                                                ("settings", "on-failure"),
                                                _Scope("", everything, ())),
                timezone=timezone if isinstance(timezone, str) else None,
                max_step_size=self._byte_size(raw_settings, "max-step-size", ("settings",)),
                concurrency=dict(raw_settings.get("concurrency") or {}),
                liquid=dict(raw_settings.get("liquid") or {}))
        triggers = tuple(self._trigger(t, ("triggers", i), settings.timezone or "UTC")
                         for i, t in enumerate(data.get("triggers") or []) if isinstance(t, dict))
        inputs, inputs_schema = self._inputs(data)
        if self.problems:
            return None
        version = data.get("version")
        return Workflow(
            name=data["name"], steps=steps, source=self.source, text=self.text,
            digest=hashlib.sha256(self.text.encode("utf-8")).hexdigest(),
            description=data.get("description") or "", enabled=data.get("enabled", True),
            triggers=triggers, settings=settings, consts=dict(data.get("consts") or {}),
            inputs=inputs, inputs_schema=inputs_schema,
            tags=tuple(data.get("tags") or ()),
            version=None if version is None else str(version))

    def _inputs(self, data: dict[str, Any]) -> tuple[tuple[dict[str, Any], ...],
                                                     dict[str, Any] | None]:
        """The declared inputs: the top-level list (Elastic 9.3/9.4) or a manual trigger's
        ``inputs`` (9.5: a JSON Schema, or the legacy list), from one place only."""
        declared: list[tuple[YamlPath, Any]] = []
        if "inputs" in data:
            declared.append((("inputs",), data["inputs"]))
        for i, trigger in enumerate(data.get("triggers") or []):
            if isinstance(trigger, dict) and trigger.get("type") == "manual" and "inputs" in trigger:
                declared.append((("triggers", i, "inputs"), trigger["inputs"]))
        if not declared:
            return (), None
        declared.sort(key=lambda found: _line_col(self.doc, found[0]))
        for path, _ in declared[1:]:
            first = self.doc.locate_key(declared[0][0]).line
            self._problem(path, f"{_render(path)}: inputs are already declared on line {first}; "
                                "declare them in one place (under the manual trigger, or the "
                                "top-level `inputs` of Elastic 9.3/9.4)", key=True)
        path, given = declared[0]
        if isinstance(given, list):
            return tuple(dict(item) for item in given if isinstance(item, dict)), None
        if not isinstance(given, dict):
            return (), None
        self._check_inputs_schema(given, path)
        return (), dict(given)

    def _check_inputs_schema(self, schema: dict[str, Any], path: YamlPath) -> None:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            detail = best_match(exc.context) if exc.context else exc
            self._problem((*path, *exc.absolute_path),
                          f"{_render((*path, *exc.absolute_path))} is not valid in a JSON Schema: "
                          f"{detail.message}")
            return
        if schema.get("type", "object") != "object":
            self._problem((*path, "type"), f"{_render(path)} must have `type: object`: a run's "
                                           "inputs are an object, one property per input")
        properties = schema.get("properties") or {}
        for j, name in enumerate(schema.get("required") or []):
            if name not in properties:
                hint = _suggest(str(name), list(properties))
                self._problem((*path, "required", j),
                              f"{_render(path)}.required names {name!r}, which is not one of its "
                              f"properties{hint}")
        self._check_patterns(schema, path)

    def _steps(self, items: Any, path: YamlPath, visible: frozenset[str],
               ancestors: tuple[str, ...]) -> tuple[Step, ...]:
        frozen: list[Step] = []
        if not isinstance(items, list):
            return ()
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            step = self._step(item, (*path, i), visible, ancestors)
            if step is not None:
                frozen.append(step)
            visible = visible | _names_within(item)  # nested steps of earlier siblings may have run
        return tuple(frozen)

    def _step(self, data: dict[str, Any], path: YamlPath, visible: frozenset[str],
              ancestors: tuple[str, ...]) -> Step | None:
        name, type_ = data.get("name"), data.get("type")
        scope = _Scope(name if isinstance(name, str) else _render(path), visible, ancestors)
        options = _mark_markdown(type_, data.get("with", {}))
        params = {key: data[key] for key in self._param_keys(path) if key in data}
        if isinstance(type_, str):
            self._check_type(type_, data, path, options, params)
        self._check_templates(options, (*path, "with"), scope)
        self._check_templates(params, path, scope)
        if_ = self._condition(data, "if", path, scope)
        condition = self._condition(data, "condition", path, scope)
        foreach = self._foreach(data, path, scope)
        expression = self._expression(data, "expression", path, scope)
        on_failure = self._failure_policy(
            data.get("on-failure"), (*path, "on-failure"),
            _Scope(scope.name, visible | _names_within(data), ancestors))
        inner = (*ancestors, scope.name)
        cases = tuple(
            SwitchCase(case.get("match"),
                       self._steps(case.get("steps"), (*path, "cases", j, "steps"), visible, inner))
            for j, case in enumerate(data.get("cases") or []) if isinstance(case, dict))
        pos = self.doc.locate(path)
        return Step(
            name=scope.name, type=str(type_), location=Location(self.source, pos.line, pos.column),
            with_=options if isinstance(options, dict) else {}, params=params, if_=if_,
            connector_id=data.get("connector-id"),
            timeout=self._duration(data, "timeout", path), on_failure=on_failure,
            condition=condition,
            steps=self._steps(data.get("steps"), (*path, "steps"), visible, inner),
            else_=self._steps(data.get("else"), (*path, "else"), visible, inner),
            foreach=foreach, expression=expression, cases=cases,
            default=self._steps(data.get("default"), (*path, "default"), visible, inner),
            max_iterations=_iteration_limit(data.get("max-iterations")),
            iteration_timeout=self._duration(data, "iteration-timeout", path),
            iteration_on_failure=self._failure_policy(
                data.get("iteration-on-failure"), (*path, "iteration-on-failure"),
                _Scope(scope.name, visible | _names_within(data), inner)),
            max_step_size=self._byte_size(data, "max-step-size", path))

    def _foreach(self, data: dict[str, Any], path: YamlPath,
                 scope: _Scope) -> str | tuple[Any, ...] | None:
        """A loop's items: a list written in YAML or as a JSON string, else an expression."""
        given = data.get("foreach")
        if isinstance(given, list):
            self._check_templates(given, (*path, "foreach"), scope)
            return tuple(given)
        if isinstance(given, str) and given.lstrip().startswith("["):
            try:
                items = json.loads(given)
            except ValueError:
                items = None
            if isinstance(items, list):
                return tuple(items)
        return self._expression(data, "foreach", path, scope)

    def _byte_size(self, data: dict[str, Any], key: str, path: YamlPath) -> int | None:
        match = _BYTE_SIZE.match(data[key]) if isinstance(data.get(key), str) else None
        if match is None:
            return None  # absent, or the workflow schema reports it
        return int(float(match.group(1)) * _BYTES[match.group(2).lower()])

    def _check_type(self, type_: str, data: dict[str, Any], path: YamlPath, options: Any,
                    params: dict[str, Any]) -> None:
        for key, owners in _flow_keys().items():
            if key in data and type_ not in owners:
                self._problem((*path, key), f"key {key!r} {self._context(path)} only applies to "
                                            f"steps of type {' or '.join(owners)}, not {type_!r}",
                              key=True)
        spec = get_step_type(type_)
        if spec is None:
            known = sorted(registered_step_types())
            close = difflib.get_close_matches(type_, known, n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            self._problem((*path, "type"),
                          f"unknown step type {type_!r} {self._context(path)}{hint}; known types: "
                          f"{', '.join(known)}. Custom step types register through the "
                          "`signoff.steps` entry point group")
            return
        if spec.params_schema is not None:
            for error in Draft202012Validator(spec.params_schema).iter_errors(params):
                self._schema_problem(error, path)
        if spec.kind is StepKind.FLOW or not isinstance(options, dict):
            return
        for error in Draft202012Validator(spec.options_schema).iter_errors(options):
            self._schema_problem(error, (*path, "with"))
        if spec.check is not None:
            for where, message in spec.check(options, params):
                self._problem((*path, *where), f"{_render((*path, *where))}: {message}")
        if spec.kind is StepKind.HUMAN:
            self._check_human(type_, options, (*path, "with"))

    def _check_human(self, type_: str, options: dict[str, Any], path: YamlPath) -> None:
        schema = options.get("schema")
        if type_ == "waitForInput" and isinstance(schema, dict):
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                # "not valid under any of the given schemas" says little; its best branch says more
                detail = best_match(exc.context) if exc.context else exc
                self._problem((*path, "schema", *exc.absolute_path),
                              f"{_render((*path, 'schema', *exc.absolute_path))} is not valid in a "
                              f"JSON Schema: {detail.message}")
            else:
                if schema.get("type") != "object":
                    self._problem((*path, "schema"),
                                  f"{_render((*path, 'schema'))} must have `type: object`: the "
                                  "reviewer's answer becomes the step's output, an object")
                self._check_patterns(schema, (*path, "schema"))
                for check in _schema_checks():
                    for reason in check(schema):
                        self._problem((*path, "schema"),
                                      f"{_render((*path, 'schema'))} cannot be shown as a "
                                      f"review form: {reason}")
        approvers, required = options.get("approvers"), options.get("approvals-required")
        if (isinstance(required, int) and isinstance(approvers, list) and approvers
                and all(isinstance(a, str) and _INDIVIDUAL.match(a) for a in approvers)
                and required > len(set(approvers))):
            self._problem((*path, "approvals-required"),
                          f"approvals-required is {required} but only {len(set(approvers))} "
                          "approver(s) are listed, so it can never be met; list more approvers, "
                          "add a user group (S…), or lower approvals-required")

    def _check_patterns(self, schema: dict[str, Any], path: YamlPath) -> None:
        for where, pattern, why in pattern_problems(schema):
            at = (*path, *where)
            if not pattern:
                self._problem(at, f"{_render(at[:-1])}: {why}", key=True)
            elif templates.has_template(pattern):
                continue  # known at run time, when a pattern RE2 refuses fails the answer
            elif where[-1] == "patternProperties":
                self._problem((*at, pattern), f"{_render(at)} key {pattern!r} cannot be used: "
                              f"{why}. {LINEAR_TIME}", key=True)
            else:
                self._problem(at, f"{_render(at)} {pattern!r} cannot be used: {why}. "
                              f"{LINEAR_TIME}")

    def _check_templates(self, value: Any, path: YamlPath, scope: _Scope) -> None:
        for leaf, text in _strings(value, path):
            if not templates.has_template(text):
                continue
            try:
                templates.compile_template(text)
            except TemplateError as exc:
                self._problem_in_scalar(leaf, exc.column - 1,
                                        f"template error in {_render(leaf)}: {exc}")
                continue
            self._check_references(templates.references(text), leaf, scope, text)

    def _condition(self, data: dict[str, Any], key: str, path: YamlPath,
                   scope: _Scope) -> Condition | None:
        text = data.get(key)
        if key not in data or not isinstance(text, str | bool):
            return None
        path = (*path, key)
        try:
            if isinstance(text, str) and is_template_condition(text):
                condition: Condition = TemplateCondition(text)
            else:
                condition = parse_condition(text)
        except (ConditionError, TemplateError) as exc:
            self._problem_in_scalar(path, exc.column - 1,
                                    f"invalid condition in {_render(path)}: {exc}")
            return None
        self._check_references(condition.references, path, scope,
                               text if isinstance(text, str) else "")
        return condition

    def _expression(self, data: dict[str, Any], key: str, path: YamlPath,
                    scope: _Scope) -> str | None:
        text = data.get(key)
        if not isinstance(text, str):
            return None
        path = (*path, key)
        # A bare expression is evaluated as if written {{ expression }}.
        source, shift = (text, 0) if templates.has_template(text) else (f"{{{{ {text} }}}}", 3)
        try:
            templates.compile_template(source)
        except TemplateError as exc:
            self._problem_in_scalar(path, exc.column - 1 - shift,
                                    f"invalid expression in {_render(path)}: {exc}")
            return text
        self._check_references(templates.references(source), path, scope, text)
        return text

    def _duration(self, data: dict[str, Any], key: str, path: YamlPath) -> timedelta | None:
        value = data.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
            return None
        try:
            return parse_duration(value)
        except DurationError as exc:
            self._problem((*path, key), f"{_render((*path, key))}: {exc}")
            return None

    def _failure_policy(self, value: Any, path: YamlPath, scope: _Scope) -> FailurePolicy | None:
        if not isinstance(value, dict):
            return None
        retry, raw = None, value.get("retry")
        if isinstance(raw, dict) and isinstance(raw.get("max-attempts"), int):
            delay = self._duration(raw, "delay", (*path, "retry"))
            multiplier = raw.get("multiplier", 2)
            retry = RetryPolicy(raw["max-attempts"],
                                DEFAULT_RETRY_DELAY if delay is None else delay,
                                str(raw.get("strategy", "fixed")),
                                multiplier=float(multiplier)
                                if isinstance(multiplier, int | float) else 2.0,
                                max_delay=self._duration(raw, "max-delay", (*path, "retry")),
                                jitter=raw.get("jitter") is True,
                                condition=self._condition(raw, "condition", (*path, "retry"),
                                                          scope))
        fallback = self._steps(value.get("fallback"), (*path, "fallback"), scope.visible,
                               scope.ancestors)
        continue_, continue_if = value.get("continue"), None
        if isinstance(continue_, str) and continue_.strip().lower() in ("true", "false"):
            continue_ = continue_.strip().lower() == "true"
        elif isinstance(continue_, str):
            continue_if = self._condition(value, "continue", path, scope)
        return FailurePolicy(retry=retry, continue_=continue_ is True, continue_if=continue_if,
                             fallback=fallback)

    def _trigger(self, data: dict[str, Any], path: YamlPath, timezone: str) -> Trigger:
        options = data.get("with")
        if "inputs" in data and data.get("type") != "manual":
            self._problem((*path, "inputs"), f"key 'inputs' in {_render(path)} only applies to "
                                             f"manual triggers, not {data.get('type')!r}", key=True)
        if data.get("type") == "scheduled" and isinstance(options, dict):
            given = [key for key in ("every", "cron", "rrule") if key in options]
            if len(given) != 1:
                self._problem((*path, "with"),
                              f"{_render(path)}: a scheduled trigger needs exactly one of `every` "
                              "(e.g. 5m), `rrule` (e.g. {freq: DAILY, interval: 1, byhour: [9]}) "
                              "or `cron` (e.g. \"0 9 * * 1-5\")"
                              + ("" if not given else ", not both" if len(given) == 2
                                 else ", not all three"))
            self._duration(options, "every", (*path, "with"))
            cron = options.get("cron")
            problem = cron_problem(cron) if isinstance(cron, str) else None
            if problem:
                self._problem((*path, "with", "cron"),
                              f"{_render((*path, 'with', 'cron'))}: {problem}")
            zone = options.get("timezone")
            if isinstance(zone, str) and (problem := timezone_problem(zone)):
                self._problem((*path, "with", "timezone"),
                              f"{_render((*path, 'with', 'timezone'))}: {problem}")
            rule = options.get("rrule")
            found = rrule_problem(rule) if isinstance(rule, dict) else None
            if found:
                key, why = found
                at = (*path, "with", "rrule") + ((key,) if key != "rrule" else ())
                self._problem(at, f"{_render(at)}: {why}")
        return Trigger(type=str(data.get("type")),
                       with_=options if isinstance(options, dict) else {}, timezone=timezone)


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


def _nested_step_lists(step: dict[str, Any],
                       path: YamlPath) -> Iterator[tuple[YamlPath, list[Any]]]:
    for key in ("steps", "else", "default"):
        if isinstance(step.get(key), list):
            yield (*path, key), step[key]
    cases = step.get("cases")
    for j, case in enumerate(cases if isinstance(cases, list) else []):
        if isinstance(case, dict) and isinstance(case.get("steps"), list):
            yield (*path, "cases", j, "steps"), case["steps"]
    for policy in ("on-failure", "iteration-on-failure"):
        fallback = _get(step, policy, "fallback")
        if isinstance(fallback, list):
            yield (*path, policy, "fallback"), fallback


def _custom_type(type_: Any) -> bool:
    """Whether ``type_`` names a registered step type that is not one of Signoff's own."""
    spec = get_step_type(type_) if isinstance(type_, str) else None
    return spec is not None and not spec.built_in


def _iteration_limit(value: Any) -> IterationLimit | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return IterationLimit(value)
    if isinstance(value, dict) and isinstance(value.get("limit"), int):
        return IterationLimit(value["limit"], str(value.get("on-limit", "fail")))
    return None


def _names_within(step: dict[str, Any]) -> frozenset[str]:
    names = {step["name"]} if isinstance(step.get("name"), str) else set()
    for _, items in _nested_step_lists(step, ()):
        for item in items:
            if isinstance(item, dict):
                names |= _names_within(item)
    return frozenset(names)


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _mark_markdown(type_: object, options: Any) -> Any:
    """A human step's ``message`` as a MarkdownTemplate: values it interpolates are escaped."""
    if not isinstance(type_, str) or not isinstance(options, dict):
        return options
    spec = get_step_type(type_)
    message = options.get("message")
    if spec is None or spec.kind is not StepKind.HUMAN or not isinstance(message, str):
        return options
    return {**options, "message": templates.MarkdownTemplate(message)}


def _strings(value: Any, path: YamlPath) -> Iterator[tuple[YamlPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def _render(path: YamlPath) -> str:
    """``("steps", 2, "with", "url")`` as ``steps[2].with.url``."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{str(part)!r}]"
    return text


def _step_label(path: YamlPath, step: dict[str, Any]) -> str:
    name = step.get("name")
    return repr(name) if isinstance(name, str) else _render(path)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) <= 40 else "a string"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return "a mapping" if isinstance(value, dict) else "a list"
    return type(value).__name__


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _duration_message(value: Any) -> str:
    try:
        parse_duration(value)
    except DurationError as exc:
        return str(exc)
    return f"{value!r} is not a duration"


def _line_col(doc: PositionedDocument, path: YamlPath) -> tuple[int, int]:
    where = doc.locate(path)
    return where.line, where.column
